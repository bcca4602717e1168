"""Pure data: messages, memory items, tasks and the response envelopes (layer 0).

Nothing here performs I/O or imports another module of ours. Items are immutable pydantic
models; change one with :meth:`MemoryItem.evolve`, which returns a new value.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AddData",
    "ContentPart",
    "Context",
    "Envelope",
    "MemoryHit",
    "MemoryItem",
    "MemoryStatus",
    "MemoryType",
    "Message",
    "Page",
    "SearchData",
    "SourceRef",
    "Task",
    "TaskStatus",
    "VersionRecord",
    "display_url",
    "format_time",
    "new_id",
    "parse_time",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh UUID4 string: the id of an item or a task, stable forever."""
    return str(uuid.uuid4())


def parse_time(value: str | datetime) -> datetime:
    """Parse an ISO-8601 string (or take a datetime) as an aware UTC datetime.

    Naive values are taken to be UTC. Raises ``ValueError`` on garbage.
    """
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.astimezone(timezone.utc)
    except OverflowError as exc:  # e.g. 9999-12-31T23:00-05:00 is past year 9999 in UTC
        raise ValueError(f"time {value!s} is out of range") from exc


def format_time(dt: datetime) -> str:
    """The canonical text form of a time: fixed-width UTC ISO-8601, so it sorts as text."""
    return parse_time(dt).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class MemoryType(StrEnum):
    """Well-known memory types. Any other non-empty string is accepted too (extendable)."""

    WORKING = "working"
    LONG_TERM = "long_term"
    USER = "user"
    KNOWLEDGE = "knowledge"
    TOOL = "tool"
    PREFERENCE = "preference"


class MemoryStatus(StrEnum):
    ACTIVATED = "activated"
    ARCHIVED = "archived"
    DELETED = "deleted"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


_Frozen = ConfigDict(frozen=True, extra="forbid")
_M = TypeVar("_M", bound=BaseModel)


def display_url(url: str) -> str:
    """A URL as memories show it: a ``data:`` URL becomes its media type and decoded size
    (``data:image/png;base64,…(1234 bytes)``; the payload is never copied into memory text),
    other URLs are capped at 2000 characters."""
    if url[:5].lower() == "data:":
        header, sep, payload = url[5:].partition(",")
        if not sep:
            return f"data:…({len(url) - 5} chars, no comma)"
        size = len(payload.rstrip("=")) * 3 // 4 if header.lower().endswith(";base64") else len(payload)
        return f"data:{header[:100]},…({size} bytes)"
    return url if len(url) <= 2000 else url[:1999] + "…"


class ContentPart(BaseModel):
    """One part of a multi-part message: ``text``, ``image_url`` or ``file``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: Literal["text", "image_url", "file"]
    text: str | None = None
    image_url: dict[str, Any] | str | None = None
    file: dict[str, Any] | None = None

    def url(self) -> str:
        """The image URL of an ``image_url`` part ("" when absent)."""
        value = self.image_url.get("url") if isinstance(self.image_url, dict) else self.image_url
        return value if isinstance(value, str) else ""


class Message(BaseModel):
    """An OpenAI-style chat message, normalised."""

    model_config = _Frozen

    role: Literal["user", "assistant", "system", "tool"]
    content: str | list[ContentPart]
    name: str | None = None
    id: str | None = None
    chat_time: datetime = Field(default_factory=utcnow)

    @field_validator("chat_time", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        # Keep the caller's UTC offset (lines render in the speaker's local time); a naive
        # time is taken as UTC.
        if isinstance(value, str):
            value = (
                parse_time(value) if value.strip().endswith("Z") else datetime.fromisoformat(value.strip())
            )
        if isinstance(value, datetime):
            parse_time(value)  # range check: the stored form is UTC
            if value.tzinfo is None:
                return value.replace(tzinfo=timezone.utc)
        return value

    @property
    def speaker(self) -> str:
        """The name to show for this message: its ``name``, else its role."""
        return self.name or self.role

    def text(self) -> str:
        """All text of the message, image and file parts rendered as short markers."""
        if isinstance(self.content, str):
            return self.content
        out: list[str] = []
        for part in self.content:
            if part.type == "text" and part.text:
                out.append(part.text)
            elif part.type == "image_url":
                out.append(f"[image: {display_url(part.url())}]")
            elif part.type == "file":
                meta = part.file or {}
                label = meta.get("filename") or meta.get("file_id") or meta.get("url") or "file"
                out.append(f"[file: {label}]")
        return "\n".join(out)


class SourceRef(BaseModel):
    """Provenance of a memory: a chat message, a document chunk or an image."""

    model_config = _Frozen

    type: Literal["chat", "doc", "image", "memory", "feedback"] = "chat"
    message_id: str | None = None
    role: str | None = None
    name: str | None = None
    chat_time: datetime | None = None
    conversation_id: str | None = None
    doc_id: str | None = None
    chunk_index: int | None = None
    url: str | None = None
    memory_id: str | None = None
    content: str | None = None
    #: For a document chunk: its character span in the document's text.
    char_start: int | None = None
    char_end: int | None = None
    #: Why the source could not be read (an unreachable image, say); recorded, not fatal.
    error: str | None = None


class VersionRecord(BaseModel):
    """An earlier version of a memory, kept in its ``history`` for audit and rollback."""

    model_config = _Frozen

    version: int
    memory: str
    tags: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    status: str = MemoryStatus.ARCHIVED.value
    changed_at: datetime = Field(default_factory=utcnow)
    reason: str = "update"
    key: str | None = None
    sources: list[SourceRef] = Field(default_factory=list)
    event_time: datetime | None = None


class Context(BaseModel):
    """What was said around a chat memory: neighbouring turns as ``Speaker: text`` lines,
    nearest last in ``before`` and nearest first in ``after``. Indexed with the memory (its
    BM25 text and its vector) so a reply like "Coconut milk ice cream!" is found by the
    question it answered; never part of the memory's own text."""

    model_config = _Frozen

    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)
    #: The memory each line came from, line for line: a delete or an edit of that memory
    #: removes or rewrites its line here too.
    before_ids: list[str] = Field(default_factory=list)
    after_ids: list[str] = Field(default_factory=list)

    def neighbours(self) -> list[str]:
        """The ids of the memories whose lines this context holds."""
        return list(dict.fromkeys([*self.before_ids, *self.after_ids]))


class MemoryItem(BaseModel):
    """One memory, whatever its form (DESIGN §3). Immutable; see :meth:`evolve`."""

    model_config = _Frozen

    id: str = Field(default_factory=new_id)
    cube_id: str
    user_id: str | None = None
    agent_id: str | None = None
    conversation_id: str | None = None
    app_id: str | None = None
    memory: str
    key: str | None = None
    memory_type: str = MemoryType.LONG_TERM.value
    status: str = MemoryStatus.ACTIVATED.value
    version: int = 1
    history: list[VersionRecord] = Field(default_factory=list)
    mode: Literal["fast", "fine"] = "fast"
    tags: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    keywords: list[str] = Field(default_factory=list)
    sources: list[SourceRef] = Field(default_factory=list)
    merged_into: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    event_time: datetime | None = None
    access_count: int = 0
    last_accessed_at: datetime | None = None
    confidence: float = 1.0
    embedding_model: str | None = None
    #: Set by the store: bumped by every write of the row (content or not). Pass the value
    #: you read as ``PutItems.if_revisions`` to write only if nobody wrote in between.
    revision: int = 0
    #: The turns said around a chat memory, indexed with it (see :class:`Context`).
    context: Context | None = None

    @field_validator("created_at", "updated_at", "event_time", "last_accessed_at", mode="before")
    @classmethod
    def _aware(cls, value: Any) -> Any:
        if isinstance(value, (str, datetime)):
            return parse_time(value)
        return value

    def evolve(self, **changes: Any) -> MemoryItem:
        """A copy with ``changes`` applied and validated."""
        data = self.model_dump()
        data.update(changes)
        return MemoryItem.model_validate(data)

    def search_text(self) -> str:
        """The text a store indexes for keyword search: the memory, its key and keywords, and,
        for a chat memory with context, the memory once more (its own words weigh double)
        with the turns around it."""
        parts = [self.memory, self.key or "", " ".join(self.keywords)]
        if self.context is not None and (self.context.before or self.context.after):
            parts += [self.memory, *self.context.before, *self.context.after]
        return "\n".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (times as ISO strings)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryItem:
        return cls.model_validate(data)

    def __eq__(self, other: object) -> bool:
        # Items are values with identity: same id and same version means the same item.
        if not isinstance(other, MemoryItem):
            return NotImplemented
        return self.id == other.id and self.version == other.version

    def __hash__(self) -> int:
        return hash((self.id, self.version))


class MemoryHit(BaseModel):
    """A search result: the memory plus its score and how the score was made."""

    model_config = _Frozen

    id: str
    memory: str
    score: float
    score_details: dict[str, float]
    memory_type: str
    key: str | None
    tags: list[str]
    info: dict[str, Any]
    sources: list[SourceRef]
    created_at: datetime
    event_time: datetime | None
    cube_id: str
    conversation_id: str | None
    mode: str
    version: int
    #: Where the hit came from: ``"memory"`` (the user's own cube), ``"knowledgebase"`` or
    #: ``"shared"`` (a cube another user shared); ``cube_id`` names it.
    origin: str = "memory"

    @classmethod
    def from_item(
        cls, item: MemoryItem, score: float, details: dict[str, float], origin: str = "memory"
    ) -> MemoryHit:
        # Built without validation (a search makes dozens): every field comes from a validated
        # item, and the numbers are made plain floats here.
        return _trusted(
            cls,
            id=item.id,
            memory=item.memory,
            score=float(score),
            score_details={k: float(v) for k, v in details.items()},
            memory_type=item.memory_type,
            key=item.key,
            tags=list(item.tags),
            # The item may be shared (a cached read): never alias it.
            info=copy.deepcopy(item.info) if item.info else {},
            sources=list(item.sources),
            created_at=item.created_at,
            event_time=item.event_time,
            cube_id=item.cube_id,
            conversation_id=item.conversation_id,
            mode=item.mode,
            version=item.version,
            origin=origin,
        )


def _trusted(cls: type[_M], **values: Any) -> _M:
    """``cls.model_construct(**values)`` given every field of ``cls``, without its walk over
    every field and alias (2.5 µs against 4.3 µs for a hit): the model's ``__dict__`` is
    ``values`` as they are. Falls back to ``model_construct`` for a model this shortcut does not
    cover (extra fields kept, a post-init hook, a missing field)."""
    if (
        cls.__pydantic_post_init__ is not None
        or cls.__pydantic_root_model__
        or cls.model_config.get("extra") == "allow"
        or values.keys() != cls.__pydantic_fields__.keys()
    ):
        return cls.model_construct(**values)
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class Task(BaseModel):
    """A durable background task (the fine stage of an add, and later lifecycle jobs)."""

    model_config = _Frozen

    task_id: str
    kind: str
    status: TaskStatus
    attempts: int = 0
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    memory_ids: list[str] = Field(default_factory=list)

    @classmethod
    def queued(cls, kind: str, memory_ids: Sequence[str] = (), *, at: datetime | None = None) -> Task:
        """A new task of ``kind``, queued now (or ``at``), with a fresh id."""
        now = at or utcnow()
        return cls(
            task_id=new_id(),
            kind=kind,
            status=TaskStatus.QUEUED,
            created_at=now,
            updated_at=now,
            memory_ids=list(memory_ids),
        )


# ----------------------------------------------------------------------------- envelopes

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """The seed API's response shape: ``{code, message, data}``."""

    model_config = ConfigDict(frozen=True)

    code: int = 200
    message: str = "ok"
    data: T


class AddData(BaseModel):
    model_config = _Frozen

    task_id: str
    memory_ids: list[str]
    status: TaskStatus


class SearchData(BaseModel):
    model_config = _Frozen

    memory_detail_list: list[MemoryHit]


class Page(BaseModel):
    """One page of a listing; ``next_offset`` is None on the last page."""

    model_config = _Frozen

    items: list[MemoryItem]
    total: int
    offset: int
    limit: int
    next_offset: int | None
