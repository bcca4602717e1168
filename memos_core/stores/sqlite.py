"""The embedded store: one SQLite file, safe for several threads and processes at once.

- WAL journal, a busy timeout, and ``BEGIN IMMEDIATE`` for every write batch, retried with
  backoff while another process holds the write lock; only a lock held past the timeout
  surfaces, as :class:`~memos_core.errors.StoreBusyError`.
- BM25 through FTS5. Text is pre-tokenised by :func:`memos_core.text.tokenize` (jieba for
  CJK), so Chinese queries match Chinese words.
- Vectors are float32 blobs in the ``items`` table. Exact cosine search runs with numpy over a
  per-cube matrix held in memory, kept current from the ``changes`` log, so writes made by
  other processes are seen by the next search. Cubes of 20,000 vectors or more (see
  :class:`AnnConfig`) also get an HNSW index (usearch) that proposes candidates, rescored
  exactly from the matrix; it changes with the matrix, is saved in ``<path>.ann/`` and is
  verified when loaded. Filters that let too little through are searched exactly.
- Durable tasks live in the ``tasks`` table (the :class:`~memos_core.ports.TaskQueue` side).

Example:
    >>> store = SqliteStore.from_path("./memos-data")
    >>> store.setup()
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from itertools import combinations
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from .. import filters as F
from ..embedders import text_hash
from ..errors import ConflictError, InvalidInputError, LeaseLostError, StoreBusyError, StoreError
from ..ports import (
    CompleteTask,
    DeleteItems,
    EnqueueTask,
    GetItems,
    GetRecords,
    ListItems,
    ListRecords,
    MemoryStore,
    Op,
    PutItems,
    PutRecords,
    ScoredId,
    TextSearch,
    TouchItems,
    VectorSearch,
)
from ..schema import MemoryItem, Task, TaskStatus, format_time, parse_time, utcnow
from ..text import tokenize
from ._ann import AnnConfig, AnnIndex, ann_file
from ._item_cache import ItemCache
from ._sqlite_schema import (
    FTS_DDL,
    ITEM_COLUMNS,
    ITEMS_DDL,
    MIGRATIONS,
    SCHEMA_VERSION,
    cube_token,
    item_to_row,
    row_to_item,
)
from ._vectors import CubeVectors

__all__ = ["AnnConfig", "SqliteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows of FTS5 matches a text search scores exactly (bm25() costs ~2.5 µs a row plus a
#: walk over every match of each word to count it); a query whose words match more is bounded.
TEXT_BUDGET = 4000
#: Common words of a query that its AND tiers are built from (the rarest of them).
_TIER_WORDS = 4
#: Below this many vectors an exact search sorts all scores (stable: ties keep row order).
_FULL_SORT_MAX = 50_000
#: Rows copied into a new HNSW index per hold of the vector lock.
_BUILD_CHUNK = 4096
#: Seconds before a failed index preparation is tried again.
_ANN_RETRY_S = 300.0

_DDL = (
    ITEMS_DDL
    + FTS_DDL
    + """;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cube_id TEXT NOT NULL,
    item_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    memory_ids TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    run_after TEXT NOT NULL,
    worker TEXT,
    lease_until TEXT
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks(status, run_after);
CREATE TABLE IF NOT EXISTS embed_cache (
    model_id TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model_id, text_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""
)

#: The item columns without the vector: loading items never needs it.
_ITEM_SELECT = ", ".join(ITEM_COLUMNS)

_UPSERT = (
    f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}, embedding) "
    f"VALUES ({', '.join('?' * (len(ITEM_COLUMNS) + 1))}) "
    "ON CONFLICT(id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}"
        for c in ITEM_COLUMNS
        if c not in ("id", "cube_id", "access_count", "last_accessed_at", "revision")
    )
    + ", revision = items.revision + 1"
    + ", access_count = MAX(items.access_count, excluded.access_count)"
    + ", last_accessed_at = COALESCE(MAX(items.last_accessed_at, excluded.last_accessed_at),"
    " items.last_accessed_at, excluded.last_accessed_at)"
    + ", embedding = COALESCE(excluded.embedding, items.embedding) RETURNING seq"
)


def _fts_text(item: MemoryItem) -> str:
    return " ".join(tokenize(item.search_text()))


def _query_terms(query: str) -> list[str]:
    """The words of a text query (stopwords dropped unless that leaves none), once each."""
    return list(dict.fromkeys(tokenize(query, drop_stopwords=True) or tokenize(query)))


def _phrase(term: str) -> str:
    """``term`` as an FTS5 string: query syntax in user text is never interpreted."""
    return '"' + term.replace('"', '""') + '"'


def _word(term: str) -> str:
    """An FTS5 query for ``term`` in the text column (never a cube's token)."""
    return "text : " + _phrase(term)


def _any_word(terms: Iterable[str]) -> str:
    return " OR ".join(map(_word, terms))


def _in_cubes(cube_ids: Iterable[str]) -> str:
    """An FTS5 query for the rows of these cubes (by their :func:`cube_token`)."""
    return "cube : (" + " OR ".join(_phrase(cube_token(c)) for c in sorted(set(cube_ids))) + ")"


#: FTS5's ``bm25()`` with the cube column's weight 0: its word still counts in a row's length
#: (one token more per row than the text has, for every row alike).
_BM25 = "bm25(items_fts, 1.0, 0.0)"


def _count_upto(conn: sqlite3.Connection, match: str, cap: int) -> tuple[int, int | None]:
    """How many rows ``match`` (an FTS5 query) finds, counted up to ``cap`` (cost bounded by
    ``cap``), and the oldest rowid among the newest ``cap`` of them."""
    sql = (
        "SELECT COUNT(*), MIN(r) FROM (SELECT rowid AS r FROM items_fts WHERE items_fts MATCH ? "
        "ORDER BY rowid DESC LIMIT ?)"
    )
    count, oldest = conn.execute(sql, (match, cap)).fetchone()
    return int(count), oldest


def _fts_span(conn: sqlite3.Connection) -> tuple[int, int]:
    """The FTS table's first and last rowid ((0, -1) when empty): ``last - first + 1`` rows,
    counting gaps left by erased rows."""
    first, last = conn.execute(  # two lookups at the ends (MIN and MAX together would scan)
        "SELECT (SELECT rowid FROM items_fts ORDER BY rowid LIMIT 1), "
        "(SELECT rowid FROM items_fts ORDER BY rowid DESC LIMIT 1)"
    ).fetchone()
    return (0, -1) if first is None else (int(first), int(last))


def _bounded_candidates(
    conn: sqlite3.Connection,
    terms: list[str],
    counted: dict[str, tuple[int, int | None]],
    *,
    want: int,
    span: tuple[int, int],
    scope: str | None,
) -> tuple[list[tuple[int, float]], bool]:
    """Ranked ``(rowid, score)`` text candidates in ``scope`` (an FTS5 query for the searched
    cubes' rows, :func:`_in_cubes`; None when every row of the table is in scope) for a query
    with common words, at a cost that does not grow with the table.

    FTS5's ``bm25()`` first walks every match of every word of the query (to count them for
    the IDF), then scores each match (~2.5 µs a row): at a million rows, four words that each
    appear in a tenth of them cost half a second. So the words are split, rarest first, into
    *rare* ones whose matches together fit :data:`TEXT_BUDGET` and *common* ones (the idea of
    Elasticsearch's ``common`` terms query):

    - every match of a rare word is a candidate, scored by ``bm25()`` over the rare words
      (exact), plus, for each common word it also holds, that word's IDF (the BM25 weight of
      one occurrence in a document of average length);
    - documents that hold only common words come from AND queries over the (up to four
      rarest) common words: all of them first, then fewer; newest first, ``want`` each (FTS5
      walks these from the newest row and stops at the limit). Each is scored by the IDFs of
      the words it was found with. Smaller word sets are tried only while ``want`` candidates
      do not already outscore anything they could find.

    So: exact BM25 for the rare words, BM25 with one occurrence per word and no length
    normalisation for the common ones, and an older document that holds only common words
    is left out once enough newer ones hold as many or more of them.

    Only the scope's rows are candidates: the AND queries include ``scope`` (so other cubes'
    newer rows never take the places of this cube's), and rare-word matches outside it are
    dropped (``bm25()`` itself runs unscoped: with the cube's word in its query it would walk
    every row of the cube to count that word).

    Also returns whether the candidates are *all* the scope's rows that hold a query word:
    every common word was asked for alone and none of those queries reached ``want`` rows.
    """
    first, last = span  # the table's rowids (``_fts_span``)
    rows = max(last - first + 1, 1)  # rows in the table, counting gaps left by erased rows
    df = {t: n for t, (n, _) in counted.items()}
    rare: list[str] = []
    common: list[str] = []
    used = 0
    for t in sorted(terms, key=lambda t: df[t]):
        if used + df[t] <= TEXT_BUDGET:
            rare.append(t)
            used += df[t]
        else:
            common.append(t)
    idf: dict[str, float] = {}
    for t in common:
        count, oldest = float(df[t]), counted[t][1]
        if df[t] > TEXT_BUDGET and oldest is not None:  # only bounded: estimate from how far
            count = df[t] * rows / max(last - oldest + 1, 1)  # back its newest matches reach
        idf[t] = max(math.log((rows - count + 0.5) / (count + 0.5)), 1e-6)  # FTS5's IDF
    scores: dict[int, float] = {}
    if rare:
        match = _any_word(rare)
        scored = conn.execute(f"SELECT rowid, -{_BM25} FROM items_fts WHERE items_fts MATCH ?", (match,))
        if scope is None:
            scores = dict(scored)
        else:
            mine = f"{scope} AND ({match})"
            kept = {
                r for (r,) in conn.execute("SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (mine,))
            }
            scores = {rowid: score for rowid, score in scored if rowid in kept}
        for t in common:
            for (rowid,) in conn.execute(
                "SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (f"{_word(t)} AND ({match})",)
            ):
                if rowid in scores:
                    scores[rowid] += idf[t]
    tiers = sorted(common, key=lambda t: -idf[t])[:_TIER_WORDS]
    complete = len(common) <= _TIER_WORDS
    for k in range(len(tiers), 0, -1):
        for words in sorted(combinations(tiers, k), key=lambda ws: -sum(idf[w] for w in ws)):
            value = sum(idf[w] for w in words)
            found = conn.execute(
                "SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
                (" AND ".join([*([scope] if scope else []), *map(_word, words)]), want),
            ).fetchall()
            for (rowid,) in found:
                if scores.get(rowid, -1.0) < value:
                    scores[rowid] = value
            if k == 1 and len(found) >= want:
                complete = False  # this word has older matches than the ones found
        if k == 1:
            break
        best_below = sum(sorted((idf[t] for t in tiers), reverse=True)[: k - 1])
        if sum(1 for v in scores.values() if v >= best_below) >= want:
            complete = False  # single words were not asked for
            break
    if not scores:
        return [], complete
    ids = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
    values = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    order = np.lexsort((-ids, -values))  # best first, then newest (at most TEXT_BUDGET + tiers × want)
    return list(zip(ids[order].tolist(), values[order].tolist(), strict=True)), complete


def _in(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


class SqliteStore(MemoryStore):
    """Embedded SQLite store (default backend). See the module docstring.

    Args:
        path: the database file.
        busy_timeout: seconds a write waits for other writers before ``StoreBusyError``.
        synchronous: SQLite ``synchronous`` pragma; ``FULL`` (default) survives power loss,
            ``NORMAL`` survives a crashed process only.
        ann: when and how cubes get an HNSW vector index (:class:`AnnConfig`; the default
            indexes cubes of 20,000 vectors or more, saved in ``<path>.ann/``).
        item_cache: how many decoded items to keep between reads (0: none); each is checked
            against its row's revision on every read, so another process's writes are seen.
    """

    supports_tasks = True
    supports_multiprocess = True
    supports_transactions = True
    #: Entries of the change log kept for other processes to catch up from.
    CHANGES_KEPT = 100_000

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 30.0,
        synchronous: str = "FULL",
        ann: AnnConfig | None = None,
        item_cache: int = 20_000,
    ) -> None:
        self.path = Path(path)
        self._items = ItemCache(item_cache)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._vec_lock = threading.RLock()
        self._cubes: dict[str, CubeVectors] = {}
        self._ann = ann or AnnConfig()
        self._ann_dir = self.path.with_name(self.path.name + ".ann")
        self._builders: list[threading.Thread] = []
        self._closing = threading.Event()

    @classmethod
    def from_path(cls, folder: str | Path, **kwargs: Any) -> SqliteStore:
        """The store of a data folder (``<folder>/memos.db``), creating the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / "memos.db", **kwargs)

    # ------------------------------------------------------------------ connections

    def _conn(self, *, relaxed: bool = False) -> sqlite3.Connection:
        """This thread's connection. ``relaxed``: a second one whose commits are not synced to
        disk (``synchronous=NORMAL``; in WAL mode still atomic and consistent, and synced by the
        next full commit or checkpoint), for access statistics only: a search then does not
        wait for an fsync, and a power cut may forget its last reads, never a memory."""
        attr = "relaxed_conn" if relaxed else "conn"
        conn: sqlite3.Connection | None = getattr(self._local, attr, None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
                )
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                synchronous = self._synchronous
                if relaxed and synchronous.upper() in ("FULL", "EXTRA", "2", "3"):
                    synchronous = "NORMAL"
                conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
                conn.execute("PRAGMA secure_delete=ON")  # erased text does not linger in free pages
                conn.create_function("memos_cube_token", 1, cube_token, deterministic=True)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            setattr(self._local, attr, conn)
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception(_is_busy),
            wait=wait_random_exponential(multiplier=0.01, max=0.5),
            stop=stop_after_delay(self._busy_timeout),
            reraise=True,
        )

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool, relaxed: bool = False) -> T:
        """Run ``fn`` in one transaction; retry while the database is locked. ``relaxed``: on
        the connection that does not sync its commits (see :meth:`_conn`)."""
        conn = self._conn(relaxed=relaxed)
        try:
            for attempt in self._retrying():
                with attempt:
                    # A row read inside a write may be this transaction's own, not yet
                    # committed version: the item cache takes rows from reads only.
                    self._local.writing = write
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    try:
                        result = fn(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            with contextlib.suppress(sqlite3.Error):
                                conn.execute("ROLLBACK")
                        raise
                    return result
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                raise StoreBusyError(f"store stayed locked for {self._busy_timeout}s: {exc}") from exc
            raise StoreError(f"sqlite error: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite error: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def setup(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row["value"]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row['value']}, newer than this code's "
                    f"{SCHEMA_VERSION}: upgrade memos-suite"
                )
            elif int(row["value"]) < SCHEMA_VERSION:  # older file: add what came since, in order
                log.info("%s: upgrading schema %s to %s", self.path, row["value"], SCHEMA_VERSION)
                for version in range(int(row["value"]) + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS.get(version, []):
                        conn.execute(statement)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            have = {r["name"] for r in conn.execute("PRAGMA table_info(items)")}
            if missing := [c for c in ITEM_COLUMNS if c not in have]:
                raise StoreError(
                    f"{self.path} was made by a pre-release build (items lack {', '.join(missing)}); "
                    "start a new data folder"
                )

        self._run(create, write=True)

    def close(self) -> None:
        """Stop index builds, save indexes that changed since they were saved, close."""
        self._closing.set()
        with self._conns_lock:
            builders, self._builders = self._builders, []
        for thread in builders:
            thread.join(timeout=60)
        if self._ann.persist:
            with self._vec_lock:
                for cube_id, cube in self._cubes.items():
                    if cube.ann is not None and cube.ann.dirty:
                        cube.ann.position = cube.seen
                        self._save_ann(cube.ann, cube_id)
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
        self._items.clear()
        self._closing.clear()

    # ------------------------------------------------------------------ batch

    def batch(self, ops: Sequence[Op]) -> list[Any]:
        write = any(
            isinstance(op, (PutItems, DeleteItems, TouchItems, EnqueueTask, CompleteTask, PutRecords))
            for op in ops
        )
        needs_vectors = any(isinstance(op, VectorSearch) for op in ops)
        if needs_vectors and write:
            # The in-memory vector view must only ever hold committed state.
            raise InvalidInputError(
                "a VectorSearch cannot share a batch with writes; send it in its own batch"
            )
        if needs_vectors:
            self._catch_up()

        def apply(conn: sqlite3.Connection) -> list[Any]:
            results = [self._apply(conn, op) for op in ops]
            if write:
                self._prune_changes(conn)
            return results

        # Access statistics alone (every search sends them) need not wait for the disk.
        relaxed = bool(ops) and all(isinstance(op, TouchItems) for op in ops)
        results = self._run(apply, write=write, relaxed=relaxed)
        if write:
            # The write is committed: refreshing this process's vector view must not turn it
            # into a reported failure. On trouble, drop the view; the next search reloads it.
            try:
                self._catch_up()
            except Exception:
                log.exception("vector index catch-up failed; reloading on next search")
                with self._vec_lock:
                    self._cubes.clear()
        return results

    def _apply(self, conn: sqlite3.Connection, op: Op) -> Any:
        if isinstance(op, PutItems):
            return self._put(conn, op)
        if isinstance(op, GetItems):
            return self._get(conn, op.ids, cached=op.cached)
        if isinstance(op, DeleteItems):
            return self._delete(conn, op)
        if isinstance(op, ListItems):
            return self._list(conn, op)
        if isinstance(op, TextSearch):
            return self._text_search(conn, op)
        if isinstance(op, VectorSearch):
            return self._vector_search(conn, op)
        if isinstance(op, TouchItems):
            return self._touch(conn, op)
        if isinstance(op, EnqueueTask):
            return self._enqueue(conn, op)
        if isinstance(op, CompleteTask):
            return self._complete(conn, op)
        if isinstance(op, PutRecords):
            return self._put_records(conn, op)
        if isinstance(op, GetRecords):
            found = {
                r["key"]: json.loads(r["value"])
                for chunk in _chunks(list(dict.fromkeys(op.keys)), 500)
                for r in conn.execute(
                    f"SELECT key, value FROM records WHERE namespace = ? AND key IN ({_in(chunk)})",
                    [op.namespace, *chunk],
                )
            }
            return [found.get(k) for k in op.keys]
        if isinstance(op, ListRecords):
            rows = conn.execute(
                "SELECT key, value FROM records WHERE namespace = ? AND substr(key, 1, ?) = ? "
                "ORDER BY key LIMIT ?",
                (op.namespace, len(op.prefix), op.prefix, op.limit),
            )
            return [(r["key"], json.loads(r["value"])) for r in rows]
        raise InvalidInputError(f"unknown store operation {op!r}")

    # ------------------------------------------------------------------ items

    def _put(self, conn: sqlite3.Connection, op: PutItems) -> None:
        embeddings = [None] * len(op.items) if op.embeddings is None else op.embeddings
        revisions = [None] * len(op.items) if op.if_revisions is None else op.if_revisions
        if len(embeddings) != len(op.items) or len(revisions) != len(op.items):
            raise InvalidInputError("PutItems: embeddings/if_revisions must align with items")
        checked: set[tuple[str, int, str | None]] = set()  # one space check per cube/size/model
        for item, vec, expected in zip(op.items, embeddings, revisions, strict=True):
            old = conn.execute("SELECT seq, cube_id, revision FROM items WHERE id = ?", (item.id,)).fetchone()
            if old is not None and old["cube_id"] != item.cube_id:
                raise InvalidInputError(f"item {item.id} belongs to another cube; ids cannot move")
            found = 0 if old is None else old["revision"]
            if expected is not None and found != expected:
                raise ConflictError(f"item {item.id} is at revision {found}, expected {expected}")
            if vec is not None and not op.replace_space:
                space = (item.cube_id, int(np.asarray(vec).shape[-1]), item.embedding_model)
                if space not in checked:  # checked after earlier items of this op were written
                    self._check_space(conn, *space)
                    checked.add(space)
            row = item_to_row(item, vec)
            row["revision"] = 1  # on insert; an update bumps the stored revision instead
            seq = conn.execute(_UPSERT, [row[c] for c in ITEM_COLUMNS] + [row["embedding"]]).fetchone()[0]
            conn.execute("DELETE FROM items_fts WHERE rowid = ?", (seq,))
            conn.execute(
                "INSERT INTO items_fts(rowid, text, cube) VALUES (?, ?, ?)",
                (seq, _fts_text(item), cube_token(item.cube_id)),
            )
            conn.execute("INSERT INTO changes(cube_id, item_id) VALUES (?, ?)", (item.cube_id, item.id))
            if vec is not None and item.embedding_model:
                conn.execute(
                    "INSERT OR IGNORE INTO embed_cache(model_id, text_hash, vector) VALUES (?, ?, ?)",
                    (item.embedding_model, text_hash(item.memory), row["embedding"]),
                )

    def _put_records(self, conn: sqlite3.Connection, op: PutRecords) -> None:
        for key, value in op.records.items():
            if op.if_absent:
                if value is None:
                    raise InvalidInputError("PutRecords(if_absent=True) cannot delete")
                cur = conn.execute(
                    "INSERT INTO records(namespace, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(namespace, key) DO NOTHING",
                    (op.namespace, key, json.dumps(value, ensure_ascii=False, sort_keys=True)),
                )
                if cur.rowcount == 0:
                    raise ConflictError(f"record {op.namespace}/{key} exists already")
            elif value is None:
                conn.execute("DELETE FROM records WHERE namespace = ? AND key = ?", (op.namespace, key))
            else:
                conn.execute(
                    "INSERT INTO records(namespace, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value",
                    (op.namespace, key, json.dumps(value, ensure_ascii=False, sort_keys=True)),
                )

    def _check_space(self, conn: sqlite3.Connection, cube_id: str, dim: int, model: str | None) -> None:
        """Refuse a vector from another embedding space than the cube's (another size or
        another model): mixing spaces silently ruins every later search of the cube. Read
        fresh each time (an indexed one-row lookup): another process may have emptied the
        cube and refilled it with another model."""
        row = conn.execute(
            "SELECT embedding_model, length(embedding) / 4 FROM items "
            "WHERE cube_id = ? AND status != 'deleted' AND embedding IS NOT NULL LIMIT 1",
            (cube_id,),
        ).fetchone()
        if row is None:
            return
        have_model, have_dim = row[0], int(row[1])
        if have_dim == dim and (model is None or have_model is None or have_model == model):
            return
        raise InvalidInputError(
            f"cube {cube_id!r} holds {have_dim}-dimensional vectors of model {have_model!r}; this one is "
            f"{dim}-dimensional from {model!r} (open the folder with the embedder it was built with, "
            "or delete the cube's memories first)"
        )

    def _get(self, conn: sqlite3.Connection, ids: Sequence[str], *, cached: bool) -> list[MemoryItem | None]:
        found: dict[str, MemoryItem] = {}
        unique = list(dict.fromkeys(ids))
        missing = unique
        cached = cached and self._items.size > 0  # shared items go to readers that asked for them
        if cached:  # rows whose version was decoded before are taken as they were
            missing = []
            for chunk in _chunks(unique, 500):
                cur = conn.execute(
                    "SELECT id, seq, revision, access_count, last_accessed_at FROM items "
                    f"WHERE id IN ({_in(chunk)})",
                    chunk,
                )
                cur.row_factory = None  # plain tuples: unpacked at once
                for item_id, seq, revision, count, accessed in cur:
                    if (item := self._items.get(item_id, seq, revision, count, accessed)) is not None:
                        found[item_id] = item
                    else:
                        missing.append(item_id)
        for chunk in _chunks(missing, 500):
            for row in conn.execute(
                f"SELECT seq, {_ITEM_SELECT} FROM items WHERE id IN ({_in(chunk)})", chunk
            ):
                item = found[row["id"]] = row_to_item(row)
                if cached and not self._local.writing:
                    stats = row["access_count"], row["last_accessed_at"]
                    self._items.put(item.id, row["seq"], row["revision"], *stats, item)
        return [found.get(i) for i in ids]

    def _scope_sql(
        self, cube_ids: Sequence[str], ids: Sequence[str] | None, where: F.Node | None, *, by_id: bool = False
    ) -> tuple[str, list[Any]]:
        """SQL for "in these cubes, (these ids,) matching ``where``". With ``by_id`` the cube
        term is kept away from the planner (unary ``+``) so an id list is looked up by key
        instead of scanning the whole cube through its index."""
        if not cube_ids:
            raise InvalidInputError("at least one cube id is required")
        sql = f"{'+' if by_id else ''}items.cube_id IN ({_in(cube_ids)})"
        params: list[Any] = list(cube_ids)
        if ids is not None:
            sql += f" AND items.id IN ({_in(ids)})" if ids else " AND 0"
            params += list(ids)
        where_sql, where_params = F.compile_sqlite(where, table="items")
        return f"{sql} AND ({where_sql})", params + where_params

    def _delete(self, conn: sqlite3.Connection, op: DeleteItems) -> int:
        if op.ids is None and op.where is None:
            raise InvalidInputError("delete needs ids or a filter")
        sql, params = self._scope_sql(op.cube_ids, op.ids, op.where)
        rows = conn.execute(
            f"SELECT seq, id, cube_id, memory, embedding_model FROM items WHERE {sql}", params
        ).fetchall()
        now = format_time(utcnow())
        for row in rows:
            if op.hard:
                conn.execute("DELETE FROM items WHERE seq = ?", (row["seq"],))
                conn.execute("DELETE FROM items_fts WHERE rowid = ?", (row["seq"],))
                conn.execute(
                    "DELETE FROM embed_cache WHERE model_id = ? AND text_hash = ?",
                    (row["embedding_model"] or "", text_hash(row["memory"])),
                )
            else:
                conn.execute(
                    "UPDATE items SET status = 'deleted', updated_at = ?, revision = revision + 1 "
                    "WHERE seq = ?",
                    (now, row["seq"]),
                )
            conn.execute("INSERT INTO changes(cube_id, item_id) VALUES (?, ?)", (row["cube_id"], row["id"]))
        return len(rows)

    def _list(self, conn: sqlite3.Connection, op: ListItems) -> tuple[list[MemoryItem], int]:
        sql, params = self._scope_sql(op.cube_ids, None, op.where)
        total = conn.execute(f"SELECT COUNT(*) FROM items WHERE {sql}", params).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_ITEM_SELECT} FROM items WHERE {sql} "
            "ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?",
            [*params, op.limit, op.offset],
        ).fetchall()
        return [row_to_item(r) for r in rows], int(total)

    def _text_search(self, conn: sqlite3.Connection, op: TextSearch) -> list[ScoredId]:
        """BM25 through FTS5: exact while the rows to score are few enough that scoring every
        one is cheap, else bounded (see :func:`_bounded_candidates`).

        Exact search asks FTS5 for the scope's cubes' matches only (the ``cube`` column) when
        the scope is small: it then scores those, not every cube's. A large scope is not asked
        for (FTS5 would walk all of its rows to answer), so its matches are joined instead.
        """
        if not op.cube_ids:
            raise InvalidInputError("at least one cube id is required")
        terms = _query_terms(op.query)
        if not terms:
            return []
        span = _fts_span(conn)
        if span[1] - span[0] + 1 <= TEXT_BUDGET:
            return self._text_exact(conn, op, terms, _in_cubes(op.cube_ids))  # a small table: small scope
        # A table of one cube (the embedded single-user case) is the scope: never asked for.
        lo, hi = conn.execute(
            "SELECT (SELECT MIN(cube_id) FROM items), (SELECT MAX(cube_id) FROM items)"
        ).fetchone()
        scope: str | None = None if lo == hi and lo in op.cube_ids else _in_cubes(op.cube_ids)
        if scope is not None:
            scope_rows = conn.execute(  # counted up to the budget: the cost stays bounded
                "SELECT COUNT(*) FROM (SELECT rowid FROM items_fts WHERE items_fts MATCH ? LIMIT ?)",
                (scope, TEXT_BUDGET + 1),
            ).fetchone()[0]
            if scope_rows <= TEXT_BUDGET:
                return self._text_exact(conn, op, terms, scope)  # a small scope in a large table
        counted = {t: _count_upto(conn, _word(t), TEXT_BUDGET + 1) for t in terms}
        if sum(n for n, _ in counted.values()) <= TEXT_BUDGET:
            return self._text_exact(conn, op, terms, None)
        # The bounded path asks FTS5 for the scope's rows in its AND queries (~0.15 ms each
        # where the scope is dense), unless the table is the scope.
        ranked, complete = _bounded_candidates(
            conn, terms, counted, want=op.limit + op.limit // 4, span=span, scope=scope
        )
        hits = self._kept(conn, op, ranked)
        if len(hits) >= op.limit or complete:  # complete: every row of the scope holding a word
            return hits
        # The filter let too few candidates through: exact, however long it takes, rather
        # than fewer hits than exact search would find.
        return self._text_exact(conn, op, terms, None)

    def _text_exact(
        self, conn: sqlite3.Connection, op: TextSearch, terms: list[str], scope: str | None
    ) -> list[ScoredId]:
        """Every match scored by ``bm25()``; with ``scope`` (:func:`_in_cubes` of the op's
        cubes) FTS5 finds only those cubes' rows (walking all of their rows in the ``cube``
        column), else every cube's, joined.

        With ``scope``, FTS5 ranks the matches on its own and only the head is checked against
        the filter (by key, a chunk at a time): the matches are the scope's, so nearly all of
        the head passes, and joining every match to its row before ranking cost ~1 µs a match
        (0.4 ms of a LoCoMo search). Only the head is asked for (twice the limit; FTS5 scores
        every match either way, but keeps the best in a bounded sort and hands over no more):
        should the filter drop too many of it, the next ranks are asked for, four times as many
        each time (ties ordered by rowid, so the pages neither overlap nor skip). Without
        ``scope``, the matches are every cube's: joined."""
        match = _any_word(terms)
        if scope is not None:
            ranked_sql = (
                f"SELECT rowid, -{_BM25} AS score FROM items_fts WHERE items_fts MATCH ? "
                "ORDER BY score DESC, rowid LIMIT ? OFFSET ?"
            )
            hits: list[ScoredId] = []
            offset, size = 0, max(2 * op.limit, 64)
            while True:
                cur = conn.execute(ranked_sql, (f"{scope} AND ({match})", size, offset))
                cur.row_factory = None  # plain tuples: hundreds of rows
                page = cur.fetchall()
                hits += self._kept(conn, op, page)
                if len(hits) >= op.limit or len(page) < size:
                    return hits[: op.limit]
                offset, size = offset + size, size * 4
        sql, params = self._scope_sql(op.cube_ids, None, op.where)
        rows = conn.execute(
            f"SELECT items.id AS id, {_BM25} AS rank FROM items_fts "
            "JOIN items ON items.seq = items_fts.rowid "
            f"WHERE items_fts MATCH ? AND items.status != 'deleted' AND {sql} ORDER BY rank LIMIT ?",
            [match, *params, op.limit],
        ).fetchall()
        return [ScoredId(-float(r["rank"]), r["id"]) for r in rows]

    def _kept(
        self, conn: sqlite3.Connection, op: TextSearch, ranked: list[tuple[int, float]]
    ) -> list[ScoredId]:
        """The first ``op.limit`` of ``ranked`` (``(rowid, score)``, best first) whose rows are
        in the op's cubes, not deleted and match its filter: checked a chunk at a time, by key."""
        sql, params = self._scope_sql(op.cube_ids, None, op.where, by_id=True)
        hits: list[ScoredId] = []
        for part in _chunks(ranked, max(op.limit + op.limit // 2, 32)):
            cur = conn.execute(
                f"SELECT items.seq, items.id FROM items WHERE items.seq IN ({_in(part)}) "
                f"AND items.status != 'deleted' AND {sql}",
                [seq for seq, _ in part] + params,
            )
            cur.row_factory = None
            found = dict(cur.fetchall())
            hits += [ScoredId(score, found[seq]) for seq, score in part if seq in found]
            if len(hits) >= op.limit:
                return hits[: op.limit]
        return hits

    def _touch(self, conn: sqlite3.Connection, op: TouchItems) -> None:
        ids = list(dict.fromkeys(op.ids))
        if ids:
            conn.execute(
                "UPDATE items SET access_count = access_count + 1, last_accessed_at = ? "
                f"WHERE id IN ({_in(ids)})",
                [format_time(op.at), *ids],
            )

    def search_text_items(
        self, cube_ids: Sequence[str], query: str, where: F.Node | None = None, *, limit: int = 10
    ) -> list[tuple[ScoredId, MemoryItem]]:
        """The search and its items in one read transaction: every item is as the search saw it."""
        op = TextSearch(cube_ids, query, where, limit)

        def read(conn: sqlite3.Connection) -> list[tuple[ScoredId, MemoryItem]]:
            hits = self._text_search(conn, op)
            items = self._get(conn, [h.id for h in hits], cached=True)
            return [(h, i) for h, i in zip(hits, items, strict=True) if i is not None]

        return self._run(read, write=False)

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        def read(conn: sqlite3.Connection) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            for chunk in _chunks(list(dict.fromkeys(ids)), 500):
                for row in conn.execute(
                    f"SELECT id, embedding FROM items WHERE embedding IS NOT NULL AND id IN ({_in(chunk)})",
                    chunk,
                ):
                    out[row["id"]] = np.frombuffer(row["embedding"], dtype=np.float32)
            return out

        return self._run(read, write=False)

    # ------------------------------------------------------------------ vectors

    def _catch_up(self) -> None:
        """Apply changes committed (by any process) since each loaded cube was last brought
        up to date. Each cube keeps its own position in the change log, so a cube loaded
        from an older snapshot than the others still replays what it missed."""
        with self._vec_lock:
            if not self._cubes:
                return
            since = min(c.seen for c in self._cubes.values())

            def read(conn: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]] | None:
                pruned = conn.execute("SELECT value FROM meta WHERE key = 'changes_pruned_upto'").fetchone()
                if pruned is not None and int(pruned[0]) > since:
                    return None  # the log no longer reaches back that far: reload from the items
                rows = conn.execute(
                    "SELECT seq, cube_id, item_id FROM changes WHERE seq > ? ORDER BY seq", (since,)
                ).fetchall()
                changed = sorted(
                    {
                        r["item_id"]
                        for r in rows
                        if r["cube_id"] in self._cubes and r["seq"] > self._cubes[r["cube_id"]].seen
                    }
                )
                items: list[sqlite3.Row] = []
                for chunk in _chunks(changed, 500):
                    items += conn.execute(
                        f"SELECT seq, id, cube_id, status, embedding FROM items WHERE id IN ({_in(chunk)})",
                        chunk,
                    ).fetchall()
                return rows, items

            caught = self._run(read, write=False)
            if caught is None:
                self._cubes.clear()
                return
            rows, items = caught
            fresh = {r["id"]: r for r in items}
            for r in rows:
                cube = self._cubes.get(r["cube_id"])
                if cube is None or r["seq"] <= cube.seen:
                    continue
                row = fresh.get(r["item_id"])
                if row is None or row["status"] == "deleted" or row["embedding"] is None:
                    cube.remove(r["item_id"])  # hard-deleted ids have no row any more
                    continue
                vec = np.frombuffer(row["embedding"], dtype=np.float32)
                if cube.ids and vec.shape[0] != cube.dim:
                    del self._cubes[r["cube_id"]]  # re-embedded into another space: reload
                    continue
                cube.upsert(row["id"], int(row["seq"]), vec)
            if rows:
                last = rows[-1]["seq"]
                for cube in self._cubes.values():
                    cube.seen = max(cube.seen, last)

    def _prune_changes(self, conn: sqlite3.Connection) -> None:
        """Keep the change log bounded: drop all but the last ``CHANGES_KEPT`` entries once it
        is twice that long. A process whose view is older than the log reloads its vectors."""
        last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        row = conn.execute("SELECT value FROM meta WHERE key = 'changes_pruned_upto'").fetchone()
        upto = int(row[0]) if row is not None else 0
        if last - upto > 2 * self.CHANGES_KEPT:
            upto = last - self.CHANGES_KEPT
            conn.execute("DELETE FROM changes WHERE seq <= ?", (upto,))
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('changes_pruned_upto', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(upto),),
            )

    def _load_cube(self, conn: sqlite3.Connection, cube_id: str) -> CubeVectors:
        """The cube's vectors as of ``conn``'s snapshot, remembering that snapshot's position
        in the change log so later catch-ups replay everything after it."""
        with self._vec_lock:
            cube = self._cubes.get(cube_id)
            if cube is not None:
                return cube
            cube = CubeVectors()
            cube.seen = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            where = "cube_id = ? AND status != 'deleted' AND embedding IS NOT NULL"
            n = conn.execute(f"SELECT COUNT(*) FROM items WHERE {where}", (cube_id,)).fetchone()[0]
            if n:
                # Read in chunks straight into one preallocated matrix: a million rows stay
                # one copy of the vectors, not a million small arrays.
                sql = f"SELECT seq, id, embedding FROM items WHERE {where} ORDER BY seq"
                cur = conn.execute(sql, (cube_id,))
                cur.row_factory = None  # plain tuples: faster
                seqs = np.empty(n, dtype=np.int64)
                ids: list[str] = []
                mat: np.ndarray | None = None
                while rows := cur.fetchmany(8192):
                    blobs = [r[2] for r in rows]
                    if mat is None:
                        mat = np.empty((n, len(blobs[0]) // 4), dtype=np.float32)
                    if any(len(b) != 4 * mat.shape[1] for b in blobs):
                        raise StoreError(f"cube {cube_id!r} holds vectors of different dimensions")
                    lo = len(ids)
                    mat[lo : lo + len(rows)] = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(
                        len(rows), mat.shape[1]
                    )
                    seqs[lo : lo + len(rows)] = [r[0] for r in rows]
                    ids += [r[1] for r in rows]
                assert mat is not None and len(ids) == n
                cube.load(seqs, ids, mat)
            self._cubes[cube_id] = cube
            return cube

    def _vector_search(self, conn: sqlite3.Connection, op: VectorSearch) -> list[ScoredId]:
        """Exact cosine over the cubes' matrices, or HNSW candidates rescored exactly for the
        cubes that have an index. A filter is checked on a growing head of the ranking; when
        it lets too little through (a selective filter), it is evaluated once and the items it
        allows are searched exactly, so the index never costs a hit that exact search finds."""
        vec = np.asarray(op.vector, dtype=np.float32)
        with self._vec_lock:
            cubes: list[CubeVectors] = []
            for cube_id in dict.fromkeys(op.cube_ids):
                cube = self._load_cube(conn, cube_id)
                if cube.ids:
                    self._check_space(conn, cube_id, int(vec.shape[0]), op.model_id)
                    self._maybe_prepare(cube_id, cube, conn)
                cubes.append(cube)
            total = sum(len(c) for c in cubes)
            indexed = any(c.ann is not None for c in cubes)
            ranking = _Ranking(cubes, vec, indexed=indexed)
        if not total:
            return []
        cfg = self._ann
        passed: dict[int, bool] = {}
        size = max(op.limit * cfg.oversample, cfg.min_candidates) if indexed else max(op.limit * 2, 64)
        while True:
            with self._vec_lock:
                head = ranking.head(size)
            if op.where is None:
                if len(head) >= min(op.limit, total):
                    return [ScoredId(s, i) for s, i, _ in head[: op.limit]]
                return self._exact_allowed(conn, op, cubes, vec, None)  # the index came up short
            # Check the head in order, a chunk at a time, only as far as needed.
            hits: list[ScoredId] = []
            checked, step = 0, max(op.limit + op.limit // 2, 32)
            while checked < len(head) and len(hits) < op.limit:
                chunk = head[checked : checked + step]
                if todo := [seq for _, _, seq in chunk if seq not in passed]:
                    passed.update(dict.fromkeys(todo, False))
                    passed.update(dict.fromkeys(self._passing(conn, op, todo), True))
                hits += [ScoredId(s, i) for s, i, seq in chunk if passed[seq]]
                checked += len(chunk)
            if len(hits) >= op.limit or (not indexed and len(head) >= total):
                return hits[: op.limit]
            # Not enough yet. Exact ranking: once a quarter of it was checked, the filter is
            # selective. Index: when the share that passed so far says more than
            # max_candidates, or a quarter of the vectors, would be needed; else ask for about
            # as many as it says. (Asking HNSW for most of a small cube's vectors ranks them
            # approximately, and can miss one that an exact scan of the allowed rows finds.)
            if not indexed:
                if size >= total // 4:
                    return self._exact_allowed(conn, op, cubes, vec, op.where)
                size *= 4
                continue
            cap = min(cfg.max_candidates, max(total // 4, 1))
            needed = 1.5 * op.limit * checked / len(hits) if hits else float("inf")
            if size >= cap or needed > cap:
                return self._exact_allowed(conn, op, cubes, vec, op.where)
            size = min(max(2 * size, int(needed)), cap)

    def _passing(self, conn: sqlite3.Connection, op: VectorSearch, seqs: list[int]) -> set[int]:
        """Which of ``seqs`` are in the op's cubes and match its filter (primary-key lookups)."""
        sql, params = self._scope_sql(op.cube_ids, None, op.where, by_id=True)
        out: set[int] = set()
        for part in _chunks(seqs, 500):
            out |= {
                r[0]
                for r in conn.execute(
                    f"SELECT items.seq FROM items WHERE items.seq IN ({_in(part)}) AND {sql}",
                    [*part, *params],
                )
            }
        return out

    def _exact_allowed(
        self,
        conn: sqlite3.Connection,
        op: VectorSearch,
        cubes: list[CubeVectors],
        vec: np.ndarray,
        where: F.Node | None,
    ) -> list[ScoredId]:
        """Exact search among the items ``where`` allows (evaluated once over the cubes)."""
        allowed: np.ndarray | None = None
        if where is not None:
            sql, params = self._scope_sql(op.cube_ids, None, where)
            found = [r[0] for r in conn.execute(f"SELECT items.seq FROM items WHERE {sql}", params)]
            allowed = np.asarray(found, dtype=np.int64)
        with self._vec_lock:
            ids: list[str] = []
            parts: list[np.ndarray] = []
            for cube in cubes:
                n = len(cube)
                if not n:
                    continue
                if allowed is None:
                    rows = np.arange(n)
                elif len(allowed) < n // 8:
                    rows = np.sort(cube.rows_of(allowed))
                else:
                    rows = np.flatnonzero(np.isin(cube.seqs[:n], allowed))
                parts.append(cube.scores(vec, rows) if len(rows) < n else cube.scores(vec))
                ids += [cube.ids[r] for r in rows.tolist()]
        if not ids:
            return []
        scores = np.concatenate(parts)
        order = _top(scores, op.limit)
        return [ScoredId(float(scores[i]), ids[i]) for i in order]

    # ------------------------------------------------------------------ vector index (HNSW)

    def _maybe_prepare(self, cube_id: str, cube: CubeVectors, conn: sqlite3.Connection | None) -> None:
        """Start loading or building the cube's HNSW index once it reaches the threshold: in
        a background thread (searches stay exact until it is attached) or right here."""
        cfg = self._ann
        if cfg.threshold is None or cube.ann is not None or cube.preparing or len(cube) < cfg.threshold:
            return
        if cube.ann_failed_at is not None and time.monotonic() - cube.ann_failed_at < _ANN_RETRY_S:
            return
        cube.preparing = True
        if not cfg.background:
            self._prepare_ann(cube_id, cube, conn=conn, threads=cfg.build_threads)
            return
        thread = threading.Thread(
            target=self._prepare_ann, args=(cube_id, cube), kwargs={"threads": 1}, daemon=True,
            name=f"memos-ann-{cube_id}",
        )  # fmt: skip
        with self._conns_lock:
            self._builders = [t for t in self._builders if t.is_alive()] + [thread]
        thread.start()

    def _prepare_ann(
        self, cube_id: str, cube: CubeVectors, *, conn: sqlite3.Connection | None = None, threads: int = 0
    ) -> str:
        """Load the cube's saved index (brought forward and verified) or build one, and attach
        it. Returns how: ``"loaded"``, ``"built"``, or ``"cancelled"`` (store closing, cube
        dropped). Failures are logged and leave the cube on exact search."""
        try:
            how = self._load_or_build(cube_id, cube, conn, threads)
        except Exception:
            log.exception("vector index of cube %r could not be prepared; searching it exactly", cube_id)
            cube.ann_failed_at = time.monotonic()
            how = "failed"
        finally:
            with self._vec_lock:
                cube.preparing = False
                cube.journal = None
        return how

    def _load_or_build(
        self, cube_id: str, cube: CubeVectors, conn: sqlite3.Connection | None, threads: int
    ) -> str:
        cfg = self._ann
        with self._vec_lock:
            cube.journal = set()  # rows changed from here on are replayed onto the new index
            start, dim = cube.seen, cube.dim
        path = ann_file(self._ann_dir, cube_id)
        ann: AnnIndex | None = None
        changed: set[str] = set()
        if cfg.persist:
            try:
                ann = AnnIndex.load(path, cfg, cube_id=cube_id, dim=dim)
            except Exception as exc:
                log.warning("vector index file %s is damaged (%s); rebuilding it", path, exc)
            if ann is not None:
                since = self._changed_since(conn, cube_id, ann.position, start)
                if since is None:
                    log.info("vector index of cube %r predates the change log; rebuilding it", cube_id)
                    ann = None
                else:
                    changed = since
        how = "loaded" if ann is not None else "built"
        if ann is None:
            ann = self._build_ann(cube_id, cube, dim, threads)
            if ann is None:
                return "cancelled"
            ann.position = start
            if cfg.persist:
                self._save_ann(ann, cube_id)  # before attaching: nobody else touches it yet
        with self._vec_lock:
            if self._cubes.get(cube_id) is not cube:
                return "cancelled"
            assert cube.journal is not None
            keys = cube.journal | {int(cube.seqs[r]) for i in changed if (r := cube.row.get(i)) is not None}
            cube.replay(ann, keys)
            if not cube.reconcile(ann, max_fix=max(1000, len(cube) // 10)) or not _agrees(cube, ann):
                if how == "built":
                    raise StoreError("a freshly built vector index disagrees with the vectors")
                log.warning("vector index of cube %r is stale or damaged; rebuilding it", cube_id)
                how = "rebuild"
            else:
                ann.position = cube.seen
                cube.ann = ann
        if how == "rebuild":
            self._ann_dir.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            return self._load_or_build(cube_id, cube, conn, threads)
        return how

    def _build_ann(self, cube_id: str, cube: CubeVectors, dim: int, threads: int) -> AnnIndex | None:
        """A new index of the cube's rows, copied a chunk at a time under the lock (rows that
        change after their chunk was copied are in the journal)."""
        ann = AnnIndex(dim, self._ann)
        lo = 0
        while True:
            if self._closing.is_set():
                return None
            with self._vec_lock:
                if self._cubes.get(cube_id) is not cube:
                    return None
                hi = min(len(cube), lo + _BUILD_CHUNK)
                if lo >= hi:
                    return ann
                keys, vecs = cube.seqs[lo:hi].copy(), cube.mat[lo:hi].copy()
            ann.add_many(keys, vecs, threads=threads)
            lo = hi

    def _changed_since(
        self, conn: sqlite3.Connection | None, cube_id: str, since: int, upto: int
    ) -> set[str] | None:
        """Ids of the cube changed in ``(since, upto]`` of the log; None if it was pruned."""
        if since > upto:
            return None  # saved from a newer view than ours: cannot be brought back

        def read(c: sqlite3.Connection) -> set[str] | None:
            pruned = c.execute("SELECT value FROM meta WHERE key = 'changes_pruned_upto'").fetchone()
            if pruned is not None and int(pruned[0]) > since:
                return None
            rows = c.execute(
                "SELECT DISTINCT item_id FROM changes WHERE seq > ? AND seq <= ? AND cube_id = ?",
                (since, upto, cube_id),
            )
            return {r[0] for r in rows}

        return read(conn) if conn is not None else self._run(read, write=False)

    def _save_ann(self, ann: AnnIndex, cube_id: str) -> None:
        try:
            ann.save(ann_file(self._ann_dir, cube_id), cube_id=cube_id, model=None)
        except OSError as exc:
            log.warning("could not save the vector index of cube %r: %s", cube_id, exc)

    def warm(self, cube_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Load the vectors of ``cube_ids`` and load or build their HNSW indexes now, in this
        thread, instead of in the first searches (a server at start-up, a benchmark).

        Returns per cube: ``vectors``, ``load_s`` (reading the vectors), ``index``
        (``"exact"`` below the threshold, ``"ready"``, ``"loaded"``, ``"built"``) and ``index_s``.
        """
        out: dict[str, dict[str, Any]] = {}
        for cube_id in dict.fromkeys(cube_ids):
            self._catch_up()
            t0 = time.perf_counter()
            cube = self._run(lambda c, cid=cube_id: self._load_cube(c, cid), write=False)  # type: ignore[misc]
            t1 = time.perf_counter()
            how = "exact"
            cfg = self._ann
            if cube.ann is not None:
                how = "ready"
            elif cfg.threshold is not None and len(cube) >= cfg.threshold:
                with self._conns_lock:
                    building = [t for t in self._builders if t.name == f"memos-ann-{cube_id}"]
                for thread in building:
                    thread.join()
                with self._vec_lock:
                    mine = cube.ann is None and not cube.preparing
                    if mine:
                        cube.preparing = True
                if mine:
                    how = self._prepare_ann(cube_id, cube, threads=cfg.build_threads)
                else:
                    how = "ready" if cube.ann is not None else "failed"
            out[cube_id] = {
                "vectors": len(cube),
                "load_s": round(t1 - t0, 3),
                "index": how,
                "index_s": round(time.perf_counter() - t1, 3),
            }
        return out

    # ------------------------------------------------------------------ embedding cache

    def cached_embeddings(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        def read(conn: sqlite3.Connection) -> dict[str, np.ndarray]:
            out: dict[str, np.ndarray] = {}
            for chunk in _chunks(list(hashes), 500):
                for row in conn.execute(
                    "SELECT text_hash, vector FROM embed_cache "
                    f"WHERE model_id = ? AND text_hash IN ({_in(chunk)})",
                    [model_id, *chunk],
                ):
                    out[row["text_hash"]] = np.frombuffer(row["vector"], dtype=np.float32)
            return out

        return self._run(read, write=False)

    def cache_embeddings(self, model_id: str, vectors: dict[str, np.ndarray]) -> None:
        """Vectors are cached when items are put; texts embedded only for queries are not kept."""

    # ------------------------------------------------------------------ tasks

    def _enqueue(self, conn: sqlite3.Connection, op: EnqueueTask) -> Task:
        t = op.task
        conn.execute(
            "INSERT INTO tasks(task_id, kind, payload, status, attempts, memory_ids, created_at, "
            "updated_at, run_after) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                t.task_id,
                t.kind,
                json.dumps(op.payload, ensure_ascii=False),
                TaskStatus.QUEUED.value,
                json.dumps(t.memory_ids),
                format_time(t.created_at),
                format_time(t.updated_at),
                format_time(t.created_at),
            ),
        )
        return t

    def _complete(self, conn: sqlite3.Connection, op: CompleteTask) -> None:
        owner = " AND worker = ? AND status = 'running'" if op.worker is not None else ""
        params: list[Any] = [format_time(utcnow()), op.task_id] + (
            [op.worker] if op.worker is not None else []
        )
        cur = conn.execute(
            # The payload is dropped: it can be large (an image's data: URL) and is spent.
            "UPDATE tasks SET status = 'completed', error = NULL, updated_at = ?, worker = NULL, "
            f"lease_until = NULL, payload = '{{}}' WHERE task_id = ?{owner}",
            params,
        )
        if cur.rowcount != 1:
            # Rolls back the task's writes: another worker took the task over (our lease ran
            # out) or it is gone. The current owner will do the work.
            raise LeaseLostError(f"task {op.task_id} is no longer held by worker {op.worker}")

    def claim_task(
        self, worker: str, *, lease_seconds: float, max_attempts: int | None = None
    ) -> tuple[Task, dict[str, Any]] | None:
        """Claim the oldest ready task: queued and due, or running with an expired lease
        (its worker died). A task whose workers died ``max_attempts`` times is failed."""

        def claim(conn: sqlite3.Connection) -> tuple[Task, dict[str, Any]] | None:
            now = format_time(utcnow())
            while True:
                row = conn.execute(
                    "SELECT task_id, status, attempts FROM tasks "
                    "WHERE (status = 'queued' AND run_after <= ?) "
                    "OR (status = 'running' AND lease_until < ?) ORDER BY run_after LIMIT 1",
                    (now, now),
                ).fetchone()
                if row is None:
                    return None
                if (
                    max_attempts is not None
                    and row["status"] == "running"
                    and row["attempts"] >= max_attempts
                ):
                    conn.execute(
                        "UPDATE tasks SET status = 'failed', updated_at = ?, worker = NULL, "
                        "lease_until = NULL, "
                        "error = COALESCE(error || '; ', '') || ? WHERE task_id = ?",
                        (
                            now,
                            f"worker lost {row['attempts']} times (process died or lease expired)",
                            row["task_id"],
                        ),
                    )
                    continue
                break
            conn.execute(
                "UPDATE tasks SET status = 'running', attempts = attempts + 1, worker = ?, "
                "lease_until = ?, updated_at = ? WHERE task_id = ?",
                (worker, format_time(utcnow() + timedelta(seconds=lease_seconds)), now, row["task_id"]),
            )
            full = conn.execute("SELECT * FROM tasks WHERE task_id = ?", (row["task_id"],)).fetchone()
            return _task(full), json.loads(full["payload"])

        return self._run(claim, write=True)

    def renew_task(self, task_id: str, worker: str, *, lease_seconds: float) -> bool:
        """Extend our lease; False when the task is no longer ours."""
        until = format_time(utcnow() + timedelta(seconds=lease_seconds))
        cur = self._run(
            lambda c: c.execute(
                "UPDATE tasks SET lease_until = ? WHERE task_id = ? AND worker = ? AND status = 'running'",
                (until, task_id, worker),
            ),
            write=True,
        )
        return bool(cur.rowcount == 1)

    def fail_task(
        self, task_id: str, error: str, *, retry_in: float | None, worker: str | None = None
    ) -> None:
        """Record a failure: re-queue after ``retry_in`` seconds, or fail for good. With
        ``worker``, only while that worker holds the task (a stale worker changes nothing)."""
        now = utcnow()
        owner = " AND worker = ? AND status = 'running'" if worker is not None else ""
        tail: list[Any] = [task_id] + ([worker] if worker is not None else [])
        if retry_in is None:
            sql = (
                "UPDATE tasks SET status = 'failed', error = ?, updated_at = ?, worker = NULL, "
                "lease_until = NULL"
            )
            params: list[Any] = [error, format_time(now)]
        else:
            sql = (
                "UPDATE tasks SET status = 'queued', error = ?, updated_at = ?, run_after = ?, "
                "worker = NULL, lease_until = NULL"
            )
            params = [error, format_time(now), format_time(now + timedelta(seconds=retry_in))]
        self._run(lambda c: c.execute(f"{sql} WHERE task_id = ?{owner}", params + tail), write=True)

    def get_task(self, task_id: str) -> Task | None:
        row = self._run(
            lambda c: c.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone(), write=False
        )
        return None if row is None else _task(row)

    def pending_tasks(self) -> int:
        row = self._run(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM tasks WHERE status IN ('queued', 'running')"
            ).fetchone(),
            write=False,
        )
        return int(row[0])

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Counts per cube and status, tasks per status, the file size, and how each cube
        loaded in this process is searched (``vector_index``: exact or HNSW)."""

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            cubes: dict[str, dict[str, int]] = {}
            for r in conn.execute(
                "SELECT cube_id, status, COUNT(*) AS n FROM items GROUP BY cube_id, status"
            ):
                cubes.setdefault(r["cube_id"], {})[r["status"]] = r["n"]
            tasks = {
                r["status"]: r["n"]
                for r in conn.execute("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status")
            }
            return {"cubes": cubes, "tasks": tasks}

        out = self._run(read, write=False)
        with self._vec_lock:
            out["vector_index"] = {
                cube_id: {
                    "vectors": len(cube),
                    "index": "hnsw" if cube.ann is not None else "building" if cube.preparing else "exact",
                }
                for cube_id, cube in self._cubes.items()
            }
        out["file_bytes"] = sum(
            p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file()
        )
        return out


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED (any extended code): another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) and code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def _task(row: sqlite3.Row) -> Task:
    return Task(
        task_id=row["task_id"],
        kind=row["kind"],
        status=TaskStatus(row["status"]),
        attempts=row["attempts"],
        error=row["error"],
        created_at=parse_time(row["created_at"]),
        updated_at=parse_time(row["updated_at"]),
        memory_ids=json.loads(row["memory_ids"]),
    )


def _chunks(values: list[T], size: int) -> Iterable[list[T]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` best scores, best first; ties keep position order."""
    n = len(scores)
    if k >= n or n <= _FULL_SORT_MAX:
        return np.argsort(-scores, kind="stable")[:k]
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def _agrees(cube: CubeVectors, ann: AnnIndex, samples: int = 64) -> bool:
    """The index holds as many vectors as the cube, and a random sample of them points the
    same way as the matrix rows (cosine >= 0.99: the index may hold them quantised)."""
    n = len(cube)
    if len(ann) != n:
        return False
    if not n:
        return True
    rows = np.random.default_rng().choice(n, size=min(samples, n), replace=False)
    got, want = ann.vectors(cube.seqs[rows]), cube.mat[rows]
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    cos = np.einsum("ij,ij->i", got, want) / np.where(norms > 0, norms, 1.0)
    return bool(np.all((cos >= 0.99) | (norms == 0)))


class _Ranking:
    """Best-first ``(score, id, seq)`` over some cubes: exact over every row of a cube, or
    HNSW candidates rescored exactly for the cubes that have an index. Read under the
    store's vector lock."""

    def __init__(self, cubes: list[CubeVectors], vec: np.ndarray, *, indexed: bool) -> None:
        self.cubes = [c for c in cubes if len(c)]
        self.vec = vec
        self.indexed = indexed
        self._scores: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self._ordered = 0

    def head(self, size: int) -> list[tuple[float, str, int]]:
        return self._approximate(size) if self.indexed else self._exact(size)

    def _exact(self, size: int) -> list[tuple[float, str, int]]:
        if self._scores is None:
            self._scores = np.concatenate([c.scores(self.vec) for c in self.cubes]) if self.cubes else None
        if self._scores is None:
            return []
        if self._order is None or self._ordered < min(size, len(self._scores)):
            self._order = _top(self._scores, size)
            self._ordered = len(self._order)
        offsets = np.cumsum([0] + [len(c) for c in self.cubes])
        which = np.searchsorted(offsets, self._order[:size], side="right") - 1
        out = []
        for pos, c in zip(self._order[:size].tolist(), which.tolist(), strict=True):
            cube, row = self.cubes[c], pos - int(offsets[c])
            out.append((float(self._scores[pos]), cube.ids[row], int(cube.seqs[row])))
        return out

    def _approximate(self, size: int) -> list[tuple[float, str, int]]:
        found: list[tuple[float, str, int]] = []
        for cube in self.cubes:
            if cube.ann is not None:
                rows = cube.rows_of(cube.ann.search(self.vec, size))
            else:
                rows = _top(cube.scores(self.vec), size)
            scores = cube.scores(self.vec, rows)
            pairs = zip(scores.tolist(), rows.tolist(), strict=True)
            found += [(float(s), cube.ids[r], int(cube.seqs[r])) for s, r in pairs]
        found.sort(key=lambda f: -f[0])
        return found[:size]
