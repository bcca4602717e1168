"""LangChain callback handlers that record every tool call as a tool memory.

Attach one to a run (``config={"callbacks": [handler]}``) or to a tool; it works for a plain
``tool.invoke`` and inside a LangGraph ``ToolNode`` (where calls run in parallel threads).
``thread_id`` comes from the run metadata (LangGraph copies ``configurable["thread_id"]``
into it) and ``user_id`` from ``config["metadata"]["user_id"]`` (LangGraph 1.x does not copy
other ``configurable`` keys), falling back to the handler's own user. The sync and async handlers share
:class:`_Tracker`; only the thin driver is written twice.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler

from memos_core import MemOS

from .core import SELF_RECORDING, ToolCall, ToolRecorder, normalise_args

__all__ = ["SELF_RECORDING", "AsyncToolMemoryCallbackHandler", "ToolMemoryCallbackHandler"]


def _output_of(output: Any) -> Any:
    """A ``ToolMessage``'s content when the tool was called with a ToolCall, else the output."""
    return getattr(output, "content", output) if type(output).__name__ == "ToolMessage" else output


class _Tracker:
    """Calls started but not finished, keyed by run id (thread-safe)."""

    def __init__(self, recorder: ToolRecorder) -> None:
        self.recorder = recorder
        self._open: dict[UUID, ToolCall] = {}
        self._lock = threading.Lock()

    def start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: dict[str, Any] | None,
        inputs: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        meta = metadata or {}
        if meta.get(SELF_RECORDING):
            return
        name = kwargs.get("name") or (serialized or {}).get("name") or "tool"
        call = ToolCall(
            tool=str(name),
            args=normalise_args(inputs if inputs is not None else input_str),
            run_id=str(run_id),
            parent_run_id=str(parent_run_id) if parent_run_id else None,
            thread_id=str(meta["thread_id"]) if meta.get("thread_id") is not None else None,
            user_id=str(meta["user_id"]) if meta.get("user_id") is not None else None,
        )
        with self._lock:
            self._open[run_id] = call

    def finish(
        self, run_id: UUID, *, output: Any = None, error: BaseException | None = None
    ) -> ToolCall | None:
        with self._lock:
            call = self._open.pop(run_id, None)
        if call is None:
            return None
        if error is not None:
            call.error = f"{type(error).__name__}: {error}"
        else:
            call.output = _output_of(output)
        call.finish()
        return call


class ToolMemoryCallbackHandler(BaseCallbackHandler):
    """Records each tool call (name, normalised arguments, output or error, duration, run and
    parent run ids, thread and user) as a ``memory_type="tool"`` memory."""

    def __init__(self, memos: MemOS, *, user_id: str | None = None, agent_id: str | None = None) -> None:
        self.recorder = ToolRecorder(memos, user_id=user_id, agent_id=agent_id)
        self._tracker = _Tracker(self.recorder)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._tracker.start(serialized, input_str, run_id, parent_run_id, metadata, inputs, kwargs)

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        call = self._tracker.finish(run_id, output=output)
        if call is not None:
            self.recorder.record(call)

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        call = self._tracker.finish(run_id, error=error)
        if call is not None:
            self.recorder.record(call)


class AsyncToolMemoryCallbackHandler(AsyncCallbackHandler):
    """The async twin: the same tracking, the store write moved off the event loop."""

    def __init__(self, memos: MemOS, *, user_id: str | None = None, agent_id: str | None = None) -> None:
        self.recorder = ToolRecorder(memos, user_id=user_id, agent_id=agent_id)
        self._tracker = _Tracker(self.recorder)

    async def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._tracker.start(serialized, input_str, run_id, parent_run_id, metadata, inputs, kwargs)

    async def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        call = self._tracker.finish(run_id, output=output)
        if call is not None:
            await asyncio.to_thread(self.recorder.record, call)

    async def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        call = self._tracker.finish(run_id, error=error)
        if call is not None:
            await asyncio.to_thread(self.recorder.record, call)
