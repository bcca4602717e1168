"""A LangGraph agent with tool memory: traces every call, reuses results, learns from both.

    python cookbook/tool_memory_agent.py [DATA_FOLDER]

The chat model is langchain_core's GenericFakeChatModel (scripted tool calls, so the example
runs offline); the tools, the ToolNode, the graph and the memory are real. Run it twice on the
same folder: the second run answers the weather question from memory (the tool counter
stays at 0) and the experience summary covers both runs.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from memos_core import MemOS
from tool_memory import (
    ToolMemoryCallbackHandler,
    cached_tool,
    render_experience,
    search_tool_memory,
    tool_experience,
)

RUNS = {"weather": 0, "convert": 0}


@tool
def weather(city: str) -> str:
    """Current weather for a city (pretend this is a slow, paid API)."""
    RUNS["weather"] += 1
    return f"light rain, 14C in {city}"


@tool
def convert(celsius: float) -> float:
    """Celsius to Fahrenheit."""
    RUNS["convert"] += 1
    if celsius < -273.15:
        raise ValueError("below absolute zero")
    return round(celsius * 9 / 5 + 32, 1)


def build(tools: list[Any]) -> Any:
    script = iter(
        [
            AIMessage(content="", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}]),
            AIMessage(
                content="",
                tool_calls=[
                    {"name": "convert", "args": {"celsius": 14}, "id": "c2"},
                    {"name": "convert", "args": {"celsius": -300}, "id": "c3"},
                ],
            ),
            AIMessage(content="It is 14C (57.2F) with light rain in Paris."),
        ]
    )
    model = GenericFakeChatModel(messages=script)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route)
    graph.add_edge("tools", "agent")
    return graph.compile()


def main(folder: str) -> None:
    with MemOS(folder) as mem:
        user = "traveller"
        tools = [cached_tool(weather, mem, user_id=user, ttl=3600), convert]
        handler = ToolMemoryCallbackHandler(mem, user_id=user)
        app = build(tools)
        out = app.invoke(
            {"messages": [HumanMessage("What's the weather in Paris, in Fahrenheit?")]},
            config={"callbacks": [handler], "configurable": {"thread_id": "trip-1"}},
        )
        print("agent:", out["messages"][-1].content)
        print(f"tool runs this time: {RUNS}  (weather cache: {tools[0].cache.stats})")
        print("\nwhat tool memory found for 'weather in Paris':")
        for hit in search_tool_memory(mem, "weather in Paris", user_id=user, top_k=2):
            print("  -", hit.memory)
        print("\nexperience, ready for a prompt:")
        print(render_experience(tool_experience(mem, user_id=user)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="memos-tools-"))
