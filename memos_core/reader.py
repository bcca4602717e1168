"""MemReader: turns messages into memory items (layer 3).

The fast stage (:func:`validate_messages`, :func:`fast_items`) is synchronous and cheap:
messages are validated, windowed (a few turns with overlap, each line carrying speaker and
time) and become ``mode="fast"`` items. The deterministic part of the fine stage
(:func:`refine`) needs no LLM: it resolves relative dates against each message's chat time
into ``event_time``, extracts keywords and merges near-duplicates into the older item. No id
handed out is ever removed: a merged item stays readable with ``merged_into`` set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from . import filters as F
from .errors import InvalidInputError, PayloadTooLargeError
from .ports import MemoryStore, PutItems, VectorSearch
from .schema import MemoryItem, MemoryStatus, Message, SourceRef, VersionRecord, utcnow
from .text import content_of, keywords, lexical_overlap, resolve_dates

__all__ = ["Limits", "WindowConfig", "fast_items", "refine", "render_line", "validate_messages"]


@dataclass(frozen=True)
class Limits:
    """Request limits; a violation raises :class:`~memos_core.errors.PayloadTooLargeError`."""

    max_messages: int = 1000
    max_message_chars: int = 100_000
    max_top_k: int = 100
    max_query_chars: int = 4000
    max_tags: int = 100
    max_info_bytes: int = 64 * 1024


@dataclass(frozen=True)
class WindowConfig:
    """Fast-stage windows: ``size`` turns per memory, ``overlap`` turns shared by neighbours."""

    size: int = 4
    overlap: int = 1

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.overlap < self.size:
            raise InvalidInputError("window size must be >= 1 and 0 <= overlap < size")


def validate_messages(messages: Any, limits: Limits) -> list[Message]:
    """Check and normalise caller messages; every problem names the message index."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages must be a list of message dicts")
    if not messages:
        raise InvalidInputError("messages is empty: nothing to remember")
    if len(messages) > limits.max_messages:
        raise PayloadTooLargeError(f"{len(messages)} messages in one add; the limit is {limits.max_messages}")
    out: list[Message] = []
    for i, raw in enumerate(messages):
        if isinstance(raw, Message):
            msg = raw
        elif isinstance(raw, Mapping):
            try:
                msg = Message.model_validate(dict(raw))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors()
                )
                raise InvalidInputError(f"messages[{i}] is invalid: {problems}") from exc
        else:
            raise InvalidInputError(f"messages[{i}] must be a dict, not {type(raw).__name__}")
        text = msg.text()
        if not text.strip():
            raise InvalidInputError(f"messages[{i}] has no content")
        if len(text) > limits.max_message_chars:
            raise PayloadTooLargeError(
                f"messages[{i}] has {len(text)} characters; the limit is {limits.max_message_chars}"
            )
        out.append(msg)
    return out


def render_line(msg: Message) -> str:
    """``Speaker (8 May 2023, 13:56): text`` — one line of a window."""
    when = msg.chat_time.strftime("%d %B %Y, %H:%M").lstrip("0")
    text = " ".join(msg.text().split())
    return f"{msg.speaker} ({when}): {text}"


def _windows(n: int, cfg: WindowConfig) -> list[range]:
    if n <= cfg.size:
        return [range(n)]
    step = cfg.size - cfg.overlap
    out = []
    start = 0
    while True:
        end = min(start + cfg.size, n)
        out.append(range(start, end))
        if end == n:
            return out
        start += step


def fast_items(
    messages: Sequence[Message],
    *,
    cube_id: str,
    user_id: str,
    conversation_id: str | None,
    agent_id: str | None,
    app_id: str | None,
    tags: Sequence[str],
    info: Mapping[str, Any],
    embedding_model: str,
    window: WindowConfig,
) -> list[MemoryItem]:
    """The ``mode="fast"`` items of one add: one per window of turns."""
    now = utcnow()
    items = []
    for rng in _windows(len(messages), window):
        chunk = [messages[i] for i in rng]
        items.append(
            MemoryItem(
                cube_id=cube_id,
                user_id=user_id,
                agent_id=agent_id,
                conversation_id=conversation_id,
                app_id=app_id,
                memory="\n".join(render_line(m) for m in chunk),
                memory_type="long_term",
                mode="fast",
                tags=list(tags),
                info=dict(info),
                sources=[
                    SourceRef(
                        type="chat",
                        message_id=m.id,
                        role=m.role,
                        name=m.name,
                        chat_time=m.chat_time,
                        conversation_id=conversation_id,
                    )
                    for m in chunk
                ],
                created_at=now,
                updated_at=now,
                event_time=chunk[0].chat_time,
                embedding_model=embedding_model,
            )
        )
    return items


def enrich(item: MemoryItem) -> MemoryItem:
    """Keywords and ``event_time`` from relative dates, resolved per line against that
    line's chat time (the line order matches ``sources``)."""
    lines = item.memory.split("\n")
    anchors = [s.chat_time for s in item.sources]
    resolved = []
    texts = []
    for idx, line in enumerate(lines):
        anchor = (anchors[idx] if idx < len(anchors) else None) or item.event_time or item.created_at
        text = content_of(line)  # the speaker/time prefix is not content
        texts.append(text)
        resolved += [when for _, when in resolve_dates(text, anchor)]
    dates = [d.strftime("%d %B %Y").lstrip("0") for d in resolved]
    return item.evolve(
        keywords=keywords("\n".join(texts)) + list(dict.fromkeys(dates)),
        event_time=min(resolved) if resolved else item.event_time,
    )


def refine(
    store: MemoryStore,
    memory_ids: Sequence[str],
    *,
    dedup_threshold: float = 0.97,
    dedup_overlap: float = 0.9,
) -> tuple[PutItems, list[str]]:
    """The deterministic fine stage for the fast items ``memory_ids``.

    Returns the write to apply (one atomic batch with the task's completion) and the ids that
    were merged into older duplicates. Refined items get ``mode="fine"``. Items no longer
    active are skipped. The write carries ``if_revisions`` for every item it touches, so any
    write in between (an update, a delete, another merge) makes it fail with ConflictError
    and the task re-reads and tries again instead of writing back a stale copy.
    """
    current = [i for i in store.get(memory_ids) if i is not None and i.status == MemoryStatus.ACTIVATED.value]
    if not current:
        return PutItems([]), []
    vectors = store.get_embeddings([i.id for i in current])
    out: dict[str, MemoryItem] = {}
    expected: dict[str, int] = {}
    merged: list[str] = []
    for item in current:
        new = enrich(item).evolve(mode="fine")
        vec = vectors.get(item.id)
        dup = (
            _older_duplicate(store, item, vec, memory_ids, dedup_threshold, dedup_overlap)
            if vec is not None
            else None
        )
        if dup is not None:
            base = out.get(dup.id, dup)
            known = {(s.message_id, s.conversation_id, s.chat_time) for s in base.sources}
            extra = [s for s in item.sources if (s.message_id, s.conversation_id, s.chat_time) not in known]
            out[dup.id] = base.evolve(sources=[*base.sources, *extra], updated_at=utcnow())
            expected.setdefault(dup.id, dup.revision)
            new = new.evolve(
                status=MemoryStatus.ARCHIVED.value,
                merged_into=dup.id,
                history=[
                    *item.history,
                    VersionRecord(version=item.version, memory=item.memory, tags=item.tags,
                                  info=item.info, reason=f"merged into {dup.id}"),
                ],
                updated_at=utcnow(),
            )  # fmt: skip
            merged.append(item.id)
        out[item.id] = new
        expected[item.id] = item.revision
    ids = list(out)
    return PutItems([out[i] for i in ids], None, [expected[i] for i in ids]), merged


def _older_duplicate(
    store: MemoryStore,
    item: MemoryItem,
    vec: np.ndarray,
    siblings: Sequence[str],
    threshold: float,
    overlap: float,
) -> MemoryItem | None:
    """The older active item this one repeats, in the same scope (conversation, agent, app,
    type, tags and info), with cosine >= ``threshold`` *and* the same words
    (``lexical_overlap`` >= ``overlap``), so "note 5" never merges into "note 6" and a merge
    never moves a memory out of a conversation or a filter that found it."""
    where = F.and_(
        F.eq("status", MemoryStatus.ACTIVATED.value),
        F.eq("memory_type", item.memory_type),
        F.eq("conversation_id", item.conversation_id),
        F.eq("agent_id", item.agent_id),
        F.eq("app_id", item.app_id),
        F.parse_filter({"created_at": {"lte": item.created_at}}),
        F.parse_filter({"id": {"nin": [item.id, *siblings]}}),  # items of the same add never merge
    )
    hits = store.batch([VectorSearch([item.cube_id], vec, where, 3, item.embedding_model)])[0]
    close = [h.id for h in hits if h.score >= threshold]
    for found in store.get(close) if close else []:
        if (
            found is not None
            and sorted(found.tags) == sorted(item.tags)
            and found.info == item.info
            and lexical_overlap(content_of(found.memory), content_of(item.memory)) >= overlap
        ):
            return found
    return None
