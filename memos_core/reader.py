"""MemReader: turns messages into memory items (layer 3).

The fast stage (:func:`validate_messages`, :func:`fast_items`) is synchronous and cheap:
messages are validated, windowed (a few turns with overlap, each line carrying speaker and
time) and become ``mode="fast"`` items. The deterministic part of the fine stage
(:func:`refine`) needs no LLM: it resolves relative dates against each message's chat time
into ``event_time``, extracts keywords and merges near-duplicates into the older item. No id
handed out is ever removed: a merged item stays readable with ``merged_into`` set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from . import filters as F
from .errors import InvalidInputError, PayloadTooLargeError
from .facts import extract_facts
from .lifecycle import FactDraft
from .llms import LLM, structured
from .ports import MemoryStore, PutItems, VectorSearch
from .schema import (
    Context,
    MemoryItem,
    MemoryStatus,
    Message,
    SourceRef,
    VersionRecord,
    display_url,
    new_id,
    parse_time,
    utcnow,
)
from .text import content_of, keywords, lexical_overlap, resolve_dates, tokenize

__all__ = [
    "Limits",
    "WindowConfig",
    "context_line",
    "context_lines",
    "extend_context",
    "fast_items",
    "image_items",
    "item_vectors",
    "llm_facts",
    "refine",
    "render_line",
    "rewrite_context",
    "rule_facts",
    "validate_messages",
    "vector_texts",
]


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
    """Fast-stage items: ``size`` turns per memory, ``overlap`` turns shared by neighbours,
    and ``context`` turns on each side indexed with it (:class:`~memos_core.schema.Context`).

    The default, one turn per memory with three turns of context each side, is the measured
    best on LoCoMo (docs/BENCHMARKS.md): a hit names exactly the turn that said it, and the
    context finds replies whose own words never name the question ("Coconut milk ice cream
    is at the top of my list" answers "What is Nate's favourite dish?").
    """

    size: int = 1
    overlap: int = 0
    context: int = 3

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.overlap < self.size:
            raise InvalidInputError("window size must be >= 1 and 0 <= overlap < size")
        if self.context < 0:
            raise InvalidInputError("window context must be >= 0")


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


def context_line(msg: Message) -> str:
    """``Speaker: text`` — a turn as context of another (its time is the memory's own)."""
    return f"{msg.speaker}: {' '.join(msg.text().split())}"


_LINE_RE = re.compile(r"^(?P<speaker>[^\n]*?)(?: \([^)\n]*\))?: (?P<text>.*)$")


def _spoken(line: str) -> str:
    """A rendered line as ``Speaker said, "text"``, the form the packaged sentence model
    matches questions about a speaker best (LoCoMo: 0.552 vs 0.510 turn R@10 for
    ``Speaker: text``, 0.296 for the bare text)."""
    m = _LINE_RE.match(line)
    return f'{m["speaker"]} said, "{m["text"]}"' if m else line


def context_lines(item: MemoryItem) -> list[str]:
    """``item``'s rendered lines as context of other turns (``Speaker: text``, no time)."""
    out = []
    for line in item.memory.split("\n"):
        m = _LINE_RE.match(line)
        out.append(f"{m['speaker']}: {m['text']}" if m else line)
    return out


def extend_context(earlier: Sequence[MemoryItem], later: Sequence[MemoryItem], size: int) -> list[MemoryItem]:
    """The ``earlier`` turns (oldest first) with the ``later`` turns of their conversation
    appended to their ``after`` context, up to ``size`` lines; only the ones that changed."""
    new_lines = [(line, item.id) for item in later for line in context_lines(item)]
    out = []
    for idx, item in enumerate(earlier):
        ctx = item.context or Context()
        between = [(line, other.id) for other in earlier[idx + 1 :] for line in context_lines(other)]
        after = [*between, *new_lines][:size]  # what follows it, now that more is known
        if len(after) > len(ctx.after):
            update = {"after": [x for x, _ in after], "after_ids": [i for _, i in after]}
            out.append(item.evolve(context=ctx.model_copy(update=update), updated_at=utcnow()))
    return out


def rewrite_context(item: MemoryItem, changed_id: str, lines: Sequence[str] | None) -> MemoryItem | None:
    """``item`` with the lines of memory ``changed_id`` in its context replaced by ``lines``
    (an edit) or removed (``None``: a delete); None when its context does not hold them."""
    ctx = item.context
    if ctx is None or changed_id not in ctx.neighbours():
        return None

    def fix(text: list[str], ids: list[str]) -> tuple[list[str], list[str]]:
        out_text: list[str] = []
        out_ids: list[str] = []
        done = False
        for line, line_id in zip(text, ids, strict=False):
            if line_id != changed_id:
                out_text.append(line)
                out_ids.append(line_id)
            elif lines is not None and not done:
                out_text += list(lines)
                out_ids += [changed_id] * len(lines)
                done = True
        return out_text, out_ids

    before, before_ids = fix(ctx.before, ctx.before_ids)
    after, after_ids = fix(ctx.after, ctx.after_ids)
    new = Context(before=before, after=after, before_ids=before_ids, after_ids=after_ids)
    return item.evolve(context=new if before or after else None, updated_at=utcnow())


def vector_texts(item: MemoryItem) -> list[str]:
    """The texts whose embeddings, summed, are ``item``'s vector.

    An item without context is its memory. A chat memory with context is the sum of three
    views: the turn itself, the turn among its nearest neighbours (one each side), and the
    turn with the one after it (a question is usually answered by the next turn). Each view
    alone does worse on LoCoMo than the sum (docs/BENCHMARKS.md). The recipe is a pure
    function of the item, so a re-index computes the same vectors.
    """
    ctx = item.context
    if ctx is None or not (ctx.before or ctx.after):
        return [item.memory]
    own = "\n".join(_spoken(line) for line in item.memory.split("\n"))
    before, after = [_spoken(x) for x in ctx.before[-1:]], [_spoken(x) for x in ctx.after[:1]]
    views = [own, "\n".join([*before, own, *after])]
    if after:
        views.append("\n".join([own, *after]))
    return list(dict.fromkeys(views))


def item_vectors(embedder: Any, items: Sequence[MemoryItem], *, fast: bool = False) -> np.ndarray:
    """Unit vectors of ``items`` by :func:`vector_texts`, embedded in one batch. ``fast``: the
    first view only (the turn itself), what the fast stage writes so an add stays one short
    embedding; the fine stage replaces it with the full sum."""
    texts = [vector_texts(i)[:1] if fast else vector_texts(i) for i in items]
    flat = list(dict.fromkeys(t for views in texts for t in views))
    if not flat:
        return np.zeros((0, int(embedder.dim)), dtype=np.float32)
    at = {t: n for n, t in enumerate(flat)}
    vectors = np.asarray(embedder.embed(flat), dtype=np.float32)
    out = np.stack([vectors[[at[t] for t in views]].sum(axis=0) for views in texts])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float32)


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
    previous: Sequence[MemoryItem] = (),
) -> list[MemoryItem]:
    """The ``mode="fast"`` items of one add: one per window of turns, each with up to
    ``window.context`` turns on either side as its context: turns of this add, and before
    the first ones the conversation's ``previous`` turns (oldest first). The turns after the
    last ones are added by the fine stage when they arrive (:func:`extend_context`)."""
    now = utcnow()
    items = []
    windows = _windows(len(messages), window)
    ids = [new_id() for _ in windows]
    owner: dict[int, str] = {}
    for item_id, rng in zip(ids, windows, strict=True):
        for i in rng:
            owner.setdefault(i, item_id)
    lines = [(line, p.id) for p in previous for line in context_lines(p)]
    shift = len(lines)
    lines += [(context_line(m), owner[i]) for i, m in enumerate(messages)]
    for item_id, rng in zip(ids, windows, strict=True):
        chunk = [messages[i] for i in rng]
        n = window.context
        start, stop = rng.start + shift, rng.stop + shift
        before = lines[max(0, start - n) : start] if n else []
        after = lines[stop : stop + n] if n else []
        context = (
            Context(
                before=[x for x, _ in before], after=[x for x, _ in after],
                before_ids=[i for _, i in before], after_ids=[i for _, i in after],
            )
            if before or after
            else None
        )  # fmt: skip
        items.append(
            MemoryItem(
                id=item_id,
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
                context=context,
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


def _speakers(item: MemoryItem) -> set[tuple[str | None, str | None]]:
    return {(s.name, s.role) for s in item.sources if s.type == "chat"}


#: A turn with context merges into an older one only with at least this many words.
MIN_MERGE_WORDS = 5


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
    if item.context is not None:
        # Context pulls apart the vectors of the same words said in different places (a resent
        # turn: cosine 0.90), so the nearest ones are candidates and the words decide; a turn
        # too short to tell ("Thanks!") is not merged, its context stays findable.
        if len(tokenize(content_of(item.memory))) < MIN_MERGE_WORDS:
            return None
        threshold = -1.0
    hits = store.batch([VectorSearch([item.cube_id], vec, where, 3, item.embedding_model)])[0]
    close = [h.id for h in hits if h.score >= threshold]
    for found in store.get(close) if close else []:
        if (
            found is not None
            and (item.context is None or _speakers(found) == _speakers(item))  # same words, same mouth
            and sorted(found.tags) == sorted(item.tags)
            and found.info == item.info
            and lexical_overlap(content_of(found.memory), content_of(item.memory)) >= overlap
        ):
            return found
    return None


# ----------------------------------------------------------------------------- images


def image_items(
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
) -> list[tuple[MemoryItem, str]]:
    """One ``mode="fast"`` memory per ``image_url`` part: who shared it, when, its URL and
    the text around it. Paired with the full URL, which the fine stage reads (OCR, caption)."""
    now = utcnow()
    out: list[tuple[MemoryItem, str]] = []
    for msg in messages:
        if isinstance(msg.content, str):
            continue
        around = " ".join(p.text for p in msg.content if p.type == "text" and p.text)
        when = msg.chat_time.strftime("%d %B %Y, %H:%M").lstrip("0")
        for part in msg.content:
            url = part.url() if part.type == "image_url" else ""
            if not url:
                continue
            shown = display_url(url)
            text = f"{msg.speaker} ({when}) shared an image: {shown}"
            if around.strip():
                text += f"\n{msg.speaker} said: {' '.join(around.split())}"
            item = MemoryItem(
                cube_id=cube_id,
                user_id=user_id,
                agent_id=agent_id,
                conversation_id=conversation_id,
                app_id=app_id,
                memory=text,
                memory_type="long_term",
                mode="fast",
                tags=list(tags),
                info=dict(info),
                sources=[
                    SourceRef(
                        type="image",
                        url=shown,
                        message_id=msg.id,
                        role=msg.role,
                        name=msg.name,
                        chat_time=msg.chat_time,
                        conversation_id=conversation_id,
                    )
                ],
                created_at=now,
                updated_at=now,
                event_time=msg.chat_time,
                embedding_model=embedding_model,
            )
            out.append((item, url))
    return out


# ----------------------------------------------------------------------------- facts

_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll)\b|\b(?:me|my|mine|myself)\b", re.I)
_SECOND_PERSON = re.compile(r"\b(?:you|your|yours)\b", re.I)
FACT_SYSTEM_PROMPT = """Extract facts about the people in the chat. Write each fact as one full \
sentence in the third person, with names instead of "I" or "you", and with absolute dates \
(the chat lines carry their dates). Reply with JSON only.
memory_type is "user" for facts about a person, "preference" for likes and dislikes, \
"long_term" for anything else.
Example chat:
Bob (2 March 2024, 10:00): I work at a bakery and I have two cats.
Example reply:
{"facts": [{"memory": "Bob works at a bakery.", "key": "Bob's job", "memory_type": "user", \
"tags": ["work"]}, {"memory": "Bob has two cats.", "key": "Bob's pets", "memory_type": "user", \
"tags": ["pets"]}]}"""


class _LLMFact(BaseModel):
    memory: str = Field(min_length=3, max_length=500)
    key: str | None = Field(default=None, max_length=120)
    memory_type: str = "long_term"
    tags: list[str] = Field(default_factory=list, max_length=10)
    date: str | None = None


class _LLMFacts(BaseModel):
    facts: list[_LLMFact] = Field(max_length=30)


def _speaker_of(src: SourceRef) -> str:
    return src.name or ("The user" if src.role == "user" else src.role or "someone")


def rule_facts(item: MemoryItem) -> list[FactDraft]:
    """Facts from the first-person statements in a chat window, by the rules of
    :mod:`memos_core.facts` (the path taken without an LLM, or when it fails)."""
    out: list[FactDraft] = []
    lines = item.memory.split("\n")
    for idx, src in enumerate(item.sources):
        if src.type != "chat" or src.role != "user" or idx >= len(lines):
            continue
        anchor = src.chat_time or item.event_time or item.created_at
        for fact in extract_facts(
            content_of(lines[idx]), speaker=_speaker_of(src), anchor=anchor, role="user"
        ):
            out.append(
                FactDraft(
                    text=fact.text,
                    memory_type=fact.memory_type,
                    key=fact.key,
                    tags=fact.tags,
                    event_time=fact.event_time,
                    sources=(src, SourceRef(type="memory", memory_id=item.id, content="facts: rules")),
                    parent=item,
                    origin="rules",
                )
            )
    return out


def llm_facts(llm: LLM, item: MemoryItem, *, attempts: int = 2) -> list[FactDraft]:
    """Facts from a chat window written by ``llm``, checked before they are believed:
    first person is resolved to the only speaker (or the fact dropped), and a fact must be
    grounded in the window (most of its words appear there) — a small model echoing the
    prompt's example is dropped, not stored. Raises LLMError/LLMOutputError on failure."""
    chat = [s for s in item.sources if s.type == "chat"]
    lines = item.memory.split("\n")
    earlier = item.context.before if item.context is not None else []
    prompt = "Chat:\n" + item.memory
    if earlier:  # a reply ("Yes, for three years") means little without what it answers
        prompt = "Said just before (context only):\n" + "\n".join(earlier) + "\n\n" + prompt
    answer = structured(
        llm,
        [
            {"role": "system", "content": FACT_SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ],
        _LLMFacts,
        attempts=attempts,
        prefix='{"facts": [{"memory": "',
        max_tokens=300,
    )
    speakers = list(dict.fromkeys(_speaker_of(s) for s in chat if s.role != "assistant"))
    # Grounded in the turn's own words: the context is there to be understood, not quoted (a
    # fact taken from another speaker's line would be credited to this one).
    window_words = {w[:4] for w in tokenize(content_of(item.memory), drop_stopwords=True)}
    anchor = chat[-1].chat_time if chat and chat[-1].chat_time else item.event_time or item.created_at
    out: list[FactDraft] = []
    seen: set[str] = set()
    for fact in answer.facts:
        text = " ".join(fact.memory.split()).strip()
        if _FIRST_PERSON.search(text):
            if len(speakers) != 1:
                continue
            text = _third_person(text, speakers[0])
        if _SECOND_PERSON.search(text) or text.lower() in seen or len(text.split()) < 3:
            continue  # "Caroline's painting." is a fragment, not a fact
        # Stems by prefix ("lives"/"live"): the model rephrases, it must not invent.
        words = {w[:4] for w in tokenize(text, drop_stopwords=True)} - {
            w[:4] for s in speakers for w in tokenize(s)
        }
        if not words or len(words & window_words) / len(words) < 0.6:
            continue  # not grounded in the window
        seen.add(text.lower())
        when = _iso_date(fact.date) or next((d for _, d in resolve_dates(text, anchor)), None)
        src = None
        if chat:
            line = max(
                range(len(chat)), key=lambda i: lexical_overlap(text, lines[i]) if i < len(lines) else 0.0
            )
            src = chat[line]
        out.append(
            FactDraft(
                text=text if text.endswith((".", "!", "?", "。")) else text + ".",
                memory_type=fact.memory_type if fact.memory_type in ("user", "preference") else "long_term",
                key=fact.key,
                tags=tuple(t.strip().lower() for t in fact.tags if t.strip())[:5],
                event_time=when,
                sources=(*((src,) if src else ()), SourceRef(type="memory", memory_id=item.id,
                                                               content=f"facts: {llm.model_id}")),
                parent=item,
                origin=llm.model_id,
            )
        )  # fmt: skip
    return out


_AGREE = {"am": "is", "was": "was", "have": "has", "do": "does", "go": "goes"}


def _third_person(text: str, name: str) -> str:
    """ "I live in Paris, my cat..." -> "Alice lives in Paris, Alice's cat..." (the common
    verb forms agree; anything odder stays as the model wrote it)."""
    possessive = f"{name}'s"
    # Replacements are functions: a name is text, never a regex template ("Bob\\d").
    text = re.sub(r"\b(?:my|mine)\b", lambda _: possessive, text, flags=re.I)
    for short, verb in (("I'm", "is"), ("I've", "has"), ("I'd", "would"), ("I'll", "will")):
        text = re.sub(rf"\b{short}\b", lambda _, v=verb: f"{name} {v}", text)  # type: ignore[misc]

    def subject(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb.lower() in _AGREE:
            return f"{name} {_AGREE[verb.lower()]}"
        if verb.isalpha() and verb.islower() and not verb.endswith("s") and verb not in _MODALS:
            return f"{name} {verb}{'es' if verb.endswith(('sh', 'ch', 'x', 'o')) else 's'}"
        return f"{name} {verb}"

    text = re.sub(r"\bI (\w+)", subject, text)
    text = re.sub(r"\bI\b", lambda _: name, text)
    return re.sub(r"\b(?:me|myself)\b", lambda _: name, text, flags=re.I)


_MODALS = {"can", "could", "will", "would", "should", "must", "might", "may", "shall", "did", "had", "also"}


def _iso_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None
