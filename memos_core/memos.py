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

import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from . import filters as F
from .access import ReadLog
from .cube import CUBES, DOCS, GRANTS, GRANTS_BY_USER, IDEMPOTENCY, WORKING, MemCube, forms_summary
from .cube import SEP as _SEP
from .embedders import CachingEmbedder, SentenceTransformerEmbedder
from .errors import (
    ConflictError,
    CubeNotFoundError,
    InvalidInputError,
    KnowledgeBaseNotFoundError,
    LLMError,
    MemoryNotFoundError,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    TaskNotFoundError,
)
from .facts import extract_facts, slot_of
from .lifecycle import FactDraft, archive, next_version, plan_facts, rollback
from .llms import LLM
from .ports import (
    DeleteItems,
    Embedder,
    EnqueueTask,
    ListItems,
    MemoryStore,
    Op,
    PutItems,
    PutRecords,
    TaskQueue,
)
from .reader import (
    Limits,
    WindowConfig,
    context_lines,
    extend_context,
    fast_items,
    image_items,
    item_vectors,
    llm_facts,
    refine,
    rewrite_context,
    rule_facts,
    validate_messages,
)
from .retrieval import RetrievalConfig, SearchMode, check_mode, hybrid_search
from .scheduler import MemScheduler
from .schema import (
    AddData,
    Envelope,
    MemoryItem,
    MemoryStatus,
    Page,
    SearchData,
    SourceRef,
    Task,
    TaskStatus,
    new_id,
    parse_time,
    utcnow,
)
from .stores.sqlite import SqliteStore
from .text import keywords, tokenize

__all__ = ["MemOS", "kb_cube_id", "user_cube_id"]

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
FINE_ADD = "fine_add"


#: The fields a search's reads change: a filter on them waits for pending reads.
_READ_FIELDS = ("access_count", "last_accessed_at")


def _mentions(value: Any, *names: str) -> bool:
    """Whether a filter (a mapping, possibly nested in lists) names one of the fields ``names``."""
    if isinstance(value, Mapping):
        return any(k in names or _mentions(v, *names) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, *names) for v in value)
    return False


def _check_id(name: str, value: Any, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string of at most 256 printable characters")
    return value


def _check_scope(user_id: str, conversation_id: str | None, agent_id: str | None, app_id: str | None) -> None:
    _check_id("user_id", user_id)
    for name, value in (("conversation_id", conversation_id), ("agent_id", agent_id), ("app_id", app_id)):
        _check_id(name, value, required=False)


def _ranked_uses(ws: Mapping[str, Any]) -> list[tuple[str, float]]:
    """A working set's used memories with their counts, best first (a list of pairs; sets
    written before this shape kept a dict, read in key order)."""
    used = ws.get("used") or []
    pairs = used.items() if isinstance(used, Mapping) else used
    return [(str(i), float(c)) for i, c in pairs]


def user_cube_id(user_id: str) -> str:
    """The cube that holds a user's own memories."""
    return f"user:{user_id}"


def kb_cube_id(kb_id: str) -> str:
    """The cube that holds a knowledge base."""
    return f"kb:{kb_id}"


_RETRACT = re.compile(
    r"^(?:no[,.!]?\s+|actually[,]?\s+)?(?:please\s+)?(?:forget\s+(?:that\s+|about\s+)?|"
    r"(?:that'?s|that\s+is|it'?s)\s+(?:wrong|not\s+true|incorrect|outdated)[:,.!]?\s*(?:that\s+)?|"
    r"i\s+no\s+longer\s+|i\s+(?:don'?t|do\s+not)\s+(?P<verb>\w+)\s+(?P<rest>.+?)\s+any\s*more\b)(?P<what>.*)$",
    re.I,
)


class MemOS:
    """Memory for many users, agents and conversations, in one data folder.

    Args:
        path: the data folder (created if missing) for the embedded SQLite store.
        store: a store to use instead (already ``setup()``). One without a task queue
            (``supports_tasks = False``, e.g. :class:`~memos_core.stores.weaviate.WeaviateStore`)
            needs ``path`` too: background tasks then live in a SQLite store there (see
            :class:`~memos_core.scheduler.MemScheduler` for the order of the two writes).
            A store with its own queue ignores ``path``.
        embedder: defaults to the packaged all-MiniLM-L6-v2, cached by text hash.
        scheduler: ``"thread"`` runs the fine stage in a background thread of this process;
            ``"inline"`` runs it only when asked (``async_mode=False``, ``run_pending()``);
            ``"off"`` leaves tasks queued for another process.
        window / retrieval / limits: fast-stage windows, search knobs, request limits.
        llm: refines chat windows into facts (third person, absolute dates) and reads
            feedback; without one, the deterministic rules of :mod:`memos_core.facts` do.
            When the LLM keeps answering badly or cannot be reached, the rules take over.
        vision_llm: captions images (an LLM with ``supports_vision``); OCR needs none.
        allow_local_images: image parts may name local files (off for a server).
        allow_private_image_hosts: image URLs may point at loopback or private-network hosts
            (off for a server: a caller must not make it probe its own network).
        working_size: how many memories a conversation's working set holds.
        read_delay: seconds a search's access statistics may wait before they are written,
            batched with other searches' (see :mod:`memos_core.access`; 0: in the search's own
            write). Calls that show items or filter on ``access_count`` write them first.
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
        llm: LLM | None = None,
        vision_llm: LLM | None = None,
        llm_attempts: int = 2,
        allow_local_images: bool = True,
        allow_private_image_hosts: bool = True,
        working_size: int = 16,
        read_delay: float = 0.5,
    ) -> None:
        if scheduler not in ("thread", "inline", "off"):
            raise InvalidInputError(f"scheduler must be 'thread', 'inline' or 'off', not {scheduler!r}")
        if store is None:
            if path is None:
                raise InvalidInputError("MemOS needs a data folder path or a store")
            store = SqliteStore.from_path(path)
            store.setup()
        queue: SqliteStore | None = None
        if not isinstance(store, TaskQueue):
            if path is None:
                raise InvalidInputError(
                    f"{type(store).__name__} keeps no background tasks: MemOS(path, store=...) needs "
                    "a data folder path for them"
                )
            queue = SqliteStore.from_path(path)
            queue.setup()
        self.store = store
        self._task_store = queue  # the separate task queue, closed with this MemOS
        if embedder is None:
            # the SQLite store keeps its items' vectors as a persistent cache; with another
            # store the cache lives in memory only (an item's vector is stored with the item)
            cache = store if isinstance(store, SqliteStore) else None
            embedder = CachingEmbedder(SentenceTransformerEmbedder(), persistent=cache)
        self.embedder = embedder
        self.window = window or WindowConfig()
        self.retrieval = retrieval or RetrievalConfig()
        self.limits = limits or Limits()
        self.llm = llm
        self.vision_llm = vision_llm
        self.llm_attempts = llm_attempts
        self.allow_local_images = allow_local_images
        self.allow_private_image_hosts = allow_private_image_hosts
        self.working_size = max(2, working_size)
        self.scheduler = MemScheduler(
            store, {FINE_ADD: self._fine_add}, lease_seconds=lease_seconds, queue=queue
        )
        self._reads = ReadLog(store, delay=read_delay)
        self._idem_locks = [threading.Lock() for _ in range(64)]
        self._mode = scheduler
        if scheduler == "thread":
            self.scheduler.start()

    # ------------------------------------------------------------------ lifecycle

    def flush_reads(self) -> None:
        """Write the access statistics of recent searches now (they are otherwise written
        within ``read_delay`` seconds, and before any call that shows items)."""
        self._reads.flush()

    def close(self) -> None:
        """Stop the scheduler thread, write pending access statistics, close the store."""
        self.scheduler.stop()
        try:
            self._reads.close()
        finally:
            self.store.close()
        if self._task_store is not None:
            self._task_store.close()

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
        cube_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Envelope[AddData]:
        """Remember a conversation turn (or several).

        The fast stage has run when this returns: the memories are stored and searchable,
        and their ids are final. The fine stage runs as task ``data.task_id``; with
        ``async_mode=False`` this call waits for it. ``cube_id`` writes into a cube another
        user shared with ``user_id`` read-write (default: the user's own cube).

        ``idempotency_key``: a retried add with the same key (and the same request) returns
        the first add's answer and stores nothing twice. The same key with a different
        request is an error. On the SQLite store the key is recorded in the add's own
        transaction. On a store without transactions (Weaviate) the key is claimed first,
        with the answer (task id and memory ids chosen up front), and the memories written
        after: a racing retry finds the claim and returns that answer, even while the first
        add is still writing (the ids are final; the memories appear when it is done).
        """
        if idempotency_key is None:
            return self._add_message(
                messages, user_id, conversation_id, agent_id, app_id, tags, info, async_mode, cube_id, None
            )
        if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 200:
            raise InvalidInputError("idempotency_key must be a string of 1-200 characters")
        request = json.dumps(
            [list(messages), user_id, conversation_id, agent_id, app_id, tags, info, cube_id],
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(request.encode()).hexdigest()
        key = f"{user_cube_id(user_id)}{_SEP}{idempotency_key}"
        stripe = hashlib.sha256(key.encode()).hexdigest()
        # a concurrent retry of the same key waits for the first and then reuses its answer;
        # other keys take other stripes and run in parallel
        with self._idem_locks[int(stripe[:8], 16) % len(self._idem_locks)]:
            prior = self.store.get_record(IDEMPOTENCY, key)
            if prior is None:
                try:
                    return self._add_message(
                        messages,
                        user_id,
                        conversation_id,
                        agent_id,
                        app_id,
                        tags,
                        info,
                        async_mode,
                        cube_id,
                        (key, digest),
                    )
                except ConflictError:
                    # Another process recorded this key first (the record is created only if
                    # absent): answer theirs. On SQLite the record is in the add's transaction,
                    # so ours rolled back whole; on a store without transactions the key was
                    # claimed before anything else was written (see _add_message), so ours
                    # wrote nothing.
                    prior = self.store.get_record(IDEMPOTENCY, key)
                    if prior is None:
                        raise
        if prior["request"] != digest:
            raise InvalidInputError(f"idempotency key {idempotency_key!r} was used for another request")
        data = AddData(**prior["data"])
        task = self.scheduler.queue.get_task(data.task_id)
        if task is not None:
            data = data.model_copy(update={"status": task.status})
        return Envelope(data=data)

    def _add_message(
        self,
        messages: Sequence[Mapping[str, Any]],
        user_id: str,
        conversation_id: str | None,
        agent_id: str | None,
        app_id: str | None,
        tags: Sequence[str] | None,
        info: Mapping[str, Any] | None,
        async_mode: bool,
        cube_id: str | None,
        idempotency: tuple[str, str] | None,
    ) -> Envelope[AddData]:
        _check_scope(user_id, conversation_id, agent_id, app_id)
        tag_list = self._check_tags(tags)
        info_dict = self._check_info(info)
        if not async_mode and self._mode == "off":
            raise NotSupportedError(
                "async_mode=False needs a scheduler; this MemOS was opened with scheduler='off'"
            )
        if cube_id is not None and str(cube_id).startswith("kb:"):
            raise InvalidInputError("knowledge bases take documents: use add_document, not add_message")
        target = self._write_target(user_id, cube_id)
        msgs = validate_messages(messages, self.limits)
        scope: dict[str, Any] = dict(
            cube_id=target,
            user_id=user_id,
            conversation_id=conversation_id,
            agent_id=agent_id,
            app_id=app_id,
            tags=tag_list,
            info=info_dict,
            embedding_model=self.embedder.model_id,
        )
        previous = self._previous_turns(scope)
        items = fast_items(msgs, window=self.window, previous=previous, **scope)
        images = image_items(msgs, **scope)
        items += [item for item, _ in images]
        vectors = item_vectors(self.embedder, items, fast=True)  # the fine stage adds the context
        ids = [i.id for i in items]
        now = utcnow()
        task = Task.queued(FINE_ADD, ids, at=now)
        payload: dict[str, Any] = {"memory_ids": ids}
        if previous:  # the fine stage adds these turns to the context of the ones before
            payload["previous"] = [i.id for i in previous]
        if images:
            payload["images"] = {item.id: url for item, url in images}
        ops: list[Op] = [PutItems(items, list(vectors)), EnqueueTask(task, payload)]
        if conversation_id is not None:  # the writer's working set, even in a shared cube
            ops.append(self._working_update(user_cube_id(user_id), conversation_id, recent=ids))
        if idempotency is None:
            self.scheduler.apply(ops)  # one transaction, or the items first and then the task
        else:
            answer = AddData(task_id=task.task_id, memory_ids=ids, status=TaskStatus.QUEUED)
            record = {
                "request": idempotency[1],
                "data": answer.model_dump(mode="json"),
                "at": now.isoformat(),
            }
            self._apply_idempotent(ops, idempotency[0], record)
        status = TaskStatus.QUEUED
        if not async_mode:
            status = self.scheduler.wait(task.task_id).status
        else:
            self.scheduler.notify()
        return Envelope(data=AddData(task_id=task.task_id, memory_ids=ids, status=status))

    def _apply_idempotent(self, ops: list[Op], key: str, record: dict[str, Any]) -> None:
        """Apply an add's ``ops`` and record its idempotency ``key`` (created only if absent:
        a ConflictError when another add holds it, with nothing of this add written).

        On a transactional store that is also the queue (SQLite), the record goes into the
        add's transaction: a retry finds both or neither. Otherwise the batch would be
        applied op by op, and a racing add that lost the key could already have written its
        items, so the key is claimed first (a ``pending`` record with the final answer), then
        the add is applied, then the record is marked done. A write that fails after the
        claim releases it (so a retry adds again instead of answering memories that may be
        missing); a crash after the claim leaves it ``pending``, and a retry answers it."""
        if self.store.supports_transactions and not self.scheduler.separate_queue:
            self.scheduler.apply([*ops, PutRecords(IDEMPOTENCY, {key: record}, if_absent=True)])
            return
        self.store.batch([PutRecords(IDEMPOTENCY, {key: {**record, "pending": True}}, if_absent=True)])
        try:
            self.scheduler.apply(ops)  # the items first and then the task
        except BaseException:
            try:
                self.store.batch([PutRecords(IDEMPOTENCY, {key: None})])
            except Exception:  # the claim stays pending; the first error is the one to report
                log.exception("could not release idempotency key %r", key)
            raise
        self.store.batch([PutRecords(IDEMPOTENCY, {key: record})])

    def add_memory(
        self,
        memory: str,
        *,
        user_id: str,
        memory_type: str = "long_term",
        key: str | None = None,
        tags: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        sources: Sequence[SourceRef] | None = None,
        event_time: datetime | None = None,
        cube_id: str | None = None,
    ) -> Envelope[MemoryItem]:
        """Store one memory as given (already a clean record: a tool call, a note from the
        application), searchable when this returns; no fine stage runs on it.
        ``memory_type`` may be any non-empty name (``"tool"``, ``"preference"``, ...)."""
        _check_scope(user_id, conversation_id, agent_id, app_id)
        if not isinstance(memory, str) or not memory.strip():
            raise InvalidInputError("memory must be a non-empty string")
        if len(memory) > self.limits.max_message_chars:
            raise PayloadTooLargeError(f"memory is longer than {self.limits.max_message_chars} characters")
        if not isinstance(memory_type, str) or not memory_type.strip() or len(memory_type) > 64:
            raise InvalidInputError("memory_type must be a non-empty name of at most 64 characters")
        target = self._write_target(user_id, cube_id)
        now = utcnow()
        item = MemoryItem(
            cube_id=target,
            user_id=user_id,
            agent_id=agent_id,
            conversation_id=conversation_id,
            app_id=app_id,
            memory=memory,
            key=key,
            memory_type=memory_type,
            mode="fine",
            tags=self._check_tags(tags),
            info=self._check_info(info),
            keywords=keywords(memory),
            sources=list(sources or []),
            created_at=now,
            updated_at=now,
            event_time=event_time or now,
            embedding_model=self.embedder.model_id,
        )
        self.store.batch([PutItems([item], [self.embedder.embed([memory])[0]], [0])])
        return Envelope(data=item)

    def _previous_turns(self, scope: Mapping[str, Any]) -> list[MemoryItem]:
        """The latest chat turns (oldest first, at most ``window.context``) of the same
        conversation in the same cube *and* scope (agent, app, tags, info): the context before
        an add's first turns. A turn merged into an older duplicate was still said here."""
        conversation_id = scope["conversation_id"]
        if conversation_id is None or self.window.context == 0:
            return []
        where = F.and_(
            F.eq("conversation_id", conversation_id),
            F.eq("agent_id", scope["agent_id"]),
            F.eq("app_id", scope["app_id"]),
            F.eq("memory_type", "long_term"),
            F.parse_filter({"status": {"in": [MemoryStatus.ACTIVATED.value, MemoryStatus.ARCHIVED.value]}}),
        )
        page, _ = self.store.batch([ListItems([scope["cube_id"]], where, 8 * self.window.context)])[0]
        found = [
            i
            for i in page  # newest first; facts read from turns have a "memory" source too
            if i.sources
            and all(s.type == "chat" for s in i.sources)
            and (i.status == MemoryStatus.ACTIVATED.value or i.merged_into is not None)
            and sorted(i.tags) == sorted(scope["tags"])
            and i.info == scope["info"]
        ]
        return found[: self.window.context][::-1]

    def _write_target(self, user_id: str, cube_id: str | None) -> str:
        """The cube a write of ``user_id`` goes to (its own by default), checked writable."""
        target = user_cube_id(user_id) if cube_id is None else str(_check_id("cube_id", cube_id))
        self._require(user_id, target, "write")
        return target

    def _fine_add(self, payload: dict[str, Any]) -> Sequence[Op]:
        """The fine stage: deterministic enrichment and de-duplication of the fast items,
        facts (by the LLM, else the rules) superseding older ones by slot, images read."""
        write, _merged = refine(
            self.store,
            payload["memory_ids"],
            dedup_threshold=self.retrieval.dedup_threshold,
            dedup_overlap=self.retrieval.dedup_overlap,
        )
        refined = list(write.items)
        vectors: list[Any] = list(write.embeddings or [None] * len(refined))
        images: dict[str, str] = payload.get("images", {})
        drafts: list[FactDraft] = []
        for idx, item in enumerate(refined):
            if item.id in images:
                refined[idx], vectors[idx] = self._read_image(item, images[item.id])
            elif item.status == MemoryStatus.ACTIVATED.value:
                drafts += self._facts_of(item)
        # The fast stage embedded this add's turns alone; their vectors now get the turns around
        # them (an older duplicate merged into here has its contextual vector already).
        mine = set(payload["memory_ids"])
        todo = [
            n for n, i in enumerate(refined) if i.id in mine and i.context is not None and vectors[n] is None
        ]
        for n, vec in zip(todo, item_vectors(self.embedder, [refined[n] for n in todo]), strict=True):
            vectors[n] = vec
        self._extend_previous(
            payload.get("previous", []), [i for i in refined if i.id in mine], refined, vectors
        )
        first = PutItems(refined, vectors, write.if_revisions)
        facts, _report = plan_facts(self.store, self.embedder, drafts, exclude=[i.id for i in refined])
        return [first, facts]

    def _extend_previous(
        self,
        previous_ids: Sequence[str],
        new: list[MemoryItem],
        refined: list[MemoryItem],
        vectors: list[Any],
    ) -> None:
        """Append this add's turns (``new``) to the ``after`` context of the turns before it
        and re-embed them (a reply is found by what it answered, a question by its answer).

        A turn this task writes anyway (a duplicate merged into it) is extended in that
        write, in place. The others are written here, on their own, best effort: a conflict
        with a concurrent writer is retried on fresh copies, and if it keeps failing the
        context is left as it was (logged) rather than failing the fine stage.
        """
        if not previous_ids:
            return
        later = [i for i in new if any(s.type == "chat" for s in i.sources)]
        at = {item.id: n for n, item in enumerate(refined)}
        for attempt in range(3):
            earlier = [
                refined[at[i.id]] if i.id in at else i
                for i in self.store.get(previous_ids)
                if i is not None and (i.status == MemoryStatus.ACTIVATED.value or i.merged_into is not None)
            ]
            changed = extend_context(earlier, later, self.window.context)
            if not changed:
                return
            new_vectors = item_vectors(self.embedder, changed)
            read = {i.id: i.revision for i in earlier}
            alone = []
            for item, vec in zip(changed, new_vectors, strict=True):
                if item.id in at:  # already in this task's write: replace it there
                    refined[at[item.id]], vectors[at[item.id]] = item, vec
                else:
                    alone.append((item, vec))
            if not alone:
                return
            try:
                self.store.batch(
                    [PutItems([a for a, _ in alone], [v for _, v in alone], [read[a.id] for a, _ in alone])]
                )
                return
            except ConflictError:
                if attempt == 2:
                    log.warning(
                        "could not extend the context of %s; left as it was", [a.id for a, _ in alone]
                    )

    def _neighbour_rewrites(
        self,
        changed: Sequence[MemoryItem],
        lines: Mapping[str, Sequence[str] | None],
        skip: Sequence[str] = (),
    ) -> list[Op]:
        """The write that keeps the turns around changed memories honest: the lines of each
        ``changed`` memory in its neighbours' context are replaced by ``lines[id]`` (an edit)
        or removed (``None``: a delete), and those neighbours re-embedded. ``skip``: ids that
        go away in the same write."""
        gone = {*skip, *(i.id for i in changed)}
        wanted = sorted({n for i in changed if i.context is not None for n in i.context.neighbours()} - gone)
        rewritten: list[MemoryItem] = []
        for item in self.store.get(wanted) if wanted else []:
            if item is None:
                continue
            current = item
            for old in changed:
                current = rewrite_context(current, old.id, lines.get(old.id)) or current
            if current is not item:
                rewritten.append(current)
        if not rewritten:
            return []
        vectors = list(item_vectors(self.embedder, rewritten))
        return [PutItems(rewritten, vectors, [i.revision for i in rewritten])]

    def _facts_of(self, item: MemoryItem) -> list[FactDraft]:
        """The LLM's facts, completed by the rules' on slots it did not fill: the rules are
        narrow and precise ("I live in Paris" is a residence), a small model misses some."""
        rules = rule_facts(item)
        if self.llm is not None:
            try:
                found = llm_facts(self.llm, item, attempts=self.llm_attempts)
                if found:
                    filled = {slot[0] for f in found if (slot := slot_of(f.text)) is not None}
                    return found + [
                        r for r in rules if (s := slot_of(r.text)) is not None and s[0] not in filled
                    ]
            except LLMError as exc:  # bad JSON after retries, or unreachable: use the rules
                log.warning("LLM fact extraction failed for %s, using the rules: %s", item.id, exc)
            except Exception:  # a user's adapter may fail in its own way; the rules still run
                log.exception("LLM fact extraction crashed for %s, using the rules", item.id)
        return rules

    def _read_image(self, item: MemoryItem, url: str) -> tuple[MemoryItem, Any]:
        """OCR (and a caption, with a vision LLM) for an image memory; a failure to read the
        image is recorded on its source, never fatal."""
        from .images import read_image

        reading = read_image(
            url, allow_local=self.allow_local_images, allow_private_hosts=self.allow_private_image_hosts
        )
        text = item.memory
        if reading.ocr_text:
            text += f"\nText in the image: {reading.ocr_text}"
        if self.vision_llm is not None and reading.ok and reading.data is not None:
            caption = self._caption(reading.data, reading.mime or "image/png")
            if caption:
                text += f"\nThe image shows: {caption}"
        errors = "; ".join(e for e in (reading.error, reading.ocr_error) if e) or None
        sources = [s.model_copy(update={"error": errors}) for s in item.sources]
        new = item.evolve(
            memory=text, sources=sources, mode="fine", keywords=keywords(text), updated_at=utcnow()
        )
        return new, (self.embedder.embed([text])[0] if text != item.memory else None)

    def _caption(self, data: bytes, mime: str) -> str:
        import base64

        assert self.vision_llm is not None
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        try:
            answer = self.vision_llm.chat(
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Describe this image in one short sentence."},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ],
                max_tokens=80,
            )
        except LLMError as exc:
            log.warning("image caption failed: %s", exc)
            return ""
        return " ".join(answer.split())[:500]

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
        cube_ids: Sequence[str] | None = None,
        top_k: int = 10,
        mode: SearchMode = "hybrid",
    ) -> Envelope[SearchData]:
        """Hybrid search over the user's memories (activated ones unless ``filter`` says
        otherwise about ``status``), narrowed to a conversation or agent when given.

        ``mode="lexical"`` searches with BM25 alone (no query embedding: a few milliseconds,
        somewhat lower recall; a query that shares no word with any memory falls back to the
        vector leg); ``"hybrid"`` (the default) fuses both legs; ``"keyword"`` returns the BM25
        ranking as it is (no nudges or de-duplication: the fastest, lower recall; a query that
        shares no word with any memory finds nothing).

        ``knowledgebase_ids`` and ``cube_ids`` (cubes other users shared) are searched too,
        each checked against the user's grants (PermissionDeniedError otherwise), and merged
        by score; every hit says where it came from in ``origin`` and ``cube_id``. Memories in
        the conversation's working set get a small bonus (``score_details["working"]``).
        """
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
        check_mode(mode)
        others: dict[str, str] = {}
        for kb in self._id_list("knowledgebase_ids", knowledgebase_ids):
            cube = kb_cube_id(kb)
            if self.store.get_record(CUBES, cube) is None:
                raise KnowledgeBaseNotFoundError(f"no knowledge base {kb!r}")
            self._require(user_id, cube, "read")
            others[cube] = "knowledgebase"
        own = user_cube_id(user_id)
        for cube in self._id_list("cube_ids", cube_ids):
            if cube != own:
                self._require(user_id, cube, "read")
                others.setdefault(cube, "knowledgebase" if cube.startswith("kb:") else "shared")
        if _mentions(filter, *_READ_FIELDS):
            self._reads.flush()
        where = self._scope(filter, conversation_id=conversation_id, agent_id=agent_id)
        cubes = [own]
        if others:
            # One ranking over every cube, so scores compare: the user's cube under the
            # conversation/agent scope, the others under the filter alone.
            mine = F.eq("cube_id", own)
            theirs = F.parse_filter({"cube_id": {"in": list(others)}})
            assert theirs is not None
            where = F.Or((F.and_(mine, where) or mine, F.and_(theirs, self._scope(filter)) or theirs))
            cubes += list(others)
        hits = hybrid_search(
            self.store,
            self.embedder,
            cubes,
            query.strip(),
            where,
            top_k=top_k,
            config=self.retrieval,
            # keyword search ranks by BM25 alone: the working set (a record read) is not needed
            boosts=None if mode == "keyword" else self._working_boosts(own, conversation_id),
            mode=mode,
        )
        hits = [
            h.model_copy(update={"origin": others[h.cube_id]}) if h.cube_id in others else h for h in hits
        ]
        if hits:
            # Reads count toward the reader's own memories only: another user's search must
            # not reorder the owner's usage ranking.
            self._reads.add([h.id for h in hits if h.cube_id == own], utcnow())
            if conversation_id is not None:
                self.store.batch([self._working_update(own, conversation_id, used=[h.id for h in hits[:5]])])
        return Envelope(data=SearchData(memory_detail_list=hits))

    @staticmethod
    def _id_list(name: str, values: Sequence[str] | None) -> list[str]:
        if values is None:
            return []
        if isinstance(values, str):
            raise InvalidInputError(f"{name} must be a list of ids, not a string")
        return [str(_check_id(name, v)) for v in dict.fromkeys(values)]

    # ------------------------------------------------------------------ cubes and grants

    def _owner(self, cube_id: str) -> str | None:
        if cube_id.startswith("user:"):
            return cube_id[5:]
        record = self.store.get_record(CUBES, cube_id)
        return None if record is None else str(record["owner"])

    def _may(self, user_id: str, cube_id: str, mode: Literal["read", "write"]) -> bool:
        try:
            self._require(user_id, cube_id, mode)
        except (PermissionDeniedError, CubeNotFoundError):
            return False
        return True

    def _require(self, user_id: str, cube_id: str, mode: Literal["read", "write"]) -> None:
        """PermissionDeniedError unless ``user_id`` owns ``cube_id`` or was granted ``mode``
        (a read-write grant allows reading too). Nothing of the cube is revealed."""
        owner = self._owner(cube_id)
        if owner == user_id:
            return
        grant = self.store.get_record(GRANTS, f"{cube_id}{_SEP}{user_id}")
        if grant is not None and (mode == "read" or grant.get("mode") == "write"):
            return
        if owner is None and not cube_id.startswith(("user:", "kb:")):
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        raise PermissionDeniedError(f"user {user_id!r} may not {mode} cube {cube_id!r}")

    def share_cube(
        self,
        cube_id: str,
        with_user_id: str,
        mode: Literal["read", "write"] = "read",
        *,
        user_id: str | None = None,
    ) -> Envelope[dict[str, str]]:
        """Let ``with_user_id`` search (``"read"``) or also add to (``"write"``) ``cube_id``.
        ``user_id``, when given, must be the cube's owner (the server always gives it)."""
        _check_id("cube_id", cube_id)
        _check_id("with_user_id", with_user_id)
        if mode not in ("read", "write"):
            raise InvalidInputError(f"mode must be 'read' or 'write', not {mode!r}")
        owner = self._owner(cube_id)
        if owner is None:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        if user_id is not None and user_id != owner:
            raise PermissionDeniedError(f"only the owner of {cube_id!r} can share it")
        if with_user_id == owner:
            raise InvalidInputError("a cube's owner has full access already")
        grant = {
            "cube_id": cube_id,
            "user_id": with_user_id,
            "mode": mode,
            "granted_at": utcnow().isoformat(),
        }
        self.store.batch(
            [
                PutRecords(GRANTS, {f"{cube_id}{_SEP}{with_user_id}": grant}),
                PutRecords(GRANTS_BY_USER, {f"{with_user_id}{_SEP}{cube_id}": grant}),
            ]
        )
        return Envelope(data={"cube_id": cube_id, "user_id": with_user_id, "mode": mode})

    def unshare_cube(self, cube_id: str, with_user_id: str, *, user_id: str | None = None) -> Envelope[bool]:
        """Withdraw a grant; ``data`` says whether there was one."""
        _check_id("cube_id", cube_id)
        _check_id("with_user_id", with_user_id)
        owner = self._owner(cube_id)
        if owner is None:
            raise CubeNotFoundError(f"no cube {cube_id!r}")
        if user_id is not None and user_id != owner:
            raise PermissionDeniedError(f"only the owner of {cube_id!r} can unshare it")
        had = self.store.get_record(GRANTS, f"{cube_id}{_SEP}{with_user_id}") is not None
        self.store.batch(
            [
                PutRecords(GRANTS, {f"{cube_id}{_SEP}{with_user_id}": None}),
                PutRecords(GRANTS_BY_USER, {f"{with_user_id}{_SEP}{cube_id}": None}),
            ]
        )
        return Envelope(data=had)

    def list_shares(self, user_id: str) -> Envelope[dict[str, list[dict[str, Any]]]]:
        """Cubes shared *with* ``user_id`` (``shared_with_me``) and grants on the cubes the
        user owns (``granted``)."""
        _check_id("user_id", user_id)
        mine = [v for _, v in self.store.list_records(GRANTS_BY_USER, f"{user_id}{_SEP}")]
        owned = [user_cube_id(user_id)] + [
            k for k, v in self.store.list_records(CUBES) if v.get("owner") == user_id
        ]
        granted = [v for cube in owned for _, v in self.store.list_records(GRANTS, f"{cube}{_SEP}")]
        return Envelope(data={"shared_with_me": mine, "granted": granted})

    def cube(self, cube_id: str, *, user_id: str) -> MemCube:
        """The :class:`~memos_core.cube.MemCube` of a cube ``user_id`` may read (its own
        ``user_cube_id(user_id)``, a shared cube or a knowledge base), to dump it; it can be
        re-embedded only by a user who may write the cube."""
        _check_id("cube_id", cube_id)
        _check_id("user_id", user_id)
        self._require(user_id, cube_id, "read")
        self._reads.flush()  # a dump carries the access statistics
        return MemCube(self.store, cube_id, read_only=not self._may(user_id, cube_id, "write"))

    # ------------------------------------------------------------------ knowledge bases

    def create_knowledgebase(
        self, user_id: str, *, kb_id: str | None = None, name: str | None = None, description: str = ""
    ) -> Envelope[dict[str, Any]]:
        """A shared cube for documents, owned by ``user_id``; share it with
        :meth:`share_cube` (``kb_cube_id(kb_id)``) to let others search it."""
        _check_id("user_id", user_id)
        kb = str(_check_id("kb_id", kb_id)) if kb_id is not None else new_id()
        if "/" in kb:  # an id is one URL path segment over HTTP
            raise InvalidInputError(f"kb_id cannot contain '/': {kb!r}")
        cube = kb_cube_id(kb)
        if self.store.get_record(CUBES, cube) is not None:
            raise InvalidInputError(f"knowledge base {kb!r} exists already")
        record = {
            "cube_id": cube,
            "kb_id": kb,
            "kind": "knowledgebase",
            "owner": user_id,
            "name": name or kb,
            "description": description,
            "created_at": utcnow().isoformat(),
        }
        self.store.put_records(CUBES, {cube: record})
        return Envelope(data=record)

    def _kb(self, kb_id: str, user_id: str, mode: Literal["read", "write"]) -> str:
        _check_id("kb_id", kb_id)
        _check_id("user_id", user_id)
        cube = kb_cube_id(kb_id)
        if self.store.get_record(CUBES, cube) is None:
            raise KnowledgeBaseNotFoundError(f"no knowledge base {kb_id!r}")
        self._require(user_id, cube, mode)
        return cube

    def list_knowledgebases(self, user_id: str) -> Envelope[list[dict[str, Any]]]:
        """Knowledge bases ``user_id`` owns or was granted."""
        _check_id("user_id", user_id)
        granted = {v["cube_id"] for _, v in self.store.list_records(GRANTS_BY_USER, f"{user_id}{_SEP}")}
        return Envelope(
            data=[
                v
                for k, v in self.store.list_records(CUBES, "kb:")
                if v.get("owner") == user_id or k in granted
            ]
        )

    def add_document(
        self,
        kb_id: str,
        source: str | Path | bytes,
        *,
        user_id: str,
        filename: str | None = None,
        chunk_size: int = 800,
        chunk_overlap: int | None = None,
        tags: Sequence[str] | None = None,
        progress: bool = False,
    ) -> Envelope[dict[str, Any]]:
        """Read a PDF, DOCX, HTML, Markdown or text document into a knowledge base, one
        memory per chunk (``chunk_overlap`` defaults to 15 % of ``chunk_size``), each traceable
        to the document and its character span. Adding the same bytes again replaces the
        earlier import (same ids) in one transaction: a failed import changes nothing.
        ``source`` may be a local path: a server must pass bytes from its caller instead."""
        import uuid

        from tqdm import tqdm

        from .documents import chunk_text, read_document

        cube = self._kb(kb_id, user_id, "write")
        tag_list = self._check_tags(tags)
        doc = read_document(source, filename=filename)
        overlap = chunk_size * 15 // 100 if chunk_overlap is None else chunk_overlap  # 800 -> 120
        chunks = chunk_text(doc.text, size=chunk_size, overlap=overlap)
        now = utcnow()
        record = {
            "doc_id": doc.doc_id,
            "kb_id": kb_id,
            "filename": doc.filename,
            "kind": doc.kind,
            "title": doc.title,
            "size_bytes": doc.size_bytes,
            "chunks": len(chunks),
            "added_by": user_id,
            "added_at": now.isoformat(),
        }
        key = f"{cube}{_SEP}{doc.doc_id}"
        items: list[MemoryItem] = []
        for chunk in chunks:
            items.append(
                MemoryItem(
                    id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{cube}/{doc.doc_id}/{chunk.index}")),
                    cube_id=cube,
                    user_id=user_id,
                    memory=chunk.text.strip(),
                    key=f"{doc.title or doc.filename} #{chunk.index + 1}",
                    memory_type="knowledge",
                    mode="fine",
                    tags=tag_list,
                    info={"doc_id": doc.doc_id, "filename": doc.filename},
                    keywords=keywords(chunk.text),
                    sources=[
                        SourceRef(
                            type="doc",
                            doc_id=doc.doc_id,
                            chunk_index=chunk.index,
                            url=doc.filename,
                            char_start=chunk.start,
                            char_end=chunk.end,
                        )
                    ],
                    created_at=now,
                    updated_at=now,
                    event_time=now,
                    embedding_model=self.embedder.model_id,
                )
            )
        bar = tqdm(total=len(items), desc=f"importing {doc.filename}", unit="chunk", disable=not progress)
        vectors: list[Any] = []
        for start in range(0, len(items), 64):
            part = items[start : start + 64]
            vectors += list(self.embedder.embed([i.memory for i in part]))
            bar.update(len(part))
        bar.close()
        # One transaction: an earlier import of the same bytes is replaced, or, if anything
        # fails, left exactly as it was.
        stale, _, _ = self.store.batch(
            [
                DeleteItems([cube], where=F.parse_filter({"doc_id": doc.doc_id}), hard=True),
                PutItems(items, vectors),
                PutRecords(DOCS, {key: {**record, "status": "ready"}}),
            ]
        )
        record = {**record, "status": "ready", "replaced_chunks": stale}
        return Envelope(data={**record, "memory_ids": [i.id for i in items]})

    def list_documents(self, kb_id: str, *, user_id: str) -> Envelope[list[dict[str, Any]]]:
        cube = self._kb(kb_id, user_id, "read")
        return Envelope(data=[v for _, v in self.store.list_records(DOCS, f"{cube}{_SEP}")])

    def delete_document(self, kb_id: str, doc_id: str, *, user_id: str) -> Envelope[dict[str, int]]:
        """Remove a document and all its chunks (hard delete)."""
        cube = self._kb(kb_id, user_id, "write")
        _check_id("doc_id", doc_id)
        key = f"{cube}{_SEP}{doc_id}"
        if self.store.get_record(DOCS, key) is None:
            raise NotFoundError(f"knowledge base {kb_id!r} has no document {doc_id!r}")
        count = self.store.delete([cube], where=F.parse_filter({"doc_id": doc_id}), hard=True)
        self.store.put_records(DOCS, {key: None})
        return Envelope(data={"deleted": count})

    def delete_knowledgebase(self, kb_id: str, *, user_id: str) -> Envelope[dict[str, int]]:
        """Remove a knowledge base, its documents, memories and grants (owner only)."""
        cube = self._kb(kb_id, user_id, "read")
        if self._owner(cube) != user_id:
            raise PermissionDeniedError(f"only the owner can delete knowledge base {kb_id!r}")
        count = self.store.delete([cube], where=F.parse_filter({"id": {"exists": True}}), hard=True)
        grants = self.store.list_records(GRANTS, f"{cube}{_SEP}")
        self.store.batch(
            [
                PutRecords(DOCS, {k: None for k, _ in self.store.list_records(DOCS, f"{cube}{_SEP}")}),
                PutRecords(GRANTS, {k: None for k, _ in grants}),
                PutRecords(GRANTS_BY_USER, {f"{v['user_id']}{_SEP}{cube}": None for _, v in grants}),
                PutRecords(CUBES, {cube: None}),
            ]
        )
        return Envelope(data={"deleted": count})

    # ------------------------------------------------------------------ working memory

    def _working_update(
        self, cube_id: str, conversation_id: str, *, recent: Sequence[str] = (), used: Sequence[str] = ()
    ) -> PutRecords:
        """The conversation's working set with ``recent`` turns and ``used`` hits folded in,
        bounded to ``working_size`` (half recent turns, half most-used memories). Last writer
        wins: it is a cache of attention, not a record of truth."""
        key = f"{cube_id}{_SEP}{conversation_id}"
        ws = self.store.get_record(WORKING, key) or {"recent": [], "used": []}
        half = self.working_size // 2
        recent_ids = list(dict.fromkeys([*recent, *ws.get("recent", [])]))[:half]
        # Earlier uses fade (x0.75 per search), ties go to the hits just used and twice as
        # many counts are kept as shown, so a new topic's hits can build up and the set
        # follows the conversation instead of freezing on the first hits used twice.
        counts: dict[str, float] = {i: round(c * 0.75, 4) for i, c in _ranked_uses(ws)}
        for i in used:
            counts[i] = counts.get(i, 0.0) + 1.0
        fresh = {i: n for n, i in enumerate(used)}
        top = sorted(counts.items(), key=lambda kv: (-kv[1], fresh.get(kv[0], len(fresh))))[
            : 2 * self.working_size
        ]
        # a list, not a dict: stores may not keep a JSON object's key order, and the order
        # breaks ties between equally used memories (the ones just used first)
        value = {"recent": recent_ids, "used": [[i, c] for i, c in top], "updated_at": utcnow().isoformat()}
        return PutRecords(WORKING, {key: value})

    def _working_ids(self, cube_id: str, conversation_id: str) -> list[str]:
        ws = self.store.get_record(WORKING, f"{cube_id}{_SEP}{conversation_id}")
        if ws is None:
            return []
        recent = list(ws.get("recent", []))[: self.working_size // 2]
        # Most-used first; a turn that is also a used hit takes one slot, not two.
        used = [i for i, _ in sorted(_ranked_uses(ws), key=lambda kv: -kv[1]) if i not in recent]
        return [*recent, *used][: self.working_size]

    def _working_boosts(self, cube_id: str, conversation_id: str | None) -> dict[str, float]:
        if conversation_id is None or self.retrieval.working_weight <= 0:
            return {}
        return {i: self.retrieval.working_weight for i in self._working_ids(cube_id, conversation_id)}

    def get_working_memory(self, user_id: str, conversation_id: str) -> Envelope[list[MemoryItem]]:
        """The conversation's working set: its latest turns and the memories its recent
        searches used most, active ones only, at most ``working_size``. This is what search
        consults first and what activation memory turns into KV caches."""
        _check_id("user_id", user_id)
        _check_id("conversation_id", conversation_id)
        self._reads.flush()
        ids = self._working_ids(user_cube_id(user_id), conversation_id)
        items = [i for i in self.store.get(ids) if i is not None and i.status == MemoryStatus.ACTIVATED.value]
        # Hits from shared cubes and knowledge bases enter the set too; show them only while
        # the user may still read their cube (a grant can be withdrawn since).
        readable = {c: self._may(user_id, c, "read") for c in {i.cube_id for i in items}}
        return Envelope(data=[i for i in items if readable[i.cube_id]])

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

    def get_memory(self, memory_id: str, *, user_id: str | None = None) -> Envelope[MemoryItem]:
        """One memory by id, whatever its status (ids never 404 unless hard-deleted).

        With ``user_id`` (the server always passes it) the memory's cube must be readable by
        that user, else PermissionDeniedError; without it the caller is trusted (embedded use).
        """
        self._reads.flush()  # the item shows its access statistics
        return Envelope(data=self._get(memory_id, user_id, "read"))

    def _get(
        self, memory_id: str, user_id: str | None = None, mode: Literal["read", "write"] = "read"
    ) -> MemoryItem:
        _check_id("memory_id", memory_id)
        _check_id("user_id", user_id, required=False)
        item = self.store.get([memory_id])[0]
        if item is None:
            raise MemoryNotFoundError(f"no memory {memory_id!r}")
        if user_id is not None:
            self._require(user_id, item.cube_id, mode)
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
        self._reads.flush()
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
        user_id: str | None = None,
    ) -> Envelope[MemoryItem]:
        """Change a memory's text, tags or info. Bumps ``version`` and keeps the previous
        version in ``history``; a new text is re-embedded. With ``user_id``, the memory's cube
        must be writable by that user (PermissionDeniedError)."""
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
        for attempt in Retrying(
            retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(5), reraise=True
        ):
            with attempt:
                old = self._get(memory_id, user_id, "write")
                if old.status == MemoryStatus.DELETED.value:
                    raise InvalidInputError(f"memory {memory_id!r} is deleted")
                new = next_version(
                    old,
                    reason="update",
                    memory=memory,
                    tags=tag_list,
                    info=info_dict,
                    embedding_model=self.embedder.model_id if memory is not None else None,
                )
                vector = item_vectors(self.embedder, [new])[0] if memory is not None else None
                around = (
                    self._neighbour_rewrites([old], {old.id: context_lines(new)})
                    if memory is not None
                    else []
                )
                self.store.batch([PutItems([new], [vector], [old.revision]), *around])
        return Envelope(data=new)

    def rollback_memory(
        self, memory_id: str, version: int, *, user_id: str | None = None
    ) -> Envelope[MemoryItem]:
        """Restore an earlier version's content as a new version (the current one is kept
        in ``history`` too, so a rollback can itself be rolled back). ``user_id``: as in
        :meth:`update_memory`."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInputError("version must be a positive integer")
        for attempt in Retrying(
            retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(5), reraise=True
        ):
            with attempt:
                old = self._get(memory_id, user_id, "write")
                if old.status == MemoryStatus.DELETED.value:
                    raise InvalidInputError(f"memory {memory_id!r} is deleted")
                new = rollback(old, version)
                vector = item_vectors(self.embedder, [new])[0]
                new = new.evolve(status=MemoryStatus.ACTIVATED.value, embedding_model=self.embedder.model_id)
                around = self._neighbour_rewrites([old], {old.id: context_lines(new)})
                self.store.batch([PutItems([new], [vector], [old.revision]), *around])
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

        ``memory_ids``: those memories; with ``user_id`` too, each must be in a cube that user
        may write (PermissionDeniedError, nothing deleted). Without ``memory_ids``: every
        memory of ``user_id``'s own cube that ``filter`` selects. Soft delete (the default)
        keeps the id resolvable with ``status="deleted"``; ``hard=True`` erases the rows.
        """
        if memory_ids is None and user_id is None:
            raise InvalidInputError("give memory_ids, or a user_id whose memories to delete")
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
            if user_id is not None:
                _check_id("user_id", user_id)
                for cube in cubes:
                    self._require(user_id, cube, "write")
            op = DeleteItems(cubes, ids=ids, hard=hard)
        else:
            uid = str(_check_id("user_id", user_id))
            where = F.parse_filter(filter)
            if _mentions(filter, *_READ_FIELDS):
                self._reads.flush()  # "never read" must not select what was just read
            cubes = [user_cube_id(uid)]
            op = DeleteItems(cubes, where=where or F.parse_filter({"id": {"exists": True}}), hard=hard)
        # A deleted turn's words leave the context of the turns around it, in the same write
        # (a filter-less wipe takes every neighbour with it).
        for attempt in Retrying(
            retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(5), reraise=True
        ):
            with attempt:
                doomed = self._doomed(op) if memory_ids is not None or filter is not None else []
                gone = [i.id for i in doomed]
                around = self._neighbour_rewrites(doomed, dict.fromkeys(gone), skip=gone) if doomed else []
                count = self.store.batch([op, *around])[0]
        return Envelope(data={"deleted": count})

    def _doomed(self, op: DeleteItems) -> list[MemoryItem]:
        """The chat turns with context that ``op`` deletes."""
        if op.ids is not None:
            items = [i for i in self.store.get(list(op.ids)) if i is not None]
        else:
            items, offset = [], 0
            while True:
                page, total = self.store.batch([ListItems(op.cube_ids, op.where, 1000, offset)])[0]
                items += page
                offset += len(page)
                if not page or offset >= total:
                    break
        return [i for i in items if i.context is not None]

    def add_feedback(
        self,
        user_id: str,
        conversation_id: str | None,
        feedback_content: str,
        *,
        feedback_time: str | datetime | None = None,
        agent_id: str | None = None,
        memory_ids: Sequence[str] | None = None,
        name: str | None = None,
    ) -> Envelope[dict[str, Any]]:
        """Correct memories from what the user says ("no, I moved to Berlin in May").

        The feedback is stored as a memory of its own (``memory_type="feedback"``), so the
        correction itself is never lost. Facts in it supersede the facts they contradict
        (the old text goes into their history, archived), through the same mechanism as the
        fine stage. A retraction ("forget that I like sushi", "I no longer play tennis")
        archives the memories it names: ``memory_ids`` if given, else the user's facts that
        best match it. Every changed memory gets the feedback as a source.

        Returns ``{"feedback_id", "added", "superseded", "archived", "confirmed"}``.
        """
        _check_id("user_id", user_id)
        _check_id("conversation_id", conversation_id, required=False)
        _check_id("agent_id", agent_id, required=False)
        if not isinstance(feedback_content, str) or not feedback_content.strip():
            raise InvalidInputError("feedback_content must be a non-empty string")
        if len(feedback_content) > self.limits.max_message_chars:
            raise PayloadTooLargeError(f"feedback_content is longer than {self.limits.max_message_chars}")
        try:
            when = parse_time(feedback_time) if feedback_time is not None else utcnow()
        except ValueError as exc:
            raise InvalidInputError(f"feedback_time is not a time: {exc}") from exc
        targets = self._id_list("memory_ids", memory_ids)
        cube = user_cube_id(user_id)
        text = " ".join(feedback_content.split())
        speaker = name or "The user"
        source = SourceRef(
            type="feedback",
            role="user",
            name=name,
            chat_time=when,
            conversation_id=conversation_id,
            content=text,
        )
        feedback = MemoryItem(
            cube_id=cube,
            user_id=user_id,
            agent_id=agent_id,
            conversation_id=conversation_id,
            memory=f"{speaker} corrected ({when.strftime('%d %B %Y').lstrip('0')}): {text}",
            memory_type="feedback",
            mode="fine",
            keywords=keywords(text),
            sources=[source],
            event_time=when,
            embedding_model=self.embedder.model_id,
        )
        link = SourceRef(type="memory", memory_id=feedback.id, content="feedback")
        drafts = [
            FactDraft(
                text=f.text,
                memory_type=f.memory_type,
                key=f.key,
                tags=(*f.tags, "feedback"),
                event_time=f.event_time or when,
                sources=(source, link),
                parent=feedback,
                origin="feedback",
            )
            for f in extract_facts(text, speaker=speaker, anchor=when, role="user")
        ]
        retraction = _RETRACT.match(text)
        self._feedback_targets(cube, user_id, targets)  # refused before anything is written
        for attempt in Retrying(
            retry=retry_if_exception_type(ConflictError), stop=stop_after_attempt(5), reraise=True
        ):
            with attempt:
                # Read inside the retry: a conflict means the targets changed, so re-read them.
                archived: list[MemoryItem] = []
                if retraction is not None:
                    what = " ".join(p for p in retraction.group("verb", "rest", "what") if p).strip(" .!")
                    for item in self._retraction_targets(cube, user_id, what, targets):
                        revised = archive(item, f"feedback: {text}")
                        archived.append(revised.evolve(sources=[*revised.sources, source]))
                elif targets and drafts:
                    # The caller named what the correction replaces: retire those whose slot
                    # (if any) the new facts do not take over in place.
                    slots = {found[0] for d in drafts if (found := slot_of(d.text)) is not None}
                    for target in self._feedback_targets(cube, user_id, targets):
                        if target.key not in slots:
                            revised = archive(target, f"replaced by feedback: {text}")
                            archived.append(revised.evolve(sources=[*revised.sources, source]))
                facts, report = plan_facts(
                    self.store, self.embedder, drafts, exclude=[i.id for i in archived]
                )
                vec = self.embedder.embed([feedback.memory])
                self.store.batch(
                    [
                        PutItems([feedback], list(vec), [0]),
                        PutItems(archived, None, [i.revision for i in archived]),
                        facts,
                    ]
                )
        return Envelope(
            data={
                "feedback_id": feedback.id,
                "added": report.added,
                "superseded": report.superseded,
                "archived": [i.id for i in archived],
                "confirmed": report.confirmed,
            }
        )

    def _feedback_targets(self, cube: str, user_id: str, targets: list[str]) -> list[MemoryItem]:
        """The active memories among ``targets``; MemoryNotFoundError for an unknown id and
        PermissionDeniedError for one outside the user's cube, whatever the feedback says."""
        found = self.store.get(targets) if targets else []
        for memory_id, item in zip(targets, found, strict=True):
            if item is None:
                raise MemoryNotFoundError(f"no memory {memory_id!r}")
            if item.cube_id != cube:
                raise PermissionDeniedError(f"memory {memory_id!r} is not one of {user_id!r}'s memories")
        return [i for i in found if i is not None and i.status == MemoryStatus.ACTIVATED.value]

    def _retraction_targets(self, cube: str, user_id: str, what: str, targets: list[str]) -> list[MemoryItem]:
        if targets:
            return self._feedback_targets(cube, user_id, targets)
        if not what:
            return []
        where = F.and_(
            F.eq("status", MemoryStatus.ACTIVATED.value),
            F.eq("mode", "fine"),
            F.parse_filter({"memory_type": {"in": ["user", "preference", "long_term"]}}),
        )
        hits = hybrid_search(self.store, self.embedder, [cube], what, where, top_k=3, config=self.retrieval)
        # Crude stems (4-letter prefixes): "I no longer live in Paris" must match the fact
        # "The user lives in Paris.", "I don't play tennis anymore" "... likes playing tennis".
        words = {w[:4] for w in tokenize(what, drop_stopwords=True)}
        out = []
        for hit in hits:
            have = {w[:4] for w in tokenize(hit.memory, drop_stopwords=True)}
            if words and len(words & have) / len(words) >= 0.6:
                out.append(self._get(hit.id))
        return out

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Items per cube and status, tasks per status, store size, and what lives in which
        form (:meth:`forms`)."""
        self._reads.flush()
        stats = getattr(self.store, "stats", None)
        out: dict[str, Any] = stats() if stats is not None else {}
        out["embedding_model"] = self.embedder.model_id
        forms = self.forms()
        if forms:
            out["forms"] = forms
        return out

    def forms(self) -> dict[str, dict[str, Any]]:
        """What lives in which form, per cube (see :func:`memos_core.cube.forms_summary`)."""
        return forms_summary(self.store)
