"""Protocols the engine is written against (layer 1): stores, embedders, task queues.

A :class:`MemoryStore` is one abstract method, :meth:`MemoryStore.batch`, over typed
operations; ``put``/``get``/``search_text``/... are one-line wrappers on the base class.
A batch is applied atomically: either every write in it happens or none does. Optional
features are capability flags on the class, so conformance tests can skip what a backend
does not claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .filters import Node, evaluate
from .schema import MemoryItem, Task

__all__ = [
    "CompleteTask",
    "DeleteItems",
    "Embedder",
    "EnqueueTask",
    "GetItems",
    "GetRecords",
    "ListItems",
    "ListRecords",
    "MemoryStore",
    "Op",
    "PutItems",
    "PutRecords",
    "ScoredId",
    "TaskQueue",
    "TextSearch",
    "TouchItems",
    "VectorSearch",
]


# ----------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class PutItems:
    """Insert or replace items (matched by id). ``embeddings`` aligns with ``items``;
    a ``None`` entry keeps the stored vector of an existing item."""

    items: Sequence[MemoryItem]
    embeddings: Sequence[np.ndarray | None] | None = None
    #: Optimistic concurrency: per item, the ``revision`` the stored row must still have
    #: (``None`` = no check; ``0`` = must not exist yet). A mismatch raises
    #: :class:`~memos_core.errors.ConflictError` and the whole batch is rolled back.
    if_revisions: Sequence[int | None] | None = None
    #: The batch re-embeds the whole cube into another embedding space (``memos reindex``):
    #: skip the check that refuses vectors of a model other than the cube's.
    replace_space: bool = False


@dataclass(frozen=True)
class GetItems:
    """Fetch items by id; the result lists an item or ``None`` per id, in order.

    ``cached``: the store may hand out items it keeps between reads (the SQLite store's decoded
    items), shared with every other cached reader of the same version. For hot internal paths
    (search) that never let an item out as it is; nobody may mutate such an item, not even its
    nested ``info`` or lists. Without it every item is the caller's own."""

    ids: Sequence[str]
    cached: bool = False


@dataclass(frozen=True)
class DeleteItems:
    """Delete items in ``cube_ids`` selected by ``ids`` and/or ``where`` (AND-ed).

    Soft delete sets ``status="deleted"`` (the id still resolves); ``hard`` erases the rows.
    The result is the number of items affected.
    """

    cube_ids: Sequence[str]
    ids: Sequence[str] | None = None
    where: Node | None = None
    hard: bool = False


@dataclass(frozen=True)
class ListItems:
    """Items in ``cube_ids`` matching ``where``, newest first; result ``(items, total)``."""

    cube_ids: Sequence[str]
    where: Node | None = None
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class TextSearch:
    """BM25 over the item text; result: best-first ``ScoredId`` (higher is better)."""

    cube_ids: Sequence[str]
    query: str
    where: Node | None = None
    limit: int = 10


@dataclass(frozen=True)
class VectorSearch:
    """Cosine similarity against stored vectors; result: best-first ``ScoredId``."""

    cube_ids: Sequence[str]
    vector: np.ndarray
    where: Node | None = None
    limit: int = 10
    #: The query's embedding model; a cube of another model is an error, not a silent mix.
    model_id: str | None = None


@dataclass(frozen=True)
class TouchItems:
    """Record that items were read: ``access_count += 1``, ``last_accessed_at = at``."""

    ids: Sequence[str]
    at: datetime


@dataclass(frozen=True)
class EnqueueTask:
    """Create a durable task in the same transaction as the writes around it."""

    task: Task
    payload: dict[str, Any]


@dataclass(frozen=True)
class CompleteTask:
    """Mark a task completed in the same transaction as the writes before it. With
    ``worker``, only while that worker still holds the task's lease (else ConflictError)."""

    task_id: str
    worker: str | None = None


@dataclass(frozen=True)
class PutRecords:
    """Write small JSON records (cube registry, grants, documents, working sets) under
    ``namespace``; a ``None`` value deletes the key. Atomic with the rest of the batch."""

    namespace: str
    records: Mapping[str, dict[str, Any] | None]
    #: create only: a key that exists already fails the whole batch with ConflictError
    #: (nothing of it is applied), so two writers racing on one key cannot both succeed.
    if_absent: bool = False


@dataclass(frozen=True)
class GetRecords:
    """Records by key; the result lists a dict or ``None`` per key, in order."""

    namespace: str
    keys: Sequence[str]


@dataclass(frozen=True)
class ListRecords:
    """Records whose key starts with ``prefix``, in key order: ``[(key, value), ...]``."""

    namespace: str
    prefix: str = ""
    limit: int = 10_000


Op = (
    PutItems
    | GetItems
    | DeleteItems
    | ListItems
    | TextSearch
    | VectorSearch
    | TouchItems
    | EnqueueTask
    | CompleteTask
    | PutRecords
    | GetRecords
    | ListRecords
)


@dataclass(frozen=True, order=True)
class ScoredId:
    score: float
    id: str = field(compare=False)


# ----------------------------------------------------------------------------- protocols


class MemoryStore:
    """Base class of storage backends. Subclasses implement :meth:`batch` (and may
    override the wrappers for speed). Call :meth:`setup` once before use."""

    #: The backend keeps a durable task table (implements :class:`TaskQueue`).
    supports_tasks: bool = False
    #: Several OS processes may use the same store at once.
    supports_multiprocess: bool = False
    #: ``batch`` applies all writes of one call atomically.
    supports_transactions: bool = False

    def setup(self) -> None:
        """Create tables/collections. Idempotent."""

    def close(self) -> None:
        """Release connections."""

    def batch(self, ops: Sequence[Op]) -> list[Any]:
        """Apply ``ops`` in order and return one result per op."""
        raise NotImplementedError

    # One-line conveniences over batch().
    def put(self, items: Sequence[MemoryItem], embeddings: Sequence[np.ndarray | None] | None = None) -> None:
        self.batch([PutItems(items, embeddings)])

    def get(self, ids: Sequence[str], *, cached: bool = False) -> list[MemoryItem | None]:
        result: list[MemoryItem | None] = self.batch([GetItems(ids, cached=cached)])[0]
        return result

    def delete(
        self,
        cube_ids: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        where: Node | None = None,
        hard: bool = False,
    ) -> int:
        count: int = self.batch([DeleteItems(cube_ids, ids, where, hard)])[0]
        return count

    def list_items(
        self, cube_ids: Sequence[str], where: Node | None = None, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[MemoryItem], int]:
        result: tuple[list[MemoryItem], int] = self.batch([ListItems(cube_ids, where, limit, offset)])[0]
        return result

    def search_text(
        self, cube_ids: Sequence[str], query: str, where: Node | None = None, *, limit: int = 10
    ) -> list[ScoredId]:
        result: list[ScoredId] = self.batch([TextSearch(cube_ids, query, where, limit)])[0]
        return result

    def search_text_items(
        self, cube_ids: Sequence[str], query: str, where: Node | None = None, *, limit: int = 10
    ) -> list[tuple[ScoredId, MemoryItem]]:
        """:meth:`search_text` with each hit's item (``get(cached=True)``: shared, never to be
        mutated). Here the items are read after the search and a hit whose item no longer
        matches (changed in between) is dropped, then more are asked for until ``limit`` are
        kept or the matches run out; a store with transactions reads both at once."""
        want = limit
        while True:
            hits = self.search_text(cube_ids, query, where, limit=want)
            items = self.get([h.id for h in hits], cached=True)
            kept = [(h, i) for h, i in zip(hits, items, strict=True) if i is not None and evaluate(where, i)]
            if len(kept) >= limit or len(hits) < want:
                return kept[:limit]
            want *= 2

    def search_vector(
        self, cube_ids: Sequence[str], vector: np.ndarray, where: Node | None = None, *, limit: int = 10
    ) -> list[ScoredId]:
        result: list[ScoredId] = self.batch([VectorSearch(cube_ids, vector, where, limit)])[0]
        return result

    def touch(self, ids: Sequence[str], at: datetime) -> None:
        self.batch([TouchItems(ids, at)])

    def get_embeddings(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of ``ids`` (those that have one)."""
        raise NotImplementedError

    def put_records(self, namespace: str, records: Mapping[str, dict[str, Any] | None]) -> None:
        self.batch([PutRecords(namespace, records)])

    def get_record(self, namespace: str, key: str) -> dict[str, Any] | None:
        result: list[dict[str, Any] | None] = self.batch([GetRecords(namespace, [key])])[0]
        return result[0]

    def list_records(
        self, namespace: str, prefix: str = "", *, limit: int = 10_000
    ) -> list[tuple[str, dict[str, Any]]]:
        result: list[tuple[str, dict[str, Any]]] = self.batch([ListRecords(namespace, prefix, limit)])[0]
        return result


@runtime_checkable
class TaskQueue(Protocol):
    """Durable tasks: enqueue, claim with a lease, finish. Claimed tasks whose lease ran out
    (the worker died) are claimed again."""

    def claim_task(
        self, worker: str, *, lease_seconds: float, max_attempts: int | None = None
    ) -> tuple[Task, dict[str, Any]] | None: ...

    def renew_task(self, task_id: str, worker: str, *, lease_seconds: float) -> bool: ...

    def fail_task(
        self, task_id: str, error: str, *, retry_in: float | None, worker: str | None = None
    ) -> None: ...

    def get_task(self, task_id: str) -> Task | None: ...

    def pending_tasks(self) -> int: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors."""

    @property
    def model_id(self) -> str:
        """A fingerprint of the model (name + dimension), stored on every item."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Shape ``(len(texts), dim)``, float32, L2-normalised rows."""
        ...
