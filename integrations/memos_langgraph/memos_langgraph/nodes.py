"""Prebuilt graph nodes: recall memories for the latest user message, remember the turn.

Both take the user from the run config (``config["configurable"]["user_id"]``) and scope to
the thread when asked (``thread_id`` as the MemOS conversation id). Use them as ordinary
nodes::

    graph.add_node("recall", recall_memories_node(mem))
    graph.add_node("remember", remember_turn_node(mem))
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "agent")   # the agent reads state["memories"]
    graph.add_edge("agent", "remember")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from memos_core import InvalidInputError, MemOS

__all__ = ["recall_memories_node", "remember_turn_node", "user_of"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def user_of(config: RunnableConfig | None, default: str | None = None) -> str:
    """The user of a run: ``config["configurable"]["user_id"]``, else ``default``."""
    found = ((config or {}).get("configurable") or {}).get("user_id") or default
    if not found:
        raise InvalidInputError("no user: run the graph with config={'configurable': {'user_id': ...}}")
    return str(found)


def _thread_of(config: RunnableConfig | None) -> str | None:
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return str(thread) if thread is not None else None


def recall_memories_node(
    memos: MemOS,
    *,
    messages_key: str = "messages",
    output_key: str = "memories",
    top_k: int = 5,
    this_thread_only: bool = False,
    user_id: str | None = None,
    filter: Mapping[str, Any] | None = None,
) -> Callable[[Mapping[str, Any], RunnableConfig], dict[str, Any]]:
    """A node that searches the user's memories for the latest human message and puts the
    memory texts (best first) into ``state[output_key]``. Across threads by default: what
    the user said in another conversation is recalled too."""

    def recall(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        messages: Sequence[BaseMessage] = state.get(messages_key) or []
        query = next((m.text for m in reversed(messages) if m.type == "human" and m.text.strip()), "")
        if not query:
            return {output_key: []}
        hits = memos.search_memory(
            query,
            user_id=user_of(config, user_id),
            conversation_id=_thread_of(config) if this_thread_only else None,
            filter=filter,
            top_k=top_k,
        ).data.memory_detail_list
        return {output_key: [h.memory for h in hits]}

    return recall


def remember_turn_node(
    memos: MemOS, *, messages_key: str = "messages", user_id: str | None = None, name: str | None = None
) -> Callable[[Mapping[str, Any], RunnableConfig], dict[str, Any]]:
    """A node that adds the turn (the last human message and what followed it, tool calls and
    tool results left out) to MemOS as memory of the thread (``add_message``, fast stage).
    ``name`` labels the user's lines (e.g. the user's display name)."""

    def remember(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        messages: Sequence[BaseMessage] = state.get(messages_key) or []
        start = max((i for i, m in enumerate(messages) if m.type == "human"), default=None)
        if start is None:
            return {}
        turn = []
        for m in messages[start:]:
            text = m.text.strip()
            if m.type in _ROLES and text:
                entry: dict[str, Any] = {"role": _ROLES[m.type], "content": text}
                if m.type == "human" and name:
                    entry["name"] = name
                turn.append(entry)
        if turn:
            memos.add_message(turn, user_id=user_of(config, user_id), conversation_id=_thread_of(config))
        return {}

    return remember
