"""memos_langchain with real LangChain objects: runnables, RunnableWithMessageHistory, a
LangGraph agent whose fake chat model (GenericFakeChatModel) calls the memory tools."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from memos_langchain import MemosChatMessageHistory, MemosRetriever, create_memory_tools

from memos_core import MemOS
from memos_core.testing import HashEmbedder

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[MemOS]:
    m = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline")
    yield m
    m.close()


def remember(mem: MemOS, user: str, *texts: str, conversation: str | None = None) -> None:
    for text in texts:
        mem.add_message([{"role": "user", "content": text}], user_id=user, conversation_id=conversation,
                        async_mode=False)  # fmt: skip


def test_retriever_returns_documents_with_metadata(mem: MemOS) -> None:
    """invoke / ainvoke return Documents, best first, whose metadata explain the hit; the
    scope (user, conversation, filter, top_k) is respected."""
    remember(mem, "u1", "I live in Lisbon and work as a nurse", conversation="c1")
    remember(mem, "u1", "My favourite colour is green", conversation="c2")
    remember(mem, "u2", "I live in Oslo")
    docs = MemosRetriever(memos=mem, user_id="u1", top_k=3).invoke("where does the user live")
    assert "Lisbon" in docs[0].page_content
    meta = docs[0].metadata
    assert meta["id"] == docs[0].id and meta["score"] > 0 and "fused" in meta["score_details"]
    assert meta["origin"] == "memory" and meta["sources"] and meta["memory_type"]
    assert not any("Oslo" in d.page_content for d in docs)
    scoped = MemosRetriever(memos=mem, user_id="u1", conversation_id="c2", top_k=5)
    assert all(d.metadata["conversation_id"] == "c2" for d in asyncio.run(scoped.ainvoke("colour")))
    filtered = MemosRetriever(memos=mem, user_id="u1", filter={"memory_type": "preference"}).invoke("green")
    assert [d.page_content for d in filtered] == ["The user's favorite color is green."]


def test_retriever_lexical_mode(mem: MemOS) -> None:
    """mode="lexical" reaches search_memory: BM25 alone, so only memories sharing a word
    come back and none has a vector rank (hybrid ranks them by vector too); a mode outside
    SearchMode fails at construction, as any field of the wrong type does."""
    from pydantic import ValidationError

    remember(mem, "u1", "I live in Lisbon and work as a nurse", "I play the cello on weekends")
    docs = MemosRetriever(memos=mem, user_id="u1", mode="lexical").invoke("cello")
    assert docs and "cello" in docs[0].page_content
    assert all(d.metadata["score_details"]["vector_rank"] == 0 for d in docs)
    assert docs[0].metadata["score_details"]["bm25_rank"] == 1
    hybrid = MemosRetriever(memos=mem, user_id="u1").invoke("cello")
    assert len(hybrid) > len(docs) and hybrid[0].id == docs[0].id
    assert hybrid[0].metadata["score_details"]["vector_rank"] > 0
    keyword = MemosRetriever(memos=mem, user_id="u1", mode="keyword").invoke("cello")
    assert [d.id for d in keyword] == [d.id for d in docs]
    details = keyword[0].metadata["score_details"]
    assert details == {"bm25": round(keyword[0].metadata["score"], 6), "bm25_rank": 1} and details["bm25"] > 0
    with pytest.raises(ValidationError, match="mode"):
        MemosRetriever(memos=mem, user_id="u1", mode="vector")  # type: ignore[arg-type]


def test_retriever_in_a_chain(mem: MemOS) -> None:
    """The retriever composes like any runnable: retrieved memories reach the prompt."""
    remember(mem, "u1", "I am allergic to peanuts")
    seen: list[str] = []
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Known about the user:\n{memories}"), ("human", "{q}")]
    )
    model = GenericFakeChatModel(messages=iter([AIMessage(content="Avoid peanuts.")]))
    retriever = MemosRetriever(memos=mem, user_id="u1", top_k=2)

    def capture(value: Any) -> Any:
        seen.append(value.to_string())
        return value

    chain = (
        {"memories": RunnableLambda(lambda q: "\n".join(d.page_content for d in retriever.invoke(q))),
         "q": RunnableLambda(lambda q: q)}
        | prompt | RunnableLambda(capture) | model
    )  # fmt: skip
    assert chain.invoke("what should I cook for the user?").content == "Avoid peanuts."
    assert "peanuts" in seen[0]


# langchain-core 1.8 deprecates RunnableWithMessageHistory (for LangGraph persistence); the
# issue asks for it to work, and it does.
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_chat_history_with_runnable_with_message_history(mem: MemOS, tmp_path: Path) -> None:
    """RunnableWithMessageHistory keeps each session's transcript in MemOS (it survives a
    reopen of the folder), and the user's turns become searchable memories of that session."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are helpful."), MessagesPlaceholder("history"), ("human", "{input}")]
    )
    model = GenericFakeChatModel(messages=iter([AIMessage(content="Nice to meet you, Ana!"),
                                                AIMessage(content="You live in Porto.")]))  # fmt: skip

    def history(session_id: str) -> MemosChatMessageHistory:
        return MemosChatMessageHistory(mem, user_id="ana", conversation_id=session_id)

    chat = RunnableWithMessageHistory(
        prompt | model, history, input_messages_key="input", history_messages_key="history"
    )
    cfg: Any = {"configurable": {"session_id": "s1"}}
    chat.invoke({"input": "Hi, I'm Ana and I live in Porto."}, config=cfg)
    chat.invoke({"input": "Where do I live?"}, config=cfg)
    transcript = history("s1").messages
    assert [type(m).__name__ for m in transcript] == [
        "HumanMessage",
        "AIMessage",
        "HumanMessage",
        "AIMessage",
    ]
    assert transcript[-1].content == "You live in Porto."
    assert history("s2").messages == []
    mem.run_pending()
    hits = mem.search_memory("where does Ana live", user_id="ana").data.memory_detail_list
    # One memory a turn: the question "Where do I live?" is a memory too, next to its answer.
    porto = [h for h in hits[:2] if "I live in Porto" in h.memory]
    assert porto and porto[0].conversation_id == "s1", [h.memory for h in hits]
    mem.close()
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as again:
        assert len(MemosChatMessageHistory(again, user_id="ana", conversation_id="s1").messages) == 4
        MemosChatMessageHistory(again, user_id="ana", conversation_id="s1").clear()
        assert MemosChatMessageHistory(again, user_id="ana", conversation_id="s1").messages == []


def test_memory_tools_in_a_langgraph_agent(mem: MemOS) -> None:
    """A fake chat model calls save_memory, then search_memory; the user comes from the run
    config, the saved memory is the user's, and the search result reaches the model."""
    tools = create_memory_tools(mem)
    script = iter(
        [
            AIMessage(
                content="",
                tool_calls=[{"name": "save_memory", "args": {"memory": "Bo keeps bees."}, "id": "1"}],
            ),
            AIMessage(
                content="", tool_calls=[{"name": "search_memory", "args": {"query": "bees"}, "id": "2"}]
            ),
            AIMessage(content="You keep bees."),
        ]
    )
    model = GenericFakeChatModel(messages=script)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def route(state: MessagesState) -> str:
        last = state["messages"][-1]
        return "tools" if isinstance(last, AIMessage) and last.tool_calls else END

    g = StateGraph(MessagesState)
    g.add_node("agent", agent)
    g.add_node("tools", ToolNode(tools))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route)
    g.add_edge("tools", "agent")
    out = g.compile().invoke(
        {"messages": [HumanMessage("remember I keep bees")]},
        config={"configurable": {"user_id": "bo", "thread_id": "t9"}},
    )
    results = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert results[0].startswith("Saved memory") and "Bo keeps bees." in results[1]
    saved = mem.list_memories("bo", filter={"tags": {"contains": "saved_by_agent"}}).data.items
    assert [(i.memory, i.conversation_id) for i in saved] == [("Bo keeps bees.", "t9")]
    # Async twin, and no user at all: an error the model can read, not a crash.
    found = asyncio.run(tools[0].ainvoke({"query": "bees"}, config={"configurable": {"user_id": "bo"}}))
    assert "Bo keeps bees." in found
    assert tools[0].invoke({"query": "bees"}).startswith("Error: no user")


def test_cookbook_example_runs() -> None:
    """cookbook/langchain_memory.py runs offline and remembers across sessions."""
    r = subprocess.run([sys.executable, str(ROOT / "cookbook" / "langchain_memory.py")], capture_output=True,
                       text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Porto" in r.stdout.split("memories for the new session:")[1]


def test_chat_history_keeps_only_what_memos_accepted_and_reads_long_transcripts(mem: MemOS) -> None:
    """A message MemOS refuses is not kept in the transcript (a retry would duplicate it);
    ids with control characters are refused up front; long transcripts are read whole."""
    from memos_core import InvalidInputError, PayloadTooLargeError

    history = MemosChatMessageHistory(mem, user_id="u", conversation_id="c")
    with pytest.raises(PayloadTooLargeError):
        history.add_messages([HumanMessage("x" * 200_000)])
    assert history.messages == []
    with pytest.raises(InvalidInputError):
        MemosChatMessageHistory(mem, user_id="u", conversation_id="c\x1fx")
    quiet = MemosChatMessageHistory(mem, user_id="u", conversation_id="long", remember=False)
    quiet.add_messages([HumanMessage(f"message {i}") for i in range(10_050)])
    got = quiet.messages
    assert len(got) == 10_050 and got[-1].content == "message 10049"
    quiet.clear()
    assert quiet.messages == []
