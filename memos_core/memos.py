"""The MemOS facade (layer 4): users, conversations, agents and the seed API.

Example:
    >>> from memos_core import MemOS
    >>> mem = MemOS("./memos-data")
    >>> r = mem.add_message([{"role": "user", "content": "I live in Paris"}], user_id="u1")
    >>> hits = mem.search_memory("where does the user live", user_id="u1")
    >>> hits.data.memory_detail_list[0].memory
    'u1 (...): I live in Paris'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from . import filters as F
from .embedders import CachingEmbedder, SentenceTransformerEmbedder
from .errors import (
    ConflictError,
    InvalidInputError,
    KnowledgeBaseNotFoundError,
    MemoryNotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    TaskNotFoundError,
)
from .ports import Embedder, EnqueueTask, MemoryStore, Op, PutItems
from .reader import Limits, WindowConfig, fast_items, refine, validate_messages
from .retrieval import RetrievalConfig, hybrid_search
from .scheduler import MemScheduler
from .schema import (
    AddData,
    Envelope,
    MemoryItem,
    MemoryStatus,
    Page,
    SearchData,
    Task,
    TaskStatus,
    VersionRecord,
    new_id,
    utcnow,
)
from .stores.sqlite import SqliteStore

__all__ = ["MemOS", "user_cube_id"]

_ID_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
FINE_ADD = "fine_add"


def _check_id(name: str, value: Any, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string of at most 256 printable characters")
    return value


def user_cube_id(user_id: str) -> str:
    """The cube that holds a user's own memories."""
    return f"user:{user_id}"


class MemOS:
    """Memory for many users, agents and conversations, in one data folder.

    Args:
        path: the data folder (created if missing) for the embedded SQLite store.
        store: a store to use instead (already ``setup()``); ``path`` is then ignored.
        embedder: defaults to the packaged all-MiniLM-L6-v2, cached by text hash.
        scheduler: ``"thread"`` runs the fine stage in a background thread of this process;
            ``"inline"`` runs it only when asked (``async_mode=False``, ``run_pending()``);
            ``"off"`` leaves tasks queued for another process.
        window / retrieval / limits: fast-stage windows, search knobs, request limits.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        store: MemoryStore | None = None,
        embedder: Embedder | None = None,
        scheduler: Literal["thread", "inline", "off"] = "thread",
        window: WindowConfig | None = None,
        retrieval: RetrievalConfig | None = None,
        limits: Limits | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        if scheduler not in ("thread", "inline", "off"):
            raise InvalidInputError(f"scheduler must be 'thread', 'inline' or 'off', not {scheduler!r}")
        if store is None:
            if path is None:
                raise InvalidInputError("MemOS needs a data folder path or a store")
            store = SqliteStore.from_path(path)
            store.setup()
        self.store = store
        if embedder is None:
            cache = store if isinstance(store, SqliteStore) else None
            embedder = CachingEmbedder(SentenceTransformerEmbedder(), persistent=cache)
        self.embedder = embedder
        self.window = window or WindowConfig()
        self.retrieval = retrieval or RetrievalConfig()
        self.limits = limits or Limits()
        self.scheduler = MemScheduler(store, {FINE_ADD: self._fine_add}, lease_seconds=lease_seconds)
        self._mode = scheduler
        if scheduler == "thread":
            self.scheduler.start()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the scheduler thread and close the store."""
        self.scheduler.stop()
        self.store.close()

    def __enter__(self) -> MemOS:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run_pending(self, timeout: float = 60.0) -> None:
        """Run queued background tasks in this thread until none is ready."""
        self.scheduler.run_until_idle(timeout)

    # ------------------------------------------------------------------ add

    def add_message(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        user_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        tags: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
        async_mode: bool = True,
    ) -> Envelope[AddData]:
        """Remember a conversation turn (or several).

        The fast stage has run when this returns: the memories are stored and searchable,
        and their ids are final. The fine stage runs as task ``data.task_id``; with
        ``async_mode=False`` this call waits for it.
        """
        _check_id("user_id", user_id)
        for name, value in (("conversation_id", conversation_id), ("agent_id", agent_id), ("app_id", app_id)):
            _check_id(name, value, required=False)
        tag_list = self._check_tags(tags)
        info_dict = self._check_info(info)
        if not async_mode and self._mode == "off":
            raise NotSupportedError(
                "async_mode=False needs a scheduler; this MemOS was opened with scheduler='off'"
            )
        msgs = validate_messages(messages, self.limits)
        items = fast_items(
            msgs,
            cube_id=user_cube_id(user_id),
            user_id=user_id,
            conversation_id=conversation_id,
            agent_id=agent_id,
            app_id=app_id,
            tags=tag_list,
            info=info_dict,
            embedding_model=self.embedder.model_id,
            window=self.window,
        )
        vectors = self.embedder.embed([i.memory for i in items])
        ids = [i.id for i in items]
        now = utcnow()
        task = Task(
            task_id=new_id(),
            kind=FINE_ADD,
            status=TaskStatus.QUEUED,
            created_at=now,
            updated_at=now,
            memory_ids=ids,
        )
        self.store.batch([PutItems(items, list(vectors)), EnqueueTask(task, {"memory_ids": ids})])
        status = TaskStatus.QUEUED
        if not async_mode:
            status = self.scheduler.wait(task.task_id).status
        else:
            self.scheduler.notify()
        return Envelope(data=AddData(task_id=task.task_id, memory_ids=ids, status=status))

    def _fine_add(self, payload: dict[str, Any]) -> Sequence[Op]:
        write, _merged = refine(
            self.store,
            payload["memory_ids"],
            dedup_threshold=self.retrieval.dedup_threshold,
            dedup_overlap=self.retrieval.dedup_overlap,
        )
        return [write]

    def _check_tags(self, tags: Sequence[str] | None) -> list[str]:
        if tags is None:
            return []
        if isinstance(tags, str) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise InvalidInputError("tags must be a list of non-empty strings")
        unique = list(dict.fromkeys(tags))
        if len(unique) > self.limits.max_tags or any(len(t) > 256 for t in unique):
            raise PayloadTooLargeError(f"at most {self.limits.max_tags} tags of at most 256 characters")
        return unique

    def _check_info(self, info: Mapping[str, Any] | None) -> dict[str, Any]:
        """``info`` must be a JSON object of bounded size (it is stored and filtered as JSON)."""
        if info is None:
            return {}
        if not isinstance(info, Mapping) or not all(isinstance(k, str) for k in info):
            raise InvalidInputError("info must be a dict with string keys")
        try:
            text = json.dumps(info, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"info must be JSON-serialisable: {exc}") from exc
        if len(text.encode("utf-8")) > self.limits.max_info_bytes:
            raise PayloadTooLargeError(f"info is larger than {self.limits.max_info_bytes} bytes as JSON")
        loaded: dict[str, Any] = json.loads(text)
        return loaded

    # ------------------------------------------------------------------ search

    def search_memory(
        self,
        query: str,
        *,
        user_id: str,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        knowledgebase_ids: Sequence[str] | None = None,
        top_k: int = 10,
    ) -> Envelope[SearchData]:
        """Hybrid search over the user's memories (activated ones unless ``filter`` says
        otherwise about ``status``), narrowed to a conversation or agent when given."""
        _check_id("user_id", user_id)
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError("query must be a non-empty string")
        if len(query) > self.limits.max_query_chars:
            raise PayloadTooLargeError(
                f"query has {len(query)} characters; the limit is {self.limits.max_query_chars}"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError("top_k must be a positive integer")
        if top_k > self.limits.max_top_k:
            raise PayloadTooLargeError(f"top_k={top_k} exceeds the limit of {self.limits.max_top_k}")
        if knowledgebase_ids:
            # Knowledge bases (shared cubes with grants) are not built yet: name the id
            # instead of silently searching nothing.
            raise KnowledgeBaseNotFoundError(f"no knowledge base {next(iter(knowledgebase_ids))!r}")
        where = self._scope(filter, conversation_id=conversation_id, agent_id=agent_id)
        hits = hybrid_search(
            self.store, self.embedder, [user_cube_id(user_id)], query.strip(), where,
            top_k=top_k, config=self.retrieval,
        )  # fmt: skip
        if hits:
            self.store.touch([h.id for h in hits], utcnow())
        return Envelope(data=SearchData(memory_detail_list=hits))

    @staticmethod
    def _scope(
        filter: Mapping[str, Any] | None, *, conversation_id: str | None = None, agent_id: str | None = None
    ) -> F.Node | None:
        user = F.parse_filter(filter)
        _check_id("conversation_id", conversation_id, required=False)
        _check_id("agent_id", agent_id, required=False)
        parts: list[F.Node | None] = [user]
        if user is None or "status" not in F.fields_of(user):
            parts.append(F.eq("status", MemoryStatus.ACTIVATED.value))
        if conversation_id is not None:
            parts.append(F.eq("conversation_id", conversation_id))
        if agent_id is not None:
            parts.append(F.eq("agent_id", agent_id))
        return F.and_(*parts)

    # ------------------------------------------------------------------ read

    def get_task_status(self, task_id: str) -> Envelope[list[Task]]:
        """``data[0].status`` is ``queued | running | completed | failed``."""
        _check_id("task_id", task_id)
        task = self.scheduler.queue.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(f"no task {task_id!r}")
        return Envelope(data=[task])

    def get_memory(self, memory_id: str) -> Envelope[MemoryItem]:
        """One memory by id, whatever its status (ids never 404 unless hard-deleted)."""
        return Envelope(data=self._get(memory_id))

    def _get(self, memory_id: str) -> MemoryItem:
        _check_id("memory_id", memory_id)
        item = self.store.get([memory_id])[0]
        if item is None:
            raise MemoryNotFoundError(f"no memory {memory_id!r}")
        return item

    def list_memories(
        self,
        user_id: str,
        *,
        filter: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Envelope[Page]:
        """A page of the user's memories, newest first; follow ``data.next_offset``."""
        _check_id("user_id", user_id)
        if not (isinstance(limit, int) and 1 <= limit <= 1000) or not (
            isinstance(offset, int) and offset >= 0
        ):
            raise InvalidInputError("limit must be 1..1000 and offset >= 0")
        where = self._scope(filter, conversation_id=conversation_id, agent_id=agent_id)
        items, total = self.store.list_items([user_cube_id(user_id)], where, limit=limit, offset=offset)
        nxt = offset + len(items) if offset + len(items) < total else None
        return Envelope(data=Page(items=items, total=total, offset=offset, limit=limit, next_offset=nxt))

    # ------------------------------------------------------------------ write

    def update_memory(
        self,
        memory_id: str,
        *,
        memory: str | None = None,
        tags: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Envelope[MemoryItem]:
        """Change a memory's text, tags or info. Bumps ``version`` and keeps the previous
        version in ``history``; a new text is re-embedded."""
        if memory is None and tags is None and info is None:
            raise InvalidInputError("nothing to update: give memory, tags or info")
        if memory is not None and (not isinstance(memory, str) or not memory.strip()):
            raise InvalidInputError("memory must be a non-empty string")
        if memory is not None and len(memory) > self.limits.max_message_chars:
            raise PayloadTooLargeError(
                f"memory has {len(memory)} characters; the limit is {self.limits.max_message_chars}"
            )
        tag_list = self._check_tags(tags) if tags is not None else None
        info_dict = self._check_info(info) if info is not None else None
        vector = self.embedder.embed([memory])[0] if memory is not None else None

        for attempt in Retrying(
            retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(5), reraise=True
        ):
            with attempt:
                old = self._get(memory_id)
                if old.status == MemoryStatus.DELETED.value:
                    raise InvalidInputError(f"memory {memory_id!r} is deleted")
                record = VersionRecord(
                    version=old.version, memory=old.memory, tags=old.tags, info=old.info, status=old.status
                )
                new = old.evolve(
                    memory=memory if memory is not None else old.memory,
                    tags=tag_list if tag_list is not None else old.tags,
                    info=info_dict if info_dict is not None else old.info,
                    version=old.version + 1,
                    history=[*old.history, record],
                    updated_at=utcnow(),
                    embedding_model=self.embedder.model_id if vector is not None else old.embedding_model,
                )
                self.store.batch([PutItems([new], [vector], [old.revision])])
        return Envelope(data=new)

    def delete_memory(
        self,
        memory_ids: Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        filter: Mapping[str, Any] | None = None,
        hard: bool = False,
    ) -> Envelope[dict[str, int]]:
        """Delete by ids, or all of a user's memories (narrowed by ``filter``).

        Give exactly one selector: ``memory_ids`` or ``user_id``. Soft delete (the default)
        keeps the id resolvable with ``status="deleted"``; ``hard=True`` erases the rows.
        """
        if (memory_ids is None) == (user_id is None):
            raise InvalidInputError("give exactly one selector: memory_ids or user_id")
        if memory_ids is not None:
            if filter is not None:
                raise InvalidInputError("filter narrows a user_id delete; it cannot go with memory_ids")
            if isinstance(memory_ids, str) or not memory_ids:
                raise InvalidInputError("memory_ids must be a non-empty list of ids")
            ids = [str(_check_id("memory_id", m)) for m in memory_ids]
            found = self.store.get(ids)
            missing = [i for i, item in zip(ids, found, strict=True) if item is None]
            if missing:
                raise MemoryNotFoundError(
                    f"no memory {missing[0]!r}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            cubes = list(dict.fromkeys(item.cube_id for item in found if item is not None))
            count = self.store.delete(cubes, ids=ids, hard=hard)
        else:
            uid = str(_check_id("user_id", user_id))
            where = F.parse_filter(filter)
            if where is None:
                where = F.parse_filter({"id": {"exists": True}})
            count = self.store.delete([user_cube_id(uid)], where=where, hard=hard)
        return Envelope(data={"deleted": count})

    def add_feedback(
        self, user_id: str, conversation_id: str | None, feedback_content: str, **kwargs: Any
    ) -> Envelope[dict[str, Any]]:
        """Correct memories from user feedback. Needs an LLM to find what the feedback
        targets; until the LLM-backed MemReader exists this raises NotSupportedError."""
        _check_id("user_id", user_id)
        raise NotSupportedError(
            "add_feedback needs an LLM-backed MemReader, which is not configured in this build; "
            "use update_memory or delete_memory to correct memories directly"
        )

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Items per cube and status, tasks per status, store size."""
        stats = getattr(self.store, "stats", None)
        out: dict[str, Any] = stats() if stats is not None else {}
        out["embedding_model"] = self.embedder.model_id
        return out
