"""MemOS for LangGraph (``langgraph`` 1.x). Only the public API of ``memos_core`` is used.

- :class:`MemosStore`: a ``BaseStore`` (get/put/search/list_namespaces, TTL) whose items are
  MemOS memories, so a ``query`` runs MemOS hybrid search.
- :class:`MemosCheckpointSaver`: a ``BaseCheckpointSaver`` kept in the MemOS data folder
  (imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import langgraph.store.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra
    from memos_core import MissingDependencyError

    raise MissingDependencyError("langgraph", "langgraph") from exc

from .store import MemosStore

if TYPE_CHECKING:
    from .checkpoint import MemosCheckpointSaver

__all__ = ["MemosCheckpointSaver", "MemosStore"]


def __getattr__(name: str) -> Any:
    if name == "MemosCheckpointSaver":
        from .checkpoint import MemosCheckpointSaver

        return MemosCheckpointSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
