"""MemOS for LlamaIndex: a retriever, a memory block and a vector store.

- :class:`MemosRetriever` — a LlamaIndex ``BaseRetriever`` over MemOS hybrid search, for a
  ``RetrieverQueryEngine`` or a chat engine.
- :class:`MemosMemoryBlock` — a ``BaseMemoryBlock`` for ``llama_index.core.memory.Memory``:
  messages flushed from short-term memory are remembered under the Memory's ``session_id``
  (as the MemOS ``conversation_id``), and relevant memories are recalled for each turn.
- :class:`MemosVectorStore` — a ``BasePydanticVectorStore`` that keeps nodes as MemOS
  memories, so ``VectorStoreIndex`` works on top of MemOS search and filters.
- :func:`to_memos_filter` — LlamaIndex ``MetadataFilters`` compiled to the MemOS filter DSL.

Only the public API of ``memos_core`` is used. Needs ``llama-index-core`` (extra
``llamaindex``).

Example:
    >>> from memos_core import MemOS
    >>> from memos_llamaindex import MemosRetriever
    >>> retriever = MemosRetriever(MemOS("./memos-data"), user_id="u1", top_k=5)
    >>> nodes = retriever.retrieve("what is the user learning?")
"""

from __future__ import annotations

from memos_core import MissingDependencyError

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise MissingDependencyError("llama-index-core", "llamaindex") from exc

from .filters import to_memos_filter
from .memory_block import MemosMemoryBlock
from .retriever import MemosRetriever, hit_to_node
from .vector_store import MemosVectorStore

__all__ = [
    "MemosMemoryBlock",
    "MemosRetriever",
    "MemosVectorStore",
    "hit_to_node",
    "to_memos_filter",
]
