"""MemOS core: a memory operating system for AI agents.

Example:
    >>> from memos_core import MemOS
    >>> mem = MemOS("./memos-data")
    >>> mem.add_message([{"role": "user", "content": "I'm learning Python"}], user_id="u1")
"""

from __future__ import annotations

from .embedders import CachingEmbedder, SentenceTransformerEmbedder, default_embedder
from .errors import (
    ConflictError,
    EmbeddingError,
    FilterError,
    InvalidInputError,
    KnowledgeBaseNotFoundError,
    LeaseLostError,
    MemoryNotFoundError,
    MemosError,
    MissingDependencyError,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestError,
    RuntimeFailure,
    StoreBusyError,
    StoreError,
    TaskFailedError,
    TaskNotFoundError,
)
from .filters import evaluate, parse_filter
from .memos import MemOS, user_cube_id
from .ports import Embedder, MemoryStore, ScoredId, TaskQueue
from .reader import Limits, WindowConfig
from .retrieval import RetrievalConfig
from .scheduler import MemScheduler
from .schema import (
    AddData,
    Envelope,
    MemoryHit,
    MemoryItem,
    MemoryStatus,
    MemoryType,
    Message,
    Page,
    SearchData,
    SourceRef,
    Task,
    TaskStatus,
    VersionRecord,
)
from .stores.sqlite import SqliteStore

__version__ = "0.1.0"

__all__ = [
    "AddData",
    "CachingEmbedder",
    "ConflictError",
    "Embedder",
    "EmbeddingError",
    "Envelope",
    "FilterError",
    "InvalidInputError",
    "KnowledgeBaseNotFoundError",
    "LeaseLostError",
    "Limits",
    "MemOS",
    "MemScheduler",
    "MemoryHit",
    "MemoryItem",
    "MemoryNotFoundError",
    "MemoryStatus",
    "MemoryStore",
    "MemoryType",
    "MemosError",
    "Message",
    "MissingDependencyError",
    "NotFoundError",
    "NotSupportedError",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RequestError",
    "RetrievalConfig",
    "RuntimeFailure",
    "ScoredId",
    "SearchData",
    "SentenceTransformerEmbedder",
    "SourceRef",
    "SqliteStore",
    "StoreBusyError",
    "StoreError",
    "Task",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskQueue",
    "TaskStatus",
    "VersionRecord",
    "WindowConfig",
    "__version__",
    "default_embedder",
    "evaluate",
    "parse_filter",
    "user_cube_id",
]
