"""A LangGraph checkpointer that keeps graph state in the MemOS data folder.

Checkpoints and pending writes live in their own tables (``lg_checkpoints``, ``lg_writes``)
inside the embedded store's SQLite file, so one folder holds an agent's long-term memory and
its short-term thread state, and a graph interrupted in one process resumes in another::

    from langgraph.graph import StateGraph
    from memos_core import MemOS
    from memos_langgraph.checkpoint import MemosCheckpointSaver

    mem = MemOS("./data")
    saver = MemosCheckpointSaver.from_memos(mem)
    graph = builder.compile(checkpointer=saver)
    graph.invoke({"messages": [...]}, {"configurable": {"thread_id": "t-1"}})

Each statement block runs in one SQLite transaction (``BEGIN IMMEDIATE`` for writes) on a
WAL-mode connection with a busy timeout; a lock makes one saver safe to share between threads,
and SQLite's own locking makes savers in different processes safe on the same file.

All SQL lives in the ``_*_txn`` functions, which take a connection and do no other I/O; the
sync methods run them directly and the ``a*`` methods run the same functions in a worker
thread (:func:`asyncio.to_thread`), so there is one implementation of every operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from memos_core import MemOS, NotSupportedError, SqliteStore, StoreBusyError, StoreError

__all__ = ["MemosCheckpointSaver"]

T = TypeVar("T")

_DDL = """
CREATE TABLE IF NOT EXISTS lg_checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    type TEXT NOT NULL,
    checkpoint BLOB NOT NULL,
    metadata_type TEXT NOT NULL,
    metadata BLOB NOT NULL,
    run_id TEXT,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX IF NOT EXISTS lg_checkpoints_by_id ON lg_checkpoints (checkpoint_id);
CREATE INDEX IF NOT EXISTS lg_checkpoints_by_run ON lg_checkpoints (run_id) WHERE run_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS lg_writes (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    value BLOB NOT NULL,
    task_path TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
)
"""

_CHECKPOINT_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata_type, metadata"
)
#: Rows fetched per transaction while listing; the lock is released between pages.
_PAGE = 100

_Row = tuple[str, str, str, str | None, str, bytes, str, bytes]
_WriteRow = tuple[str, str, str, bytes]
_WriteRows = list[_WriteRow]
_Page = list[tuple[_Row, _WriteRows]]
_Tuples = list[CheckpointTuple]
_Records = list["_WriteRecord"]
_Key = tuple[str, str, str]  # (checkpoint_id, thread_id, checkpoint_ns): the listing order


@dataclass(frozen=True)
class _ListQuery:
    """The SQL part of a ``list`` call: everything except the metadata filter."""

    thread_id: str | None
    checkpoint_ns: str | None
    checkpoint_id: str | None
    before_id: str | None


@dataclass(frozen=True)
class _WriteRecord:
    task_id: str
    idx: int
    channel: str
    type: str
    value: bytes
    task_path: str
    replace: bool


# ---------------------------------------------------------------------- transactions (SQL only)


def _writes_of(conn: sqlite3.Connection, thread_id: str, ns: str, checkpoint_id: str) -> list[_WriteRow]:
    # writes_sort_key order: (task_path, task_id, idx), which replays a super-step as it ran.
    return conn.execute(
        "SELECT task_id, channel, type, value FROM lg_writes"
        " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
        " ORDER BY task_path, task_id, idx",
        (thread_id, ns, checkpoint_id),
    ).fetchall()


def _get_txn(
    conn: sqlite3.Connection, thread_id: str, ns: str, checkpoint_id: str | None
) -> tuple[_Row, list[_WriteRow]] | None:
    if checkpoint_id:
        row = conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM lg_checkpoints"
            " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            (thread_id, ns, checkpoint_id),
        ).fetchone()
    else:
        row = conn.execute(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM lg_checkpoints"
            " WHERE thread_id = ? AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id, ns),
        ).fetchone()
    if row is None:
        return None
    return row, _writes_of(conn, row[0], row[1], row[2])


def _list_txn(
    conn: sqlite3.Connection, query: _ListQuery, after: _Key | None, size: int
) -> list[tuple[_Row, list[_WriteRow]]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in (
        ("thread_id", query.thread_id),
        ("checkpoint_ns", query.checkpoint_ns),
        ("checkpoint_id", query.checkpoint_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.before_id is not None:
        where.append("checkpoint_id < ?")
        args.append(query.before_id)
    if after is not None:  # keyset pagination in the listing order
        where.append("(checkpoint_id, thread_id, checkpoint_ns) < (?, ?, ?)")
        args.extend(after)
    sql = f"SELECT {_CHECKPOINT_COLUMNS} FROM lg_checkpoints"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY checkpoint_id DESC, thread_id DESC, checkpoint_ns DESC LIMIT ?"
    rows: list[_Row] = conn.execute(sql, (*args, size)).fetchall()
    return [(row, _writes_of(conn, row[0], row[1], row[2])) for row in rows]


def _put_txn(conn: sqlite3.Connection, row: _Row, run_id: str | None) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO lg_checkpoints ({_CHECKPOINT_COLUMNS}, run_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*row, run_id),
    )


def _put_writes_txn(
    conn: sqlite3.Connection, thread_id: str, ns: str, checkpoint_id: str, records: Sequence[_WriteRecord]
) -> None:
    for r in records:
        # A regular write keeps the first value stored for (task, idx), so a retried task does
        # not duplicate it; special channels (error, interrupt, ...) replace the earlier one.
        verb = "INSERT OR REPLACE" if r.replace else "INSERT OR IGNORE"
        conn.execute(
            f"{verb} INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,"
            " type, value, task_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (thread_id, ns, checkpoint_id, r.task_id, r.idx, r.channel, r.type, r.value, r.task_path),
        )


def _delete_thread_txn(conn: sqlite3.Connection, thread_id: str) -> None:
    conn.execute("DELETE FROM lg_writes WHERE thread_id = ?", (thread_id,))
    conn.execute("DELETE FROM lg_checkpoints WHERE thread_id = ?", (thread_id,))


def _delete_for_runs_txn(conn: sqlite3.Connection, run_ids: Sequence[str]) -> None:
    for run_id in run_ids:
        conn.execute(
            "DELETE FROM lg_writes WHERE (thread_id, checkpoint_ns, checkpoint_id) IN"
            " (SELECT thread_id, checkpoint_ns, checkpoint_id FROM lg_checkpoints WHERE run_id = ?)",
            (run_id,),
        )
        conn.execute("DELETE FROM lg_checkpoints WHERE run_id = ?", (run_id,))


def _copy_thread_txn(conn: sqlite3.Connection, source: str, target: str) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO lg_checkpoints ({_CHECKPOINT_COLUMNS}, run_id)"
        " SELECT ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint,"
        " metadata_type, metadata, run_id FROM lg_checkpoints WHERE thread_id = ?",
        (target, source),
    )
    conn.execute(
        "INSERT OR REPLACE INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,"
        " channel, type, value, task_path)"
        " SELECT ?, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, value, task_path"
        " FROM lg_writes WHERE thread_id = ?",
        (target, source),
    )


def _prune_keep_latest_txn(conn: sqlite3.Connection, thread_ids: Sequence[str]) -> None:
    for thread_id in thread_ids:
        latest = conn.execute(
            "SELECT checkpoint_ns, MAX(checkpoint_id) FROM lg_checkpoints WHERE thread_id = ?"
            " GROUP BY checkpoint_ns",
            (thread_id,),
        ).fetchall()
        for ns, keep in latest:
            for table in ("lg_writes", "lg_checkpoints"):
                conn.execute(
                    f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id <> ?",
                    (thread_id, ns, keep),
                )


class _Listing:
    """One ``list`` call, fetched a page (one read transaction) at a time.

    ``list`` calls :meth:`fetch` directly and ``alist`` in a worker thread, so both page the
    same way and neither holds the saver's lock while the caller consumes results.
    """

    def __init__(
        self, saver: MemosCheckpointSaver, query: _ListQuery, filter: dict[str, Any] | None, limit: int | None
    ) -> None:
        self._saver = saver
        self._query = query
        self._filter = filter
        self._left = limit
        self._after: _Key | None = None
        self.done = limit is not None and limit <= 0

    def fetch(self) -> _Tuples:
        left = self._left
        # Without a metadata filter every row counts, so fetch no more than the limit.
        size = _PAGE if self._filter or left is None else min(_PAGE, left)
        query, after, serde = self._query, self._after, self._saver.serde
        page = self._saver._run(lambda conn: _list_txn(conn, query, after, size), write=False)
        out: _Tuples = []
        for row, writes in page:
            if left is not None and len(out) >= left:
                break
            if self._filter:
                metadata = serde.loads_typed((row[6], row[7]))
                if not all(metadata.get(k) == v for k, v in self._filter.items()):
                    continue
            out.append(self._saver._tuple(row, writes))
        if left is not None:
            self._left = left - len(out)
        if page:
            last = page[-1][0]
            self._after = (last[2], last[0], last[1])
        self.done = len(page) < size or self._left == 0
        return out


# ---------------------------------------------------------------------- the saver


class MemosCheckpointSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer stored in a MemOS SQLite data file.

    Args:
        path: the SQLite file; normally the embedded store's file (see :meth:`from_memos`).
            Other processes may use the same file at the same time.
        serde: LangGraph serializer; defaults to ``JsonPlusSerializer``.
        busy_timeout: seconds a write waits for another writer before ``StoreBusyError``.

    Extended capabilities: :meth:`delete_for_runs` (by ``metadata["run_id"]``),
    :meth:`copy_thread` and :meth:`prune`. ``prune(strategy="keep_latest")`` drops every
    checkpoint but the newest of each namespace, so do not use it on threads whose graph uses
    LangGraph's (beta) ``DeltaChannel``: their history would be cut.

    Example:
        >>> mem = MemOS("./data")  # doctest: +SKIP
        >>> saver = MemosCheckpointSaver.from_memos(mem)  # doctest: +SKIP
        >>> graph = builder.compile(checkpointer=saver)  # doctest: +SKIP
    """

    def __init__(
        self, path: str | Path, *, serde: SerializerProtocol | None = None, busy_timeout: float = 30.0
    ) -> None:
        super().__init__(serde=serde)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self.setup()

    @classmethod
    def from_memos(
        cls, mem: MemOS, *, serde: SerializerProtocol | None = None, busy_timeout: float = 30.0
    ) -> MemosCheckpointSaver:
        """A saver on the SQLite file of ``mem``'s embedded store.

        Raises:
            NotSupportedError: ``mem`` uses another store (its state has no SQLite file).
        """
        if not isinstance(mem.store, SqliteStore):
            raise NotSupportedError(
                f"MemosCheckpointSaver needs the embedded SqliteStore, not {type(mem.store).__name__}; "
                "pass a SQLite file path to MemosCheckpointSaver(path) instead"
            )
        return cls(mem.store.path, serde=serde, busy_timeout=busy_timeout)

    def setup(self) -> None:
        """Create the checkpoint tables if they are missing (idempotent; constructors call it)."""

        def create(conn: sqlite3.Connection) -> None:
            for statement in _DDL.split(";"):
                if statement.strip():
                    conn.execute(statement)

        self._run(create, write=True)

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> MemosCheckpointSaver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _connection(self) -> sqlite3.Connection:
        # Called with the lock held. A connection must not cross a fork: reopen in a child.
        if self._conn is None or self._pid != os.getpid():
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction under the lock; translate SQLite errors."""
        with self._lock:
            conn = self._connection()
            try:
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
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise StoreBusyError(
                        f"{self.path} stayed locked for {self._busy_timeout}s: {exc}"
                    ) from exc
                raise StoreError(f"sqlite error on {self.path}: {exc}") from exc

    def _tuple(self, row: _Row, writes: _WriteRows) -> CheckpointTuple:
        thread_id, ns, checkpoint_id, parent_id, type_, blob, metadata_type, metadata = row
        return CheckpointTuple(
            config={
                "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
            },
            checkpoint=self.serde.loads_typed((type_, blob)),
            metadata=self.serde.loads_typed((metadata_type, metadata)),
            parent_config=(
                {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent_id}}
                if parent_id
                else None
            ),
            pending_writes=[
                (task_id, channel, self.serde.loads_typed((wtype, value)))
                for task_id, channel, wtype, value in writes
            ],
        )

    @staticmethod
    def _list_query(config: RunnableConfig | None, before: RunnableConfig | None) -> _ListQuery:
        configurable = config["configurable"] if config else {}
        return _ListQuery(
            thread_id=configurable.get("thread_id"),
            checkpoint_ns=configurable.get("checkpoint_ns"),
            checkpoint_id=configurable.get("checkpoint_id"),
            before_id=get_checkpoint_id(before) if before else None,
        )

    def _listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> _Listing:
        return _Listing(self, self._list_query(config, before), filter, limit)

    # ------------------------------------------------------------------ sync API

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config``, or the thread's latest in its namespace."""
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        found = self._run(lambda conn: _get_txn(conn, thread_id, ns, get_checkpoint_id(config)), write=False)
        return self._tuple(*found) if found else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first; ``filter`` matches metadata keys by equality."""
        listing = self._listing(config, filter, before, limit)
        while not listing.done:
            yield from listing.fetch()

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store ``checkpoint`` as a child of the checkpoint ``config`` names (if any)."""
        row, run_id = self._checkpoint_row(config, checkpoint, metadata)
        self._run(lambda conn: _put_txn(conn, row, run_id), write=True)
        return {"configurable": {"thread_id": row[0], "checkpoint_ns": row[1], "checkpoint_id": row[2]}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against the checkpoint ``config`` names."""
        thread_id, ns, checkpoint_id, records = self._write_records(config, writes, task_id, task_path)
        self._run(lambda conn: _put_writes_txn(conn, thread_id, ns, checkpoint_id, records), write=True)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of ``thread_id``, in all namespaces."""
        self._run(lambda conn: _delete_thread_txn(conn, thread_id), write=True)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose ``metadata["run_id"]`` is listed."""
        ids = list(run_ids)
        self._run(lambda conn: _delete_for_runs_txn(conn, ids), write=True)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another, with the same ids."""
        self._run(lambda conn: _copy_thread_txn(conn, source_thread_id, target_thread_id), write=True)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the newest checkpoint per namespace (``"keep_latest"``) or none (``"delete"``)."""
        ids = list(thread_ids)
        if strategy == "delete":

            def delete_all(conn: sqlite3.Connection) -> None:
                for thread_id in ids:
                    _delete_thread_txn(conn, thread_id)

            self._run(delete_all, write=True)
        elif strategy == "keep_latest":
            self._run(lambda conn: _prune_keep_latest_txn(conn, ids), write=True)
        else:
            raise ValueError(f"prune strategy must be 'keep_latest' or 'delete', not {strategy!r}")

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Zero-padded counter plus a random fraction, as ``InMemorySaver`` (sorts as strings)."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # ------------------------------------------------------------------ async twins

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple` (runs in a worker thread)."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`: each page is fetched in a worker thread."""
        listing = self._listing(config, filter, before, limit)
        while not listing.done:
            for item in await asyncio.to_thread(listing.fetch):
                yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes`."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async :meth:`delete_for_runs`."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async :meth:`prune`."""
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    # ------------------------------------------------------------------ serialization

    def _checkpoint_row(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> tuple[_Row, str | None]:
        configurable = config["configurable"]
        full_metadata = get_checkpoint_metadata(config, metadata)
        type_, blob = self.serde.dumps_typed(checkpoint)
        metadata_type, metadata_blob = self.serde.dumps_typed(full_metadata)
        run_id = full_metadata.get("run_id")
        row: _Row = (
            configurable["thread_id"],
            configurable.get("checkpoint_ns", ""),
            checkpoint["id"],
            configurable.get("checkpoint_id"),  # the parent
            type_,
            blob,
            metadata_type,
            metadata_blob,
        )
        return row, str(run_id) if run_id is not None else None

    def _write_records(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> tuple[str, str, str, _Records]:
        configurable = config["configurable"]
        records: _Records = []
        for idx, (channel, value) in enumerate(writes):
            type_, blob = self.serde.dumps_typed(value)
            special = WRITES_IDX_MAP.get(channel)
            records.append(
                _WriteRecord(
                    task_id=task_id,
                    idx=special if special is not None else idx,
                    channel=channel,
                    type=type_,
                    value=blob,
                    task_path=task_path,
                    replace=special is not None,
                )
            )
        return (
            cast(str, configurable["thread_id"]),
            cast(str, configurable.get("checkpoint_ns", "")),
            cast(str, configurable["checkpoint_id"]),
            records,
        )
