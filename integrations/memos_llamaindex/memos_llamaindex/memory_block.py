"""``MemosMemoryBlock``: long-term MemOS memory inside ``llama_index.core.memory.Memory``.

How the session id arrives: ``Memory`` calls every block's ``aget(..., session_id=...)`` with
its own ``session_id``, and ``aput(messages, from_short_term_memory=True,
session_id=...)`` when it flushes the short-term queue; ``BaseMemoryBlock.aput`` copies that
id into each message's ``additional_kwargs["session_id"]`` before calling ``_aput``. This
block reads the id per call (never storing it on itself), so one block can serve many
``Memory`` objects, one per session, and each put lands in its own MemOS conversation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field
from llama_index.core.memory.memory import BaseMemoryBlock

from memos_core import MemOS

__all__ = ["MemosMemoryBlock"]

_ROLES: dict[str, str] = {
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
    MessageRole.CHATBOT.value: "assistant",
    MessageRole.MODEL.value: "assistant",
    MessageRole.SYSTEM.value: "system",
    MessageRole.DEVELOPER.value: "system",
    MessageRole.TOOL.value: "tool",
    MessageRole.FUNCTION.value: "tool",
}


def _text(message: ChatMessage) -> str:
    return (message.content or "").strip()


class MemosMemoryBlock(BaseMemoryBlock[str]):
    """A LlamaIndex memory block backed by MemOS.

    - ``aget``: searches the user's memories with the latest messages and returns them as a
      bulleted text for the Memory's template (empty when nothing is found).
    - ``aput``: messages flushed out of short-term memory are remembered with
      ``MemOS.add_message`` (the fast stage runs at once; the fine stage is scheduled), with
      the Memory's ``session_id`` as the ``conversation_id``.

    Args:
        memos: the MemOS facade.
        user_id: whose memory this is.
        name / priority / accept_short_term_memory: as for any memory block.
        top_k: how many memories ``aget`` returns.
        search_scope: ``"user"`` (default) recalls from all of the user's conversations;
            ``"session"`` only from the Memory's own session.
        query_messages: how many of the latest messages make the search query.
        filter / knowledgebase_ids: narrow or widen the search (as in ``search_memory``).
        conversation_id: used when a put carries no session id (a direct ``aput`` call).
        agent_id / tags / info: stored on every memory this block writes.

    Example:
        >>> block = MemosMemoryBlock(memos=mem, user_id="u1")
        >>> memory = Memory.from_defaults(session_id="chat-42", memory_blocks=[block])
    """

    name: str = Field(default="memos", description="The name of the memory block.")
    memos: MemOS = Field(exclude=True, description="The MemOS facade.")
    user_id: str = Field(description="Whose memories to read and write.")
    top_k: int = Field(default=5, ge=1)
    search_scope: Literal["user", "session"] = "user"
    query_messages: int = Field(default=3, ge=1)
    filter: dict[str, Any] | None = None
    knowledgebase_ids: list[str] | None = None
    conversation_id: str | None = None
    agent_id: str | None = None
    tags: list[str] | None = None
    info: dict[str, Any] | None = None

    # ------------------------------------------------------------------ I/O-free core

    def _query(self, messages: Sequence[ChatMessage] | None) -> str | None:
        texts = [t for t in (_text(m) for m in messages or []) if t]
        if not texts:
            return None
        query = "\n".join(texts[-self.query_messages :])
        limit = self.memos.limits.max_query_chars
        return query[-limit:].strip() or None

    def _batches(self, messages: Sequence[ChatMessage]) -> list[tuple[str | None, list[dict[str, str]]]]:
        """Consecutive messages of one session, as MemOS message dicts. Must run before any
        ``await``: another block (LlamaIndex's own ``VectorMemoryBlock``) pops the id."""
        out: list[tuple[str | None, list[dict[str, str]]]] = []
        for m in messages:
            text = _text(m)
            if not text:  # e.g. an assistant turn that only calls tools
                continue
            session = m.additional_kwargs.get("session_id") or self.conversation_id
            role = _ROLES.get(getattr(m.role, "value", str(m.role)), "user")
            if not out or out[-1][0] != session:
                out.append((session, []))
            out[-1][1].append({"role": role, "content": text})
        return out

    def _format(self, memories: Sequence[str]) -> str:
        return "\n".join(f"- {m}" for m in memories)

    # ------------------------------------------------------------------ sync I/O

    def recall(self, messages: Sequence[ChatMessage] | None, session_id: str | None = None) -> str:
        """What ``aget`` returns, synchronously."""
        query = self._query(messages)
        if query is None:
            return ""
        hits = self.memos.search_memory(
            query,
            user_id=self.user_id,
            conversation_id=(session_id or self.conversation_id) if self.search_scope == "session" else None,
            agent_id=self.agent_id,
            filter=self.filter,
            knowledgebase_ids=self.knowledgebase_ids,
            top_k=self.top_k,
        ).data.memory_detail_list
        return self._format([h.memory for h in hits])

    def _write(self, batches: list[tuple[str | None, list[dict[str, str]]]]) -> None:
        for session, msgs in batches:
            self.memos.add_message(
                msgs,
                user_id=self.user_id,
                conversation_id=session,
                agent_id=self.agent_id,
                tags=self.tags,
                info=self.info,
            )

    # ------------------------------------------------------------------ BaseMemoryBlock

    async def _aget(
        self,
        messages: list[ChatMessage] | None = None,
        session_id: str | None = None,
        **block_kwargs: Any,
    ) -> str:
        return await asyncio.to_thread(self.recall, list(messages or []), session_id)

    async def _aput(self, messages: list[ChatMessage]) -> None:
        batches = self._batches(messages)
        if batches:
            await asyncio.to_thread(self._write, batches)
