"""Versions and superseding facts: one mechanism for updates, rollbacks, corrections and
contradictions (layer 3).

Every change of a memory's content keeps the previous version in ``history`` as a
:class:`~memos_core.schema.VersionRecord` with ``status="archived"``, its sources and its
event time, and bumps ``version``. The id never changes, so an id handed out stays valid and
its whole past stays auditable.

Facts with a *slot* (``residence``, ``employer``, ``favorite:color``...; see
:mod:`memos_core.facts`) are kept one per slot and user: a newer fact with another value
supersedes the current one (its text moves into history), an equal value only adds
provenance, and an older one is filed into history without replacing the newer truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from . import filters as F
from .errors import InvalidInputError
from .facts import same_value, slot_of
from .ports import Embedder, ListItems, MemoryStore, PutItems, VectorSearch
from .schema import MemoryItem, MemoryStatus, SourceRef, VersionRecord, utcnow
from .text import content_of, keywords, lexical_overlap

__all__ = ["FactDraft", "FactReport", "archive", "next_version", "plan_facts", "rollback"]


def next_version(
    item: MemoryItem,
    *,
    reason: str,
    memory: str | None = None,
    tags: Sequence[str] | None = None,
    info: dict[str, Any] | None = None,
    key: str | None = None,
    sources: Sequence[SourceRef] | None = None,
    event_time: datetime | None = None,
    embedding_model: str | None = None,
    at: datetime | None = None,
) -> MemoryItem:
    """``item`` with new content and its current content filed into ``history``."""
    now = at or utcnow()
    record = _record(item, reason, now)
    text = memory if memory is not None else item.memory
    return item.evolve(
        memory=text,
        tags=list(tags) if tags is not None else item.tags,
        info=info if info is not None else item.info,
        key=key if key is not None else item.key,
        sources=list(sources) if sources is not None else item.sources,
        event_time=event_time if event_time is not None else item.event_time,
        keywords=keywords(content_of(text)) if memory is not None else item.keywords,
        version=item.version + 1,
        history=[*item.history, record],
        updated_at=now,
        embedding_model=embedding_model or item.embedding_model,
    )


def rollback(item: MemoryItem, version: int) -> MemoryItem:
    """A new version of ``item`` whose content is that of its earlier ``version``."""
    if version == item.version:
        raise InvalidInputError(f"memory {item.id} is at version {version} already")
    found = next((r for r in item.history if r.version == version), None)
    if found is None:
        have = sorted({r.version for r in item.history} | {item.version})
        raise InvalidInputError(f"memory {item.id} has no version {version}; it has {have}")
    return next_version(
        item,
        reason=f"rollback to version {version}",
        memory=found.memory,
        tags=found.tags,
        info=found.info,
        key=found.key,
        sources=found.sources or item.sources,
        event_time=found.event_time,
    )


def archive(item: MemoryItem, reason: str, *, at: datetime | None = None) -> MemoryItem:
    """``item`` taken out of search (``status="archived"``), with the reason in history."""
    now = at or utcnow()
    return item.evolve(
        status=MemoryStatus.ARCHIVED.value,
        version=item.version + 1,
        history=[*item.history, _record(item, reason, now)],
        updated_at=now,
    )


def _record(item: MemoryItem, reason: str, at: datetime) -> VersionRecord:
    """``item``'s current content as an archived history entry."""
    return VersionRecord(
        version=item.version,
        memory=item.memory,
        tags=item.tags,
        info=item.info,
        key=item.key,
        sources=item.sources,
        event_time=item.event_time,
        status=MemoryStatus.ARCHIVED.value,
        changed_at=at,
        reason=reason,
    )


@dataclass(frozen=True)
class FactDraft:
    """A fact extracted from a window (by the LLM or the rules), not yet stored."""

    text: str
    memory_type: str
    key: str | None
    tags: tuple[str, ...]
    event_time: datetime | None
    sources: tuple[SourceRef, ...]
    #: The fast item the fact was read from (its scope and tags are inherited).
    parent: MemoryItem
    origin: str = "rules"


@dataclass
class FactReport:
    """What :func:`plan_facts` did: ids added, superseded (updated in place), confirmed."""

    added: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)


_FACT_TYPES = ("user", "preference", "long_term")


def plan_facts(
    store: MemoryStore,
    embedder: Embedder,
    drafts: Sequence[FactDraft],
    *,
    exclude: Sequence[str] = (),
    dedup_threshold: float = 0.92,
) -> tuple[PutItems, FactReport]:
    """The write that stores ``drafts`` as fine facts, superseding by slot and merging
    near-duplicates. ``exclude``: ids written elsewhere in the same batch (never touched
    here). Every touched item carries its revision, so a concurrent write means a retry."""
    report = FactReport()
    out: dict[str, MemoryItem] = {}
    expected: dict[str, int] = {}
    vectors: dict[str, np.ndarray | None] = {}
    texts = [d.text for d in drafts]
    draft_vecs = embedder.embed(texts) if texts else np.zeros((0, embedder.dim), dtype=np.float32)

    def current(item: MemoryItem) -> MemoryItem:
        return out.get(item.id, item)

    def remember(item: MemoryItem, original: MemoryItem | None, vec: np.ndarray | None) -> None:
        if item.id in exclude:
            return
        out[item.id] = item
        if original is not None:
            expected.setdefault(item.id, original.revision)
        else:
            expected.setdefault(item.id, 0)
        if vec is not None or item.id not in vectors:
            vectors[item.id] = vec

    for draft, vec in zip(drafts, draft_vecs, strict=True):
        parent = draft.parent
        found = slot_of(draft.text)
        slot, value = found if found is not None else (None, None)
        when = draft.event_time or (draft.sources[0].chat_time if draft.sources else None) or utcnow()
        if slot is not None:
            holder = _slot_holder(store, parent, slot, out, _speaker(draft.sources), exclude)
            if holder is not None:
                old = current(holder)
                old_value = (slot_of(old.memory) or (slot, ""))[1]
                if same_value(old_value, value or ""):
                    merged = old.evolve(
                        sources=_merge_sources(old.sources, draft.sources), updated_at=utcnow()
                    )
                    remember(merged, holder, None)
                    report.confirmed.append(old.id)
                    continue
                # The later *statement* wins, whatever dates it names: "I live in Paris.
                # Actually I moved to Berlin last month" ends in Berlin. Drafts stated at the
                # same moment keep their order of appearance. A correction always wins.
                said = _said(draft.sources) or when
                old_said = _said(old.sources) or old.event_time or old.created_at
                if said >= old_said or draft.origin == "feedback":
                    new = next_version(
                        old,
                        reason=f"superseded by a newer fact ({draft.origin})",
                        memory=draft.text,
                        tags=sorted({*parent.tags, *draft.tags}),
                        sources=list(draft.sources),
                        event_time=when,
                        embedding_model=embedder.model_id,
                    )
                    remember(new, holder, vec)
                    report.superseded.append(old.id)
                else:  # an older fact arriving late: history, not the current truth
                    record = VersionRecord(
                        version=0,
                        memory=draft.text,
                        tags=list(draft.tags),
                        key=slot,
                        sources=list(draft.sources),
                        event_time=when,
                        reason=f"older fact filed late ({draft.origin})",
                    )
                    remember(old.evolve(history=[*old.history, record]), holder, None)
                    report.confirmed.append(old.id)
                continue
        else:
            twin = _near_duplicate(store, parent, vec, draft.text, dedup_threshold, embedder.model_id)
            if twin is not None and twin.id not in exclude:
                old = current(twin)
                merged = old.evolve(sources=_merge_sources(old.sources, draft.sources), updated_at=utcnow())
                remember(merged, twin, None)
                report.confirmed.append(old.id)
                continue
        now = utcnow()
        fact = MemoryItem(
            cube_id=parent.cube_id,
            user_id=parent.user_id,
            agent_id=parent.agent_id,
            conversation_id=parent.conversation_id,
            app_id=parent.app_id,
            memory=draft.text,
            key=slot or draft.key,
            memory_type=draft.memory_type if draft.memory_type in _FACT_TYPES else "long_term",
            mode="fine",
            tags=sorted({*parent.tags, *draft.tags}),
            info=dict(parent.info),
            keywords=keywords(draft.text),
            sources=list(draft.sources),
            created_at=now,
            updated_at=now,
            event_time=when,
            embedding_model=embedder.model_id,
        )
        remember(fact, None, vec)
        report.added.append(fact.id)
    ids = list(out)
    return (
        PutItems([out[i] for i in ids], [vectors.get(i) for i in ids], [expected[i] for i in ids]),
        report,
    )


def _merge_sources(have: Sequence[SourceRef], extra: Sequence[SourceRef]) -> list[SourceRef]:
    seen = {s.model_dump_json() for s in have}
    return [*have, *(s for s in extra if s.model_dump_json() not in seen)]


def _speaker(sources: Sequence[SourceRef]) -> str | None:
    """Who stated a fact: the name on its first chat or feedback source (None: unnamed)."""
    for src in sources:
        if src.type in ("chat", "feedback"):
            return src.name.casefold() if src.name else None
    return None


def _said(sources: Sequence[SourceRef]) -> datetime | None:
    """When a fact was last stated: the latest time of its chat and feedback sources."""
    times = [s.chat_time for s in sources if s.type in ("chat", "feedback") and s.chat_time is not None]
    return max(times) if times else None


def _same_speaker(a: str | None, b: str | None) -> bool:
    """Facts of named speakers ("Ana", "Bob" in one chat) hold separate slots; an unnamed
    statement (no name given, or feedback without ``name``) is about whoever holds it."""
    return a is None or b is None or a == b


def _slot_holder(
    store: MemoryStore,
    parent: MemoryItem,
    slot: str,
    pending: dict[str, MemoryItem],
    speaker: str | None,
    exclude: Sequence[str] = (),
) -> MemoryItem | None:
    """The active fact that holds ``slot`` for this user (and agent) and ``speaker``, newest
    first. Items in ``exclude`` (written elsewhere in the batch: archived by a retraction, say)
    hold nothing, so a new fact on their slot is added rather than lost."""
    for item in pending.values():
        if (
            item.key == slot
            and item.status == MemoryStatus.ACTIVATED.value
            and item.mode == "fine"
            and _same_speaker(speaker, _speaker(item.sources))
        ):
            return item
    where = F.and_(
        F.eq("status", MemoryStatus.ACTIVATED.value),
        F.eq("mode", "fine"),
        F.eq("key", slot),
        F.eq("user_id", parent.user_id),
        F.eq("agent_id", parent.agent_id),
    )
    items, _ = store.batch([ListItems([parent.cube_id], where, 50, 0)])[0]
    holders = [
        i
        for i in items
        if (slot_of(i.memory) or ("", ""))[0] == slot
        and _same_speaker(speaker, _speaker(i.sources))
        and i.id not in exclude
    ]
    return max(holders, key=_newest) if holders else None


def _newest(item: MemoryItem) -> tuple[datetime, datetime]:
    return (_said(item.sources) or item.event_time or item.created_at, item.updated_at)


def _near_duplicate(
    store: MemoryStore, parent: MemoryItem, vec: np.ndarray, text: str, threshold: float, model_id: str
) -> MemoryItem | None:
    where = F.and_(
        F.eq("status", MemoryStatus.ACTIVATED.value),
        F.eq("mode", "fine"),
        F.eq("user_id", parent.user_id),
        F.eq("agent_id", parent.agent_id),
        F.parse_filter({"memory_type": {"in": list(_FACT_TYPES)}}),
    )
    hits = store.batch([VectorSearch([parent.cube_id], vec, where, 3, model_id)])[0]
    close = [h.id for h in hits if h.score >= threshold]
    for found in store.get(close) if close else []:
        if found is not None and lexical_overlap(found.memory, text) >= 0.8:
            return found
    return None
