"""``MemosStore``: a LangGraph ``BaseStore`` kept in MemOS.

Mapping (one store = one MemOS user cube, ``user:<user_id>``, default ``"langgraph"``):

- Every item ``(namespace, key) -> value`` is one memory of type ``"langgraph_store"`` with
  ``key=key`` and ``info`` = ``{"lg_ns": <namespace code>, "lg_prefixes": [<code of each
  prefix>], "lg_indexed": bool, "lg_created_at": iso, "lg_ttl": minutes | null, "value":
  <the value, JSON intact>}``. A namespace code is each label followed by ``"."``
  (``("a", "b")`` -> ``"a.b."``); labels cannot contain ``"."``, so codes are unambiguous
  and prefix matching is per label through ``{"lg_prefixes": {"contains": code}}`` (no
  ``like`` patterns, nothing to escape).
- The memory text is the text of the indexed fields (``IndexConfig.fields`` or
  ``PutOp.index``), so a ``query`` runs MemOS hybrid search (BM25 + vectors with the MemOS
  embedder). Items that are not indexed carry their value as JSON text and
  ``lg_indexed=false``; they never rank in a semantic search.
- A record per item under the records namespace ``langgraph-store:<user_id>`` maps
  ``<namespace code>.<key>`` to ``{"id": memory_id, "expires_at": iso | null}``: the
  deterministic lookup for ``get`` and the TTL clock (refreshing it is a record write, not
  a new memory version).
- A put adds the new memory, points the record at it, then hard-deletes the previous
  memory of that ``(namespace, key)``; ``created_at`` is carried over. A delete hard-deletes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from memos_core import InvalidInputError, MemoryItem, MemoryNotFoundError, MemOS

__all__ = ["MemosStore"]

MEMORY_TYPE = "langgraph_store"
_PAGE = 1000


def _ns_code(namespace: Sequence[str]) -> str:
    return "".join(f"{label}." for label in namespace)


def _record_key(namespace: tuple[str, ...], key: str) -> str:
    # The code ends in "." and labels are non-empty without ".", so the first ".." ends it.
    return f"{_ns_code(namespace)}.{key}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class _Entry:
    """One live item as read back from its memory."""

    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    memory_id: str
    ttl: float | None

    def item(self) -> Item:
        return Item(
            value=self.value,
            key=self.key,
            namespace=self.namespace,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def hit(self, score: float | None) -> SearchItem:
        return SearchItem(
            namespace=self.namespace,
            key=self.key,
            value=self.value,
            created_at=self.created_at,
            updated_at=self.updated_at,
            score=score,
        )


def _entry(memory_id: str, key: str | None, info: Mapping[str, Any], updated_at: datetime) -> _Entry:
    code = str(info["lg_ns"])
    ttl = info.get("lg_ttl")
    return _Entry(
        namespace=tuple(code[:-1].split(".")) if code else (),
        key=key or "",
        value=info["value"],
        created_at=datetime.fromisoformat(info["lg_created_at"]),
        updated_at=updated_at,
        memory_id=memory_id,
        ttl=float(ttl) if ttl is not None else None,
    )


def _from_item(item: MemoryItem) -> _Entry:
    return _entry(item.id, item.key, item.info, item.created_at)


# ------------------------------------------------------------------ filters (InMemoryStore's)


def _matches(value: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    return not filter or all(_compare(value.get(k), f) for k, f in filter.items())


def _compare(item_value: Any, filter_value: Any) -> bool:
    """LangGraph's JSONB-like comparison (``InMemoryStore``), nested dicts and lists included."""
    if isinstance(filter_value, dict):
        if any(k.startswith("$") for k in filter_value):
            return all(_operator(item_value, op, arg) for op, arg in filter_value.items())
        if not isinstance(item_value, dict):
            return False
        return all(_compare(item_value.get(k), v) for k, v in filter_value.items())
    if isinstance(filter_value, (list, tuple)):
        return (
            isinstance(item_value, (list, tuple))
            and len(item_value) == len(filter_value)
            and all(_compare(i, f) for i, f in zip(item_value, filter_value, strict=True))
        )
    return bool(item_value == filter_value)


_ORDER = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _operator(value: Any, operator: str, arg: Any) -> bool:
    if operator == "$eq":
        return bool(value == arg)
    if operator == "$ne":
        return bool(value != arg)
    if operator in _ORDER:
        try:
            return bool(_ORDER[operator](float(value), float(arg)))
        except (TypeError, ValueError):
            # InMemoryStore raises TypeError on a missing value; PostgresStore's JSONB
            # comparison is simply false. We follow PostgresStore.
            return False
    # A ValueError, as InMemoryStore raises: the host's own error for a bad filter.
    raise ValueError(f"Unsupported operator: {operator}")


def _pushdown(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a LangGraph filter the MemOS filter DSL means exactly: string equality on
    a top-level value key (type-strict in both). The rest is checked in python afterwards."""
    out: dict[str, Any] = {}
    for k, f in (filter or {}).items():
        arg = f.get("$eq") if isinstance(f, dict) and set(f) == {"$eq"} else f
        if isinstance(arg, str) and k.isidentifier():
            out[f"value.{k}"] = arg
    return out


def _does_match(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f"Unsupported match type: {condition.match_type}")
    return all(p == "*" or n == p for n, p in pairs)


# ------------------------------------------------------------------ the store


class MemosStore(BaseStore):
    """A LangGraph store whose items are MemOS memories: a drop-in for ``InMemoryStore`` /
    ``PostgresStore`` (``get/put/delete/search/list_namespaces`` and their ``a*`` twins, TTL)
    that is persistent and searchable with MemOS hybrid search.

    Args:
        mem: the MemOS instance (its data folder holds the items).
        user_id: the MemOS user whose cube holds this store's items; two stores on one MemOS
            with different ``user_id`` are independent.
        index: which fields to index for semantic ``query`` search (``fields``, default
            ``["$"]``, the whole value). MemOS embeds with its own embedder, so ``embed`` and
            ``dims`` are accepted, for configs written for other stores, and not used. Without
            ``index`` a ``query`` is ignored, as in ``InMemoryStore``.
        ttl: ``default_ttl`` (minutes), ``refresh_on_read``, ``omit_expired`` (hide expired
            items before the sweep deletes them) and ``sweep_interval_minutes``.

    Example:
        >>> mem = MemOS("./memos-data")
        >>> store = MemosStore(mem, index={"fields": ["text"]})
        >>> store.put(("docs", "u1"), "d1", {"text": "Python tutorial"})
        >>> store.search(("docs",), query="python")[0].key
        'd1'
        >>> graph = builder.compile(store=store)  # nodes reach it as runtime.store
    """

    supports_ttl = True

    def __init__(
        self,
        mem: MemOS,
        *,
        user_id: str = "langgraph",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        if not isinstance(user_id, str) or not user_id:
            raise InvalidInputError("user_id must be a non-empty string")
        self.mem = mem
        self.user_id = user_id
        self.index_config = index
        self.ttl_config = ttl
        fields = (index or {}).get("fields") or ["$"]
        self._fields: list[tuple[str, str | list[str]]] = [
            (p, p if p == "$" else tokenize_path(p)) for p in fields
        ]
        self._records = f"langgraph-store:{user_id}"
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._clock = threading.Lock()
        # Writes of one (namespace, key) are serialised in this process: two interleaved puts
        # would each erase the other's memory and leave the record pointing at neither.
        self._key_locks: dict[str, threading.Lock] = {}
        self._key_locks_guard = threading.Lock()
        self._last = datetime.min.replace(tzinfo=timezone.utc)

    # -------------------------------------------------------------- drivers

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads first (they see the state before this batch's writes, as in
        ``InMemoryStore``), then the writes, the last put of a ``(namespace, key)`` winning."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._run(list(ops))
        raise InvalidInputError(
            "MemosStore's sync methods block; inside a running event loop use abatch, aget, "
            "asearch, aput, adelete or alist_namespaces instead"
        )

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch`` in a worker thread (MemOS calls are blocking I/O)."""
        return await asyncio.to_thread(self._run, list(ops))

    # -------------------------------------------------------------- the one implementation

    def _run(self, ops: list[Op]) -> list[Result]:
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, PutOp) and op.value is not None:
                if not op.namespace:
                    raise InvalidNamespaceError("Namespace cannot be empty.")
                if op.namespace[0] == "langgraph":
                    raise InvalidNamespaceError(
                        f'Root label for namespace cannot be "langgraph". Got: {op.namespace}'
                    )
        results: list[Result] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        refresh: dict[str, _Entry] = {}
        for op in ops:
            if isinstance(op, GetOp):
                entry = self._get(op.namespace, op.key)
                if entry is not None and op.refresh_ttl:
                    refresh[_record_key(entry.namespace, entry.key)] = entry
                results.append(entry.item() if entry is not None else None)
            elif isinstance(op, SearchOp):
                hits = self._search(op)
                if op.refresh_ttl:
                    refresh.update({_record_key(e.namespace, e.key): e for e, _ in hits})
                results.append([e.hit(score) for e, score in hits])
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            elif isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
                results.append(None)
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")
        self._refresh(refresh.values())
        for put in puts.values():
            if put.value is None:
                self._delete(put.namespace, put.key)
            else:
                self._put(put)
        return results

    # -------------------------------------------------------------- reads

    def _get(self, namespace: tuple[str, ...], key: str) -> _Entry | None:
        if not namespace:
            return None
        record = self.mem.store.get_record(self._records, _record_key(namespace, key))
        if record is None:
            return None
        try:
            item = self.mem.get_memory(str(record["id"]), user_id=self.user_id).data
        except MemoryNotFoundError:
            return None  # a record whose memory is gone: the item was deleted
        if self._omit_expired and self._expired(record):
            return None
        return _from_item(item)

    def _scan(self, prefix: Sequence[str], where: Mapping[str, Any] | None = None) -> list[_Entry]:
        """Every live item under ``prefix`` (per label) that ``where`` (filter DSL) selects."""
        dsl: dict[str, Any] = {"memory_type": MEMORY_TYPE, **(where or {})}
        if prefix:
            dsl["lg_prefixes"] = {"contains": _ns_code(prefix)}
        items: list[MemoryItem] = []
        offset = 0
        while True:
            page = self.mem.list_memories(self.user_id, filter=dsl, limit=_PAGE, offset=offset).data
            items += page.items
            if page.next_offset is None:
                break
            offset = page.next_offset
        return self._live([_from_item(i) for i in items])

    def _live(self, entries: list[_Entry]) -> list[_Entry]:
        """Drop memories that no record points at (left over by an interrupted put) when a
        ``(namespace, key)`` has two, and expired items when ``omit_expired`` is set."""
        seen: dict[tuple[tuple[str, ...], str], int] = {}
        for e in entries:
            seen[(e.namespace, e.key)] = seen.get((e.namespace, e.key), 0) + 1
        out = []
        for e in entries:
            record = None
            if seen[(e.namespace, e.key)] > 1 or (e.ttl is not None and self._omit_expired):
                record = self.mem.store.get_record(self._records, _record_key(e.namespace, e.key))
                if record is None or record.get("id") != e.memory_id:
                    continue
                if self._omit_expired and self._expired(record):
                    continue
            out.append(e)
        return out

    @staticmethod
    def _order(entries: list[_Entry]) -> list[_Entry]:
        """``InMemoryStore``'s order: namespaces by their first item, then items by first
        insertion (an overwrite keeps the place, a delete and put moves to the end)."""
        first: dict[tuple[str, ...], datetime] = {}
        for e in entries:
            if e.namespace not in first or e.created_at < first[e.namespace]:
                first[e.namespace] = e.created_at
        return sorted(entries, key=lambda e: (first[e.namespace], e.namespace, e.created_at, e.memory_id))

    def _search(self, op: SearchOp) -> list[tuple[_Entry, float | None]]:
        if not (op.query and self.index_config):
            found = [e for e in self._order(self._scan(op.namespace_prefix)) if _matches(e.value, op.filter)]
            return [(e, None) for e in found[op.offset : op.offset + op.limit]]
        kept: list[tuple[_Entry, float | None]] = []
        if op.limit > 0:
            cap = self.mem.limits.max_top_k
            top_k = cap if op.filter else max(1, min(cap, op.offset + op.limit))
            dsl: dict[str, Any] = {"memory_type": MEMORY_TYPE, "lg_indexed": True, **_pushdown(op.filter)}
            if op.namespace_prefix:
                dsl["lg_prefixes"] = {"contains": _ns_code(op.namespace_prefix)}
            hits = self.mem.search_memory(op.query, user_id=self.user_id, filter=dsl, top_k=top_k).data
            scored = [(_entry(h.id, h.key, h.info, h.created_at), h.score) for h in hits.memory_detail_list]
            live = {e.memory_id for e in self._live([e for e, _ in scored])}
            ranked: list[tuple[_Entry, float | None]] = []
            seen: set[tuple[tuple[str, ...], str]] = set()
            for e, score in scored:
                if e.memory_id in live and (e.namespace, e.key) not in seen and _matches(e.value, op.filter):
                    seen.add((e.namespace, e.key))
                    ranked.append((e, score))
            kept = ranked[op.offset : op.offset + op.limit]
        if len(kept) < op.limit:
            # As InMemoryStore: items without a vector fill the rest, unscored.
            rest = self._order(self._scan(op.namespace_prefix, {"lg_indexed": False}))
            kept += [(e, None) for e in rest if _matches(e.value, op.filter)][: op.limit - len(kept)]
        return kept

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        prefix: list[str] = []
        for c in conditions:
            if c.match_type == "prefix" and not prefix:
                for label in c.path:
                    if label == "*":
                        break
                    prefix.append(label)
        names = {e.namespace for e in self._scan(prefix)}
        found = [ns for ns in names if all(_does_match(c, ns) for c in conditions)]
        if op.max_depth is not None:
            found = list({ns[: op.max_depth] for ns in found})
        return sorted(found)[op.offset : op.offset + op.limit]

    # -------------------------------------------------------------- writes

    def _tick(self) -> datetime:
        """Now, strictly after the previous write's time: ``created_at`` orders the items of
        a namespace, and two puts must not tie on a coarse clock."""
        with self._clock:
            self._last = max(_now(), self._last + timedelta(microseconds=1))
            return self._last

    def _text(self, value: Mapping[str, Any], index: Any) -> str | None:
        """The text to index, or ``None`` when the item has no vector."""
        if index is False or self.index_config is None:
            return None
        paths = self._fields if index is None else [(p, tokenize_path(p)) for p in index]
        texts = [t for _, path in paths for t in get_text_at_path(value, path)]
        text = "\n".join(texts)
        return text if text.strip() else None

    def _key_lock(self, namespace: tuple[str, ...], key: str) -> threading.Lock:
        name = _record_key(namespace, key)
        with self._key_locks_guard:
            return self._key_locks.setdefault(name, threading.Lock())

    def _put(self, op: PutOp) -> None:
        with self._key_lock(op.namespace, op.key):
            self._put_locked(op)

    def _put_locked(self, op: PutOp) -> None:
        assert op.value is not None
        namespace, key = op.namespace, op.key
        code = _ns_code(namespace)
        old = self._get(namespace, key)
        now = self._tick()
        text = self._text(op.value, op.index)
        info = {
            "lg_ns": code,
            "lg_prefixes": [_ns_code(namespace[:i]) for i in range(1, len(namespace) + 1)],
            "lg_indexed": text is not None,
            "lg_created_at": (old.created_at if old is not None else now).isoformat(),
            "lg_ttl": op.ttl,
            "value": dict(op.value),
        }
        if text is None:
            text = json.dumps(op.value, ensure_ascii=False, sort_keys=True)
        item = self.mem.add_memory(
            text, user_id=self.user_id, memory_type=MEMORY_TYPE, key=key, info=info
        ).data
        try:
            self.mem.store.put_records(
                self._records,
                {_record_key(namespace, key): {"id": item.id, "expires_at": _expiry(op.ttl, now)}},
            )
        except BaseException:
            self.mem.delete_memory([item.id], hard=True)
            raise
        self._erase(code, key, keep=item.id)

    def _delete(self, namespace: tuple[str, ...], key: str) -> None:
        if not namespace:
            return
        with self._key_lock(namespace, key):
            self._erase(_ns_code(namespace), key)
            self.mem.store.put_records(self._records, {_record_key(namespace, key): None})

    def _erase(self, code: str, key: str, keep: str | None = None) -> None:
        where: dict[str, Any] = {"memory_type": MEMORY_TYPE, "lg_ns": code, "key": key}
        if keep is not None:
            where["id"] = {"ne": keep}
        self.mem.delete_memory(user_id=self.user_id, filter=where, hard=True)

    # -------------------------------------------------------------- TTL

    @property
    def _omit_expired(self) -> bool:
        return bool((self.ttl_config or {}).get("omit_expired", False))

    @staticmethod
    def _expired(record: Mapping[str, Any], now: datetime | None = None) -> bool:
        at = record.get("expires_at")
        return at is not None and datetime.fromisoformat(at) <= (now or _now())

    def _refresh(self, entries: Iterable[_Entry]) -> None:
        now = _now()
        records: dict[str, dict[str, Any] | None] = {
            _record_key(e.namespace, e.key): {"id": e.memory_id, "expires_at": _expiry(e.ttl, now)}
            for e in entries
            if e.ttl is not None
        }
        if records:
            self.mem.store.put_records(self._records, records)

    def sweep_ttl(self) -> int:
        """Delete the items whose TTL ran out; returns how many."""
        now = _now()
        dsl = {"memory_type": MEMORY_TYPE, "lg_ttl": {"exists": True}}
        expired: list[_Entry] = []
        offset = 0
        while True:
            page = self.mem.list_memories(self.user_id, filter=dsl, limit=_PAGE, offset=offset).data
            for item in page.items:
                e = _from_item(item)
                record = self.mem.store.get_record(self._records, _record_key(e.namespace, e.key))
                if record is not None and record.get("id") == e.memory_id and self._expired(record, now):
                    expired.append(e)
            if page.next_offset is None:
                break
            offset = page.next_offset
        for e in expired:
            self._delete(e.namespace, e.key)
        return len(expired)

    async def asweep_ttl(self) -> int:
        """``sweep_ttl`` in a worker thread."""
        return await asyncio.to_thread(self.sweep_ttl)

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep every ``sweep_interval_minutes`` (default: ``ttl.sweep_interval_minutes``,
        else 5) in a daemon thread until :meth:`stop_ttl_sweeper`. The future completes
        when the sweeper stops."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            raise InvalidInputError("the TTL sweeper is already running")
        interval = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        self._stop.clear()

        def loop() -> None:
            try:
                while not self._stop.wait(float(interval) * 60):
                    self.sweep_ttl()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._sweeper = threading.Thread(target=loop, name="memos-langgraph-ttl-sweeper", daemon=True)
        self._sweeper.start()
        return done

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; ``True`` when it has stopped within ``timeout``."""
        if self._sweeper is None:
            return True
        self._stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped


def _expiry(ttl: float | None, now: datetime) -> str | None:
    return (now + timedelta(minutes=ttl)).isoformat() if ttl is not None else None
