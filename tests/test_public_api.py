"""The public surface of memos_core changes only on purpose (update this list when it does)."""

from __future__ import annotations

import memos_core

EXPECTED = {
    "AddData", "CachingEmbedder", "ConflictError", "Embedder", "EmbeddingError", "Envelope",
    "FilterError", "InvalidInputError", "KnowledgeBaseNotFoundError", "LeaseLostError", "Limits", "MemOS",
    "MemOSClient", "MemScheduler", "MemoryHit", "MemoryItem", "MemoryNotFoundError", "MemoryStatus",
    "MemoryStore", "MemoryType", "MemosError", "Message", "MissingDependencyError",
    "NotFoundError", "NotSupportedError", "Page", "PayloadTooLargeError", "PermissionDeniedError",
    "RequestError", "RetrievalConfig", "RuntimeFailure", "ScoredId", "SearchData",
    "SentenceTransformerEmbedder", "SourceRef", "SqliteStore", "StoreBusyError", "StoreError",
    "Task", "TaskFailedError", "TaskNotFoundError", "TaskQueue", "TaskStatus", "VersionRecord",
    "WindowConfig", "__version__", "default_embedder", "evaluate", "parse_filter", "user_cube_id",
    "MemCube", "CubeNotFoundError", "LLMError", "LLMOutputError", "LLM", "OpenAIChatLLM", "TransformersLLM",
    "structured", "kb_cube_id", "Context", "FORMS", "forms_key", "forms_summary",
    "SEARCH_MODES", "SearchMode",
}  # fmt: skip


def test_exported_members() -> None:
    assert set(memos_core.__all__) == EXPECTED
    for name in memos_core.__all__:
        assert hasattr(memos_core, name), name


def test_every_error_is_in_one_tree() -> None:
    errors = [getattr(memos_core, n) for n in memos_core.__all__ if n.endswith("Error")]
    assert all(issubclass(e, memos_core.MemosError) for e in errors)
    assert not issubclass(memos_core.FilterError, memos_core.RuntimeFailure)
    assert not issubclass(memos_core.StoreBusyError, memos_core.RequestError)
