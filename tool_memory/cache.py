"""Reuse: an identical earlier successful call within the freshness window answers again
without invoking the tool.

The cache *is* the tool memory: a miss runs the tool and records the call (with its output);
a hit is the newest matching ``outcome="ok"`` record younger than ``ttl``. Errors and
truncated outputs are never replayed. Identical calls that arrive while the first one is in
flight wait for it (single flight), so the tool runs once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar, cast

from memos_core import MemOS

from .core import SELF_RECORDING, ToolCall, ToolRecorder, args_hash, normalise_args

__all__ = ["CacheStats", "ToolCache", "cached", "cached_tool"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Policy = Literal["reuse", "never"]
_MISSING = object()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    waits: int = 0  # identical calls that joined one in flight

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ToolCache:
    """Lookup, single flight and statistics for one tool's calls of one user."""

    def __init__(
        self,
        memos: MemOS,
        tool: str,
        *,
        user_id: str,
        ttl: float | timedelta,
        key_fn: Callable[[dict[str, Any]], Any] | None = None,
        policy: Policy = "reuse",
    ) -> None:
        if policy not in ("reuse", "never"):
            raise ValueError(f"policy must be 'reuse' or 'never', not {policy!r}")
        self.memos = memos
        self.tool = tool
        self.user_id = user_id
        self.ttl = ttl if isinstance(ttl, timedelta) else timedelta(seconds=float(ttl))
        self.key_fn = key_fn
        self.policy = policy
        self.stats = CacheStats()
        self.recorder = ToolRecorder(memos, user_id=user_id)
        self._flights: dict[str, concurrent.futures.Future[Any]] = {}
        self._lock = threading.Lock()
        self._warned = False

    def key(self, args: Mapping[str, Any]) -> str:
        norm = normalise_args(dict(args))
        return args_hash(self.tool, normalise_args(self.key_fn(norm)) if self.key_fn else norm)

    def lookup(self, key: str, user_id: str | None = None) -> Any:
        """The stored output of the newest fresh successful call with ``key`` that this cache
        wrote (so the output is the tool's own return value, not a message's text), or
        _MISSING. A store failure is a miss (logged once): reuse never breaks the tool."""
        since = (datetime.now(timezone.utc) - self.ttl).isoformat()
        where = {
            "memory_type": "tool",
            "tool": self.tool,
            "cache_key": key,
            "outcome": "ok",
            "replayable": True,
            "output_truncated": False,
            "created_at": {"gte": since},
        }
        try:
            page = self.memos.list_memories(user_id or self.user_id, filter=where, limit=1).data
        except Exception:
            if not self._warned:
                self._warned = True
                log.exception("tool memory: cache lookup for %r failed; running the tool", self.tool)
            return _MISSING
        return page.items[0].info.get("output") if page.items else _MISSING

    def call(self, args: Mapping[str, Any], run: Callable[[], Any], *, user_id: str | None = None) -> Any:
        """The answer for ``args``: from memory when fresh, else ``run()`` once (recorded).
        ``user_id`` (default: the cache's) scopes the reuse: one user never gets another's
        answer, even when the tool itself reads the user from the run."""
        user = user_id or self.user_id
        if self.policy == "never":
            self.stats.misses += 1
            return self._run(args, None, run, user)
        key = self.key(args)
        found = self.lookup(key, user)
        if found is not _MISSING:
            self.stats.hits += 1
            return found
        flight_key = f"{user}\x1f{key}"
        with self._lock:
            flight = self._flights.get(flight_key)
            leader = flight is None
            if leader:
                flight = self._flights[flight_key] = concurrent.futures.Future()
        assert flight is not None
        if not leader:
            self.stats.waits += 1
            return flight.result()
        self.stats.misses += 1
        try:
            result = self._run(args, key, run, user)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            with self._lock:
                self._flights.pop(flight_key, None)

    def _run(self, args: Mapping[str, Any], key: str | None, run: Callable[[], Any], user: str) -> Any:
        # The lookup key may differ from args_hash when key_fn narrows the arguments.
        extra: dict[str, Any] = {"cache_key": key, "replayable": True} if key else {}
        call = ToolCall(tool=self.tool, args=normalise_args(dict(args)), user_id=user, extra=extra)
        try:
            call.output = run()
        except Exception as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            self.recorder.record(call)
            raise
        self.recorder.record(call)
        return call.output


def cached(
    memos: MemOS,
    *,
    user_id: str,
    ttl: float | timedelta,
    name: str | None = None,
    key_fn: Callable[[dict[str, Any]], Any] | None = None,
    policy: Policy = "reuse",
) -> Callable[[F], F]:
    """Decorator: reuse a plain function's earlier results (sync functions; async ones run
    their body in the event loop and share the cache)."""

    def wrap(func: F) -> F:
        cache = ToolCache(
            memos, name or func.__name__, user_id=user_id, ttl=ttl, key_fn=key_fn, policy=policy
        )
        sig = inspect.signature(func)

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            b = sig.bind(*args, **kwargs)
            b.apply_defaults()
            return dict(b.arguments)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                loop = asyncio.get_running_loop()
                return await asyncio.to_thread(
                    cache.call,
                    arguments(args, kwargs),
                    lambda: asyncio.run_coroutine_threadsafe(func(*args, **kwargs), loop).result(),
                )

            async_wrapper.cache = cache  # type: ignore[attr-defined]
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return cache.call(arguments(args, kwargs), lambda: func(*args, **kwargs))

        wrapper.cache = cache  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return wrap


def cached_tool(
    tool: Any,
    memos: MemOS,
    *,
    user_id: str,
    ttl: float | timedelta,
    key_fn: Callable[[dict[str, Any]], Any] | None = None,
    policy: Policy | None = None,
) -> Any:
    """A LangChain ``StructuredTool`` with ``tool``'s name, description and schema that reuses
    ``tool``'s earlier successful results (``.cache.stats`` counts hits and misses).

    The user is the run's ``config["configurable"]["user_id"]`` when it names one, else
    ``user_id``: answers are reused per user only. Only outputs this wrapper recorded are
    replayed (as the JSON they were stored as: a tuple comes back as a list).
    A tool whose ``metadata`` has ``{"memos_cache": False}`` (non-deterministic: random, time,
    side effects) is never cached unless ``policy`` says otherwise. The wrapper records its
    own calls; a :class:`~tool_memory.ToolMemoryCallbackHandler` on the same run skips them.
    """
    cls = _cached_tool_class()

    if policy is None:
        policy = "never" if (tool.metadata or {}).get("memos_cache") is False else "reuse"
    cache = ToolCache(memos, tool.name, user_id=user_id, ttl=ttl, key_fn=key_fn, policy=policy)

    # The inner call is marked too: it runs inside the wrapper's run and inherits its
    # callbacks, and the wrapper records the call itself.
    inner = {"metadata": {SELF_RECORDING: True}}

    def user_of(config: Any) -> str:
        configured = ((config or {}).get("configurable") or {}).get("user_id")
        return str(configured) if configured else user_id

    def run(config: Any, **kwargs: Any) -> Any:
        return cache.call(kwargs, lambda: tool.invoke(kwargs, config=inner), user_id=user_of(config))

    async def arun(config: Any, **kwargs: Any) -> Any:
        # ainvoke, not invoke: an async-only tool has no sync path. The cache's single
        # flight is thread-based, so the call runs on its own loop in a worker thread.
        def once() -> Any:
            return asyncio.run(tool.ainvoke(kwargs, config=inner))

        return await asyncio.to_thread(cache.call, kwargs, once, user_id=user_of(config))

    # LangChain injects the run's config into a parameter annotated RunnableConfig.
    from langchain_core.runnables import RunnableConfig

    run.__annotations__["config"] = RunnableConfig
    arun.__annotations__["config"] = RunnableConfig
    wrapped = cls.from_function(
        func=run,
        coroutine=arun,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        metadata={**(tool.metadata or {}), SELF_RECORDING: True},
    )
    wrapped.cache = cache
    return wrapped


@functools.cache
def _cached_tool_class() -> Any:
    """A StructuredTool with a ``cache`` field (langchain-core is imported only when used)."""
    try:
        from langchain_core.tools import StructuredTool
    except ImportError as exc:
        from memos_core import MissingDependencyError

        raise MissingDependencyError("langchain-core", "langchain") from exc

    class CachedTool(StructuredTool):
        """A tool whose identical earlier successful calls are answered from tool memory."""

        cache: Any = None

    return CachedTool
