"""Memory tools for agents: ``search_memory`` and ``save_memory`` as ``StructuredTool``s.

Each tool is written once (``_search`` / ``_save``); the sync function and the async
coroutine are thin drivers around it. The user comes from the run config
(``config["configurable"]["user_id"]``), else the default given here; with neither, the tool
answers with an error message the model can read instead of guessing a user.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool

from memos_core import MemOS, RequestError

__all__ = ["create_memory_tools"]


def create_memory_tools(
    memos: MemOS, *, user_id: str | None = None, top_k: int = 5, tags: list[str] | None = None
) -> list[StructuredTool]:
    """``[search_memory, save_memory]`` for ``memos``.

    Args:
        user_id: the user when the run config does not name one.
        top_k: how many memories a search returns.
        tags: added to every saved memory.
    """

    def user_of(config: RunnableConfig | None) -> str:
        configured = ((config or {}).get("configurable") or {}).get("user_id")
        found = configured or user_id
        if not found:
            raise RequestError(
                "no user: set config['configurable']['user_id'] or create_memory_tools(user_id=...)"
            )
        return str(found)

    def thread_of(config: RunnableConfig | None) -> str | None:
        thread = ((config or {}).get("configurable") or {}).get("thread_id")
        return str(thread) if thread is not None else None

    def _search(query: str, config: RunnableConfig | None) -> str:
        try:
            hits = memos.search_memory(query, user_id=user_of(config), top_k=top_k).data.memory_detail_list
        except RequestError as exc:
            return f"Error: {exc}"
        if not hits:
            return "No memories found."
        return "\n".join(f"- {h.memory} (id {h.id}, score {h.score:.2f})" for h in hits)

    def _save(memory: str, config: RunnableConfig | None) -> str:
        try:
            item = memos.add_memory(
                memory,
                user_id=user_of(config),
                memory_type="long_term",
                tags=["saved_by_agent", *(tags or [])],
                conversation_id=thread_of(config),
            ).data
        except RequestError as exc:
            return f"Error: {exc}"
        return f"Saved memory {item.id}."

    def search_memory(query: str, config: RunnableConfig) -> str:
        """Search long-term memory about the user for facts relevant to the query."""
        return _search(query, config)

    async def asearch_memory(query: str, config: RunnableConfig) -> str:
        return await asyncio.to_thread(_search, query, config)

    def save_memory(memory: str, config: RunnableConfig) -> str:
        """Save one fact about the user (a short third-person sentence) to long-term memory."""
        return _save(memory, config)

    async def asave_memory(memory: str, config: RunnableConfig) -> str:
        return await asyncio.to_thread(_save, memory, config)

    search: Any = StructuredTool.from_function(
        func=search_memory, coroutine=asearch_memory, name="search_memory"
    )
    save: Any = StructuredTool.from_function(func=save_memory, coroutine=asave_memory, name="save_memory")
    return [search, save]
