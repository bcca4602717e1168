"""MemOS core: a memory operating system for AI agents.

Example:
    >>> from memos_core import MemOS
    >>> mem = MemOS("./memos-data")
    >>> mem.add_message([{"role": "user", "content": "I'm learning Python"}], user_id="u1")
"""

from __future__ import annotations

from .client import MemOSClient
from .cube import FORMS, MemCube, forms_key, forms_summary
from .embedders import CachingEmbedder, SentenceTransformerEmbedder, default_embedder
from .errors import (
    ConflictError,
    CubeNotFoundError,
    EmbeddingError,
    FilterError,
    InvalidInputError,
    KnowledgeBaseNotFoundError,
    LeaseLostError,
    LLMError,
    LLMOutputError,
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
from .llms import LLM, OpenAIChatLLM, TransformersLLM, structured
from .memos import MemOS, kb_cube_id, user_cube_id
from .ports import Embedder, MemoryStore, ScoredId, TaskQueue
from .reader import Limits, WindowConfig
from .retrieval import SEARCH_MODES, RetrievalConfig, SearchMode
from .scheduler import MemScheduler
from .schema import (
    AddData,
    Context,
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
    "FORMS",
    "LLM",
    "SEARCH_MODES",
    "AddData",
    "CachingEmbedder",
    "ConflictError",
    "Context",
    "CubeNotFoundError",
    "Embedder",
    "EmbeddingError",
    "Envelope",
    "FilterError",
    "InvalidInputError",
    "KnowledgeBaseNotFoundError",
    "LLMError",
    "LLMOutputError",
    "LeaseLostError",
    "Limits",
    "MemCube",
    "MemOS",
    "MemOSClient",
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
    "OpenAIChatLLM",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RequestError",
    "RetrievalConfig",
    "RuntimeFailure",
    "ScoredId",
    "SearchData",
    "SearchMode",
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
    "TransformersLLM",
    "VersionRecord",
    "WindowConfig",
    "__version__",
    "default_embedder",
    "evaluate",
    "forms_key",
    "forms_summary",
    "kb_cube_id",
    "parse_filter",
    "structured",
    "user_cube_id",
]
