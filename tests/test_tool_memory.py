"""Tool memory with real LangChain tools and a real LangGraph agent graph (a fake chat model
from langchain_core emits the tool calls; the tools, the ToolNode and the graph are real)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import StructuredTool, tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from memos_core import MemOS
from memos_core.testing import HashEmbedder
from tool_memory import (
    AsyncToolMemoryCallbackHandler,
    ToolMemoryCallbackHandler,
    ToolRecorder,
    cached,
    cached_tool,
    normalise_args,
    render_experience,
    search_tool_memory,
    tool_experience,
)

TOOL = {"memory_type": "tool"}


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[MemOS]:
    m = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline")
    yield m
    m.close()


def tool_items(mem: MemOS, user: str = "u1") -> list[Any]:
    return mem.list_memories(user, filter=TOOL, limit=100).data.items


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def bump(self) -> None:
        with self.lock:
            self.calls += 1


def make_tools(counter: Counter) -> list[Any]:
    @tool
    def weather(city: str) -> str:
        """Current weather for a city."""
        counter.bump()
        time.sleep(0.05)
        return f"sunny, 21C in {city}"

    @tool
    def divide(a: float, b: float) -> float:
        """Divide a by b."""
        counter.bump()
        return a / b

    return [weather, divide]


def agent_graph(tools: list[Any], script: list[AIMessage]) -> Any:
    model = GenericFakeChatModel(messages=iter(script))

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route)
    g.add_edge("tools", "agent")
    return g.compile()


def calls(*specs: tuple[str, dict[str, Any]]) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": n, "args": a, "id": f"call_{i}"} for i, (n, a) in enumerate(specs)]
    )


def test_handler_records_plain_invoke_and_tool_call(mem: MemOS) -> None:
    """A plain tool.invoke and an invoke with a ToolCall (output is then a ToolMessage) are
    both recorded with name, normalised args, output, duration and run id; the user comes
    from the run metadata."""
    counter = Counter()
    weather, _ = make_tools(counter)
    handler = ToolMemoryCallbackHandler(mem, user_id="fallback")
    weather.invoke({"city": " Paris"}, config={"callbacks": [handler], "metadata": {"user_id": "u1"}})
    call = {"name": "weather", "args": {"city": "Rome"}, "id": "call_9", "type": "tool_call"}
    msg = weather.invoke(call, config={"callbacks": [handler]})
    assert msg.content == "sunny, 21C in Rome"
    (paris,) = tool_items(mem, "u1")
    assert paris.info["tool"] == "weather" and paris.info["args"] == {"city": " Paris"}
    assert paris.info["outcome"] == "ok" and paris.info["output"] == "sunny, 21C in  Paris"  # as returned
    assert paris.info["duration_ms"] >= 50 and paris.info["run_id"]
    (rome,) = tool_items(mem, "fallback")
    assert rome.info["output"] == "sunny, 21C in Rome"  # the ToolMessage's content


def test_handler_inside_a_langgraph_agent(mem: MemOS) -> None:
    """In a ToolNode (parallel calls, one failing): every call is recorded with the graph's
    thread_id and the user from the run metadata, the error recorded as an error; the agent
    still finishes."""
    counter = Counter()
    tools = make_tools(counter)
    app = agent_graph(
        tools,
        [calls(("weather", {"city": "Oslo"}), ("divide", {"a": 1, "b": 0})), AIMessage(content="done")],
    )
    handler = ToolMemoryCallbackHandler(mem, user_id="fallback")
    out = app.invoke(
        {"messages": [HumanMessage("weather in Oslo, and 1/0?")]},
        config={"callbacks": [handler], "configurable": {"thread_id": "t-1"}, "metadata": {"user_id": "u1"}},
    )
    assert out["messages"][-1].content == "done"
    items = {i.info["tool"]: i for i in tool_items(mem)}
    assert items["weather"].info["thread_id"] == "t-1" and items["weather"].conversation_id == "t-1"
    assert items["divide"].info["outcome"] == "error"
    assert "ZeroDivisionError" in items["divide"].info["error"]


def test_async_handler_records_through_ainvoke(mem: MemOS) -> None:
    counter = Counter()
    weather, _ = make_tools(counter)
    handler = AsyncToolMemoryCallbackHandler(mem, user_id="u1")
    asyncio.run(weather.ainvoke({"city": "Lima"}, config={"callbacks": [handler]}))
    assert [i.info["args"] for i in tool_items(mem)] == [{"city": "Lima"}]


def test_cached_tool_reuses_and_never_replays_errors(mem: MemOS) -> None:
    """An identical successful call within the TTL is answered from memory (the tool's own
    counter proves it ran once); errors are not replayed; other arguments miss."""
    counter = Counter()
    weather, divide = make_tools(counter)
    cw = cached_tool(weather, mem, user_id="u1", ttl=3600)
    cd = cached_tool(divide, mem, user_id="u1", ttl=3600)
    assert cw.name == "weather" and cw.args_schema is weather.args_schema
    assert cw.invoke({"city": "Paris"}) == "sunny, 21C in Paris"
    assert cw.invoke({"city": "Paris"}) == "sunny, 21C in Paris"
    assert counter.calls == 1 and cw.cache.stats.hits == 1 and cw.cache.stats.misses == 1
    cw.invoke({"city": "Paris "})  # argument values are kept exactly: another call
    assert counter.calls == 2
    cw.invoke({"city": "Rome"})
    assert counter.calls == 3
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            cd.invoke({"a": 1, "b": 0})
    assert counter.calls == 5  # the error ran both times
    assert cd.invoke({"a": 6, "b": 3}) == 2.0 and cd.invoke({"a": 6, "b": 3}) == 2.0
    assert counter.calls == 6


def test_cached_tool_in_a_graph_and_across_threads(mem: MemOS) -> None:
    """Two agent runs on different threads ask the same question: the tool runs once; the
    handler on the run does not double-record the cached tool's own records."""
    counter = Counter()
    weather, _ = make_tools(counter)
    cw = cached_tool(weather, mem, user_id="u1", ttl=3600)
    handler = ToolMemoryCallbackHandler(mem, user_id="u1")
    for thread in ("a", "b"):
        app = agent_graph([cw], [calls(("weather", {"city": "Kyoto"})), AIMessage(content="ok")])
        out = app.invoke(
            {"messages": [HumanMessage("weather in Kyoto?")]},
            config={"callbacks": [handler], "configurable": {"thread_id": thread}},
        )
        assert "sunny, 21C in Kyoto" in [m.content for m in out["messages"]]
    assert counter.calls == 1 and len(tool_items(mem)) == 1


def test_ttl_and_opt_out(mem: MemOS) -> None:
    """Past the freshness window the tool runs again; a tool marked non-deterministic is
    never served from memory."""
    counter = Counter()
    weather, _ = make_tools(counter)
    short = cached_tool(weather, mem, user_id="u1", ttl=0.2)
    short.invoke({"city": "Bern"})
    time.sleep(0.3)
    short.invoke({"city": "Bern"})
    assert counter.calls == 2

    @tool
    def roll() -> int:
        """Roll a die."""
        counter.bump()
        return 4

    roll.metadata = {"memos_cache": False}
    cr = cached_tool(roll, mem, user_id="u1", ttl=3600)
    cr.invoke({})
    cr.invoke({})
    assert counter.calls == 4 and cr.cache.stats.hits == 0


def test_concurrent_identical_calls_run_once(mem: MemOS) -> None:
    """Eight threads ask the same uncached question at once: the tool runs once."""
    counter = Counter()

    @tool
    def slow(q: str) -> str:
        """A slow lookup."""
        counter.bump()
        time.sleep(0.3)
        return q.upper()

    cs = cached_tool(slow, mem, user_id="u1", ttl=3600)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cs.invoke({"q": "hi"}))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["HI"] * 8 and counter.calls == 1
    assert cs.cache.stats.misses == 1 and cs.cache.stats.waits + cs.cache.stats.hits == 7


def test_decorator_context_manager_and_openai_calls(mem: MemOS) -> None:
    """Plain functions (sync and async), a context manager and OpenAI-style tool call dicts
    record through the same core; @cached reuses a function's results."""
    rec = ToolRecorder(mem, user_id="u1")

    @rec.traced
    def add(a: int, b: int = 1) -> int:
        return a + b

    @rec.traced(name="fetch")
    async def fetch(url: str) -> str:
        return f"<html>{url}</html>"

    assert add(2) == 3
    assert asyncio.run(fetch("x.org")) == "<html>x.org</html>"
    with pytest.raises(KeyError), rec.call("lookup", {"k": "v"}):
        raise KeyError("v")
    msg = rec.run_tool_call(
        {"id": "call_7", "type": "function", "function": {"name": "add", "arguments": json.dumps({"a": 5})}},
        {"add": lambda a, b=1: a + b},
    )
    assert msg == {"role": "tool", "tool_call_id": "call_7", "content": "6"}
    bad = rec.run_tool_call({"id": "c8", "function": {"name": "nope", "arguments": "{}"}}, {})
    assert bad["content"].startswith("Error: KeyError")
    got = {(i.info["tool"], i.info["outcome"]) for i in tool_items(mem)}
    assert got == {("add", "ok"), ("fetch", "ok"), ("lookup", "error"), ("nope", "error")}
    assert {
        json.dumps(i.info["args"], sort_keys=True) for i in tool_items(mem) if i.info["tool"] == "add"
    } == {
        '{"a": 2, "b": 1}',
        '{"a": 5}',
    }
    runs = Counter()

    @cached(mem, user_id="u1", ttl=60)
    def square(x: int) -> int:
        runs.bump()
        return x * x

    assert square(4) == 16 and square(x=4) == 16 and runs.calls == 1


def test_recording_never_breaks_the_tool(mem: MemOS, caplog: pytest.LogCaptureFixture) -> None:
    """With the store closed under it, the tool still answers and the failure is logged once."""
    rec = ToolRecorder(mem, user_id="u1")

    @rec.traced
    def echo(x: str) -> str:
        return x

    mem.store.close()
    mem.store.path = Path("/nonexistent/dir/db.sqlite")  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="tool_memory.core"):
        assert echo("a") == "a" and echo("b") == "b"
    assert len([r for r in caplog.records if "could not record" in r.message]) == 1


def test_experience_summary_and_search(mem: MemOS) -> None:
    """Per-tool counts, success rate, latency, common errors and arguments that worked;
    search finds the call that answered a similar question; the prompt text says it all."""
    counter = Counter()
    weather, divide = make_tools(counter)
    handler = ToolMemoryCallbackHandler(mem, user_id="u1")
    for city in ("Paris", "Paris", "Lagos"):
        weather.invoke({"city": city}, config={"callbacks": [handler]})
    for a, b in ((1, 0), (4, 2), (3, 0)):
        with contextlib.suppress(ZeroDivisionError):
            divide.invoke({"a": a, "b": b}, config={"callbacks": [handler]})
    summary = {s.tool: s for s in tool_experience(mem, user_id="u1")}
    assert summary["weather"].calls == 3 and summary["weather"].success_rate == 1.0
    assert summary["weather"].good_examples == [{"city": "Lagos"}, {"city": "Paris"}]
    assert summary["weather"].latency_ms_p50 is not None and summary["weather"].latency_ms_p50 >= 50
    assert summary["divide"].errors == 2 and summary["divide"].common_errors[0][1] == 2
    text = render_experience(list(summary.values()))
    assert "weather: 3 calls, 100% succeeded" in text and "failed 2x: ZeroDivisionError" in text
    hits = search_tool_memory(mem, "weather Paris", user_id="u1")
    assert hits and hits[0].memory_type == "tool" and "Paris" in hits[0].memory


def test_cached_answers_are_per_user_and_async_tools_work(mem: MemOS) -> None:
    """A tool that reads the user from the run answers alice and bob separately (the cache
    key includes the run's user); an async-only tool is cached through ainvoke; a store that
    fails on lookup means running the tool, not an error."""
    counter = Counter()

    @tool
    def orders(status: str, config: RunnableConfig) -> str:
        """The caller's orders."""
        counter.bump()
        return f"orders of {config['configurable']['user_id']} ({status})"

    co = cached_tool(orders, mem, user_id="default", ttl=3600)
    for user in ("alice", "bob", "alice"):
        got = co.invoke({"status": "open"}, config={"configurable": {"user_id": user}})
        assert got == f"orders of {user} (open)"
    assert counter.calls == 2 and co.cache.stats.hits == 1

    async def fetch(url: str) -> str:
        counter.bump()
        return url.upper()

    only_async = StructuredTool.from_function(coroutine=fetch, name="fetch", description="Fetch a URL.")
    ca = cached_tool(only_async, mem, user_id="u1", ttl=3600)
    assert asyncio.run(ca.ainvoke({"url": "a.org"})) == "A.ORG" == asyncio.run(ca.ainvoke({"url": "a.org"}))
    assert counter.calls == 3

    co.cache.memos = None  # type: ignore[assignment]  # every lookup now fails
    assert co.invoke({"status": "x"}, config={"configurable": {"user_id": "alice"}}) == "orders of alice (x)"


def test_normalise_args() -> None:
    assert normalise_args('{"b": 1, "a": " x "}') == {"a": " x ", "b": 1}
    assert normalise_args("  plain text ") == {"input": "plain text"}
    assert normalise_args({"when": object}) == {"when": str(object)}


def test_cookbook_example_runs_twice_and_reuses(tmp_path: Path) -> None:
    """cookbook/tool_memory_agent.py: the second run on the same folder answers the weather
    question from memory (the tool ran 0 times) and the experience covers both runs."""
    import os
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "cookbook" / "tool_memory_agent.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        for _ in range(2)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert "'weather': 1" in runs[0].stdout and "'weather': 0" in runs[1].stdout
    assert "hits=1" in runs[1].stdout
    assert "convert: 4 calls, 50% succeeded" in runs[1].stdout
