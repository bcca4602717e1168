"""A LangGraph agent that remembers a fact across threads.

    python cookbook/langgraph_agent_memory.py [DATA_FOLDER]

The graph is recall -> agent -> remember: ``recall_memories_node`` searches the user's
memories for the latest message, the agent sees them in its system prompt, and
``remember_turn_node`` writes the turn into MemOS. Thread 1: the user says where she lives.
Thread 2 (a new conversation, empty history): the agent is asked, and the recalled memory is
in its prompt. The chat model is langchain_core's GenericFakeChatModel (scripted, offline);
the prompt it received is printed, so you can see the memory reached it. MemOS, the packaged
embedding model and the graph are real.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from memos_langgraph.nodes import recall_memories_node, remember_turn_node

from memos_core import MemOS


class State(MessagesState):
    memories: list[str]


def build(mem: MemOS, model: GenericFakeChatModel, prompts: list[str]) -> Any:
    def agent(state: State) -> dict[str, Any]:
        known = "\n".join(f"- {m}" for m in state.get("memories", [])) or "(nothing yet)"
        system = SystemMessage(f"You are a helpful assistant. What you remember about the user:\n{known}")
        prompts.append(system.content if isinstance(system.content, str) else "")
        return {"messages": [model.invoke([system, *state["messages"]])]}

    graph = StateGraph(State)
    graph.add_node("recall", recall_memories_node(mem, top_k=3))
    graph.add_node("agent", agent)
    graph.add_node("remember", remember_turn_node(mem, name="Ana"))
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "agent")
    graph.add_edge("agent", "remember")
    graph.add_edge("remember", END)
    return graph.compile()


def main(folder: str) -> None:
    with MemOS(folder, scheduler="inline") as mem:
        model = GenericFakeChatModel(
            messages=iter([AIMessage(content="Porto is lovely!"), AIMessage(content="You live in Porto.")])
        )
        prompts: list[str] = []
        app = build(mem, model, prompts)
        user = {"user_id": "ana"}
        out = app.invoke(
            {"messages": [HumanMessage("I just moved to Porto.")]},
            {"configurable": {**user, "thread_id": "t1"}},
        )
        print("thread 1:", out["messages"][-1].content)
        mem.run_pending()  # the fine stage turns the turn into the fact "Ana lives in Porto."

        thread2 = {"configurable": {"user_id": "ana", "thread_id": "t2"}}
        out = app.invoke({"messages": [HumanMessage("Where do I live?")]}, thread2)
        print("thread 2 recalled:", out["memories"])
        print("thread 2 system prompt:\n" + prompts[-1])
        print("thread 2:", out["messages"][-1].content)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="memos-langgraph-"))
