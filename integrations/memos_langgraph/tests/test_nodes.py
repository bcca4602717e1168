"""The prebuilt memory nodes in a real compiled graph, and the cookbook agent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from memos_langgraph.nodes import recall_memories_node, remember_turn_node

from memos_core import InvalidInputError, MemOS
from memos_core.testing import HashEmbedder

ROOT = Path(__file__).resolve().parents[3]


class State(MessagesState):
    memories: list[str]


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[MemOS]:
    m = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline")
    yield m
    m.close()


def run(app: Any, text: str, user: str, thread: str) -> Any:
    config = {"configurable": {"user_id": user, "thread_id": thread}}
    return app.invoke({"messages": [HumanMessage(text)]}, config)


def graph(mem: MemOS, replies: list[str], **recall: Any) -> Any:
    model = GenericFakeChatModel(messages=iter([AIMessage(content=r) for r in replies]))

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    g = StateGraph(State)
    g.add_node("recall", recall_memories_node(mem, **recall))
    g.add_node("agent", agent)
    g.add_node("remember", remember_turn_node(mem))
    g.add_edge(START, "recall")
    g.add_edge("recall", "agent")
    g.add_edge("agent", "remember")
    g.add_edge("remember", END)
    return g.compile()


def test_recall_and_remember_across_threads(mem: MemOS) -> None:
    """The turn of thread a is remembered under the user and thread; thread b recalls it,
    a thread-only recall does not, another user never does."""
    app = graph(mem, ["Noted.", "Lisbon.", "?", "?"])
    app.invoke(
        {"messages": [HumanMessage("I live in Lisbon")]}, {"configurable": {"user_id": "u", "thread_id": "a"}}
    )
    mem.run_pending()
    items = mem.list_memories("u").data.items
    assert {i.conversation_id for i in items} == {"a"}
    assert any("assistant" in i.memory and "Noted." in i.memory for i in items)
    out = app.invoke(
        {"messages": [HumanMessage("where do I live")]}, {"configurable": {"user_id": "u", "thread_id": "b"}}
    )
    assert any("Lisbon" in m for m in out["memories"])
    local = graph(mem, ["?"], this_thread_only=True)
    out = local.invoke(
        {"messages": [HumanMessage("where do I live")]}, {"configurable": {"user_id": "u", "thread_id": "c"}}
    )
    assert out["memories"] == []
    other = app.invoke(
        {"messages": [HumanMessage("where do I live")]}, {"configurable": {"user_id": "v", "thread_id": "b"}}
    )
    assert other["memories"] == []


def test_nodes_need_a_user(mem: MemOS) -> None:
    with pytest.raises(InvalidInputError, match="user_id"):
        graph(mem, ["x"]).invoke({"messages": [HumanMessage("hi")]})


def test_cookbook_agent_remembers_across_threads() -> None:
    """cookbook/langgraph_agent_memory.py: thread 2's system prompt holds what thread 1 said."""
    script = str(ROOT / "cookbook" / "langgraph_agent_memory.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr
    prompt = r.stdout.split("thread 2 system prompt:")[1]
    assert "Ana lives in Porto." in prompt
