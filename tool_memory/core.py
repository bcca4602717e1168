"""The recording core: one tool call -> one ``memory_type="tool"`` memory.

Everything else in this package (the LangChain callback handlers, the decorator and context
manager, the cache) records through :class:`ToolRecorder`. A record never breaks the agent:
if storing fails, the failure is logged once per recorder and the tool's result goes on.

A tool memory's ``info`` (filterable as bare keys, e.g. ``{"tool": "weather"}``):
``tool``, ``args`` (normalised arguments), ``args_hash``, ``outcome`` (``"ok"``/``"error"``),
``output`` (JSON value, capped), ``output_truncated``, ``error``, ``duration_ms``,
``run_id``, ``parent_run_id``, ``thread_id``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from memos_core import MemoryItem, MemOS

__all__ = ["ToolCall", "ToolRecorder", "args_hash", "normalise_args"]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
MAX_OUTPUT_CHARS = 16_000
#: Tools that record themselves (``cached_tool``) carry this in their metadata; the callback
#: handlers skip them.
SELF_RECORDING = "memos_tool_memory_self_recording"


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON (pydantic models dumped, unknown objects as their text)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str))
    except (TypeError, ValueError):
        return str(value)


def normalise_args(args: Any) -> dict[str, Any]:
    """Arguments in one canonical form: a dict with sorted keys and JSON values; a bare input
    string becomes ``{"input": text}`` (stripped; a JSON object string is parsed first).
    Argument values are kept exactly (``"a "`` and ``"a"`` are different calls: code, paths
    and file contents depend on whitespace); narrow the key with ``key_fn`` if yours do not."""
    if isinstance(args, str):
        text = args.strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        args = parsed if isinstance(parsed, dict) else {"input": text}
    if not isinstance(args, Mapping):
        args = {"input": args}
    return {str(k): _jsonable(v) for k, v in sorted(args.items(), key=lambda kv: str(kv[0]))}


def args_hash(tool: str, args: Mapping[str, Any]) -> str:
    """A stable fingerprint of a call: the tool name and its normalised arguments."""
    text = json.dumps([tool, normalise_args(dict(args))], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class ToolCall:
    """One call in flight; set ``output`` (or let an exception set ``error``)."""

    tool: str
    args: dict[str, Any]
    output: Any = None
    error: str | None = None
    run_id: str | None = None
    parent_run_id: str | None = None
    thread_id: str | None = None
    user_id: str | None = None
    started: float = field(default_factory=time.perf_counter)
    duration_ms: float | None = None
    #: More ``info`` fields to store with the call (the cache's lookup key, say).
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> None:
        if self.duration_ms is None:
            self.duration_ms = (time.perf_counter() - self.started) * 1000


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ToolRecorder:
    """Writes tool calls into ``memos`` as tool memories of ``user_id`` (the default user; a
    call may name its own).

    Example:
        >>> rec = ToolRecorder(mem, user_id="u1")
        >>> @rec.traced
        ... def add(a: int, b: int) -> int:
        ...     return a + b
        >>> add(2, 3)   # recorded: add({"a": 2, "b": 3}) -> 5
    """

    def __init__(
        self,
        memos: MemOS,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
    ) -> None:
        self.memos = memos
        self.user_id = user_id
        self.agent_id = agent_id
        self.app_id = app_id
        self._warned = False
        self._lock = threading.Lock()

    def record(self, call: ToolCall) -> MemoryItem | None:
        """Store ``call``; on any failure log once and return None (never raise)."""
        call.finish()
        user = call.user_id or self.user_id
        try:
            if not user:
                raise ValueError("no user id: give ToolRecorder(user_id=...) or user_id in the run metadata")
            output = _jsonable(call.output)
            text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
            truncated = len(text) > MAX_OUTPUT_CHARS
            if truncated:
                output = text[:MAX_OUTPUT_CHARS]
            args = normalise_args(call.args)
            outcome = "error" if call.error is not None else "ok"
            result = f"error: {call.error}" if call.error is not None else _short(output, 300)
            digest = args_hash(call.tool, args)
            info = {
                "tool": call.tool,
                "args": args,
                "args_hash": digest,
                "cache_key": digest,
                "outcome": outcome,
                "output": None if call.error is not None else output,
                "output_truncated": truncated,
                "error": call.error,
                "duration_ms": round(call.duration_ms or 0.0, 3),
                "run_id": call.run_id,
                "parent_run_id": call.parent_run_id,
                "thread_id": call.thread_id,
                **call.extra,
            }
            return self.memos.add_memory(
                f"Tool {call.tool} called with {_short(args, 300)} -> {result}",
                user_id=user,
                memory_type="tool",
                key=call.tool,
                tags=["tool", call.tool],
                info=info,
                conversation_id=call.thread_id,
                agent_id=self.agent_id,
                app_id=self.app_id,
            ).data
        except Exception:
            with self._lock:
                first, self._warned = not self._warned, True
            if first:
                log.exception(
                    "tool memory: could not record a call of %r (later failures are silent)", call.tool
                )
            return None

    @contextmanager
    def call(self, tool: str, args: Any = None, **context: Any) -> Iterator[ToolCall]:
        """``with rec.call("search", {"q": "x"}) as c: c.output = search("x")`` — the call is
        recorded when the block ends; an exception is recorded as the error and re-raised."""
        current = ToolCall(tool=tool, args=normalise_args(args or {}), **context)
        try:
            yield current
        except BaseException as exc:
            current.error = f"{type(exc).__name__}: {exc}"
            self.record(current)
            raise
        self.record(current)

    def traced(self, fn: F | None = None, *, name: str | None = None) -> Any:
        """Decorator for plain functions, sync or async: each call is recorded with its bound
        arguments, result or error."""

        def wrap(func: F) -> F:
            tool = name or func.__name__
            sig = inspect.signature(func)

            def bound(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
                try:
                    b = sig.bind(*args, **kwargs)
                    b.apply_defaults()
                    return dict(b.arguments)
                except TypeError:
                    return {"args": list(args), **kwargs}

            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    with self.call(tool, bound(args, kwargs)) as c:
                        c.output = await cast(Callable[..., Awaitable[Any]], func)(*args, **kwargs)
                        return c.output

                return cast(F, async_wrapper)

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.call(tool, bound(args, kwargs)) as c:
                    c.output = func(*args, **kwargs)
                    return c.output

            return cast(F, wrapper)

        return wrap(fn) if fn is not None else wrap

    def run_tool_call(
        self, call: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]
    ) -> dict[str, Any]:
        """Execute an OpenAI-style tool call dict (``{"id", "function": {"name", "arguments"}}``)
        with ``functions[name](**arguments)``, record it, and return the ``role="tool"``
        message to send back. A failing function gives an error message, also recorded."""
        fn = call.get("function", {})
        tool = str(fn.get("name", ""))
        raw = fn.get("arguments") or "{}"
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except ValueError:
            arguments = {"input": raw}
        current = ToolCall(tool=tool, args=normalise_args(arguments), run_id=call.get("id"))
        try:
            if tool not in functions:
                raise KeyError(f"no function named {tool!r}")
            current.output = functions[tool](**arguments)
            content = (
                current.output if isinstance(current.output, str) else json.dumps(_jsonable(current.output))
            )
        except Exception as exc:
            current.error = f"{type(exc).__name__}: {exc}"
            content = f"Error: {current.error}"
        self.record(current)
        return {"role": "tool", "tool_call_id": call.get("id"), "content": content}
