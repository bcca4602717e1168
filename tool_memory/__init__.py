"""Tool memory for MemOS: trace every tool call, reuse results, learn from experience.

- Tracing: :class:`ToolMemoryCallbackHandler` / :class:`AsyncToolMemoryCallbackHandler` for
  LangChain and LangGraph, :class:`ToolRecorder` (``.traced`` decorator, ``.call`` context
  manager, ``.run_tool_call`` for OpenAI-style tool call dicts) for plain Python.
- Reuse: :func:`cached_tool` (a LangChain tool), :func:`cached` (a function).
- Experience: :func:`tool_experience`, :func:`render_experience`, :func:`search_tool_memory`.

Only the public API of ``memos_core`` is used.
"""

from __future__ import annotations

from .cache import CacheStats, ToolCache, cached, cached_tool
from .core import ToolCall, ToolRecorder, args_hash, normalise_args
from .experience import ToolSummary, render_experience, search_tool_memory, tool_experience

__all__ = [
    "AsyncToolMemoryCallbackHandler",
    "CacheStats",
    "ToolCache",
    "ToolCall",
    "ToolMemoryCallbackHandler",
    "ToolRecorder",
    "ToolSummary",
    "args_hash",
    "cached",
    "cached_tool",
    "normalise_args",
    "render_experience",
    "search_tool_memory",
    "tool_experience",
]


def __getattr__(name: str) -> object:
    # The LangChain handlers need langchain-core (extra "langchain"); import them on use.
    if name in ("ToolMemoryCallbackHandler", "AsyncToolMemoryCallbackHandler"):
        try:
            from . import callbacks
        except ImportError as exc:
            from memos_core import MissingDependencyError

            raise MissingDependencyError("langchain-core", "langchain") from exc
        return getattr(callbacks, name)
    raise AttributeError(name)
