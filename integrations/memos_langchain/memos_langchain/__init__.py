"""MemOS for LangChain (``langchain-core`` 1.x): a retriever, a chat message history and
memory tools for agents. Only the public API of ``memos_core`` is used.

- :class:`MemosRetriever`: hybrid search as a ``BaseRetriever`` (sync and async).
- :class:`MemosChatMessageHistory`: a conversation's messages, persisted in the MemOS data
  folder and added to MemOS as memory (fast stage) as they arrive; works with
  ``RunnableWithMessageHistory``.
- :func:`create_memory_tools`: ``search_memory`` and ``save_memory`` ``StructuredTool``s, the
  user resolved from the run config.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from memos_core import MissingDependencyError

    raise MissingDependencyError("langchain-core", "langchain") from exc

from .history import MemosChatMessageHistory
from .retriever import MemosRetriever, hit_to_document
from .tools import create_memory_tools

__all__ = ["MemosChatMessageHistory", "MemosRetriever", "create_memory_tools", "hit_to_document"]
