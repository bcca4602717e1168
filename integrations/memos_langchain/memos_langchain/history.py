"""``MemosChatMessageHistory``: a conversation's messages, kept in order in the MemOS data
folder (as store records) and remembered by MemOS (``add_message``, fast stage)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from memos_core import InvalidInputError, MemOS

__all__ = ["MemosChatMessageHistory"]

NAMESPACE = "langchain_chat_history"
_SEP = "\x1f"
_ALL = 2**62  # a transcript is read whole
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def _turn(message: BaseMessage) -> dict[str, Any]:
    """A LangChain message as a MemOS message (role, text, and its name and id if any)."""
    turn: dict[str, Any] = {"role": _ROLES.get(message.type, "user"), "content": message.text}
    if message.name:
        turn["name"] = message.name
    if message.id:
        turn["id"] = message.id
    return turn


class MemosChatMessageHistory(BaseChatMessageHistory):
    """The messages of ``conversation_id`` for ``user_id``.

    ``messages`` returns them in order; ``add_messages`` persists them and adds the ones
    with text to MemOS as memory of that conversation (``remember=False`` turns that off);
    ``clear`` forgets the transcript (memories made from it stay; delete them with
    ``MemOS.delete_memory``).

    Example (with ``RunnableWithMessageHistory``):
        >>> RunnableWithMessageHistory(chain, lambda session_id: MemosChatMessageHistory(
        ...     mem, user_id="u1", conversation_id=session_id), ...)
    """

    def __init__(
        self,
        memos: MemOS,
        *,
        user_id: str,
        conversation_id: str,
        agent_id: str | None = None,
        remember: bool = True,
    ) -> None:
        for name, value in (("user_id", user_id), ("conversation_id", conversation_id)):
            if (
                not isinstance(value, str)
                or not value.strip()
                or any(ord(c) < 32 or ord(c) == 127 for c in value)
            ):
                raise InvalidInputError(f"{name} must be a non-empty string without control characters")
        self.memos = memos
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.agent_id = agent_id
        self.remember = remember
        self._prefix = f"{user_id}{_SEP}{conversation_id}{_SEP}"

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        records = self.memos.store.list_records(NAMESPACE, self._prefix, limit=_ALL)
        return messages_from_dict([json.loads(value["message"]) for _, value in records])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Persist ``messages`` (one write) and remember those with text."""
        if not messages:
            return
        stamp = time.time_ns()
        records: dict[str, dict[str, Any] | None] = {
            f"{self._prefix}{stamp + i:020d}-{uuid.uuid4().hex[:8]}": {
                "message": json.dumps(message_to_dict(m))
            }
            for i, m in enumerate(messages)
        }
        # MemOS validates first: a message it refuses (too long, a bad id) is not kept in the
        # transcript either, so a retry does not duplicate it.
        if self.remember:
            turns = [_turn(m) for m in messages if m.type in _ROLES and m.text.strip()]
            if turns:
                self.memos.add_message(
                    turns, user_id=self.user_id, conversation_id=self.conversation_id, agent_id=self.agent_id
                )
        self.memos.store.put_records(NAMESPACE, records)

    def clear(self) -> None:
        keys = [k for k, _ in self.memos.store.list_records(NAMESPACE, self._prefix, limit=_ALL)]
        if keys:
            self.memos.store.put_records(NAMESPACE, dict.fromkeys(keys))
