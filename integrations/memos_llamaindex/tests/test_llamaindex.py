"""memos_llamaindex against real LlamaIndex objects and a real MemOS (hash embedder, inline
scheduler). Warnings are errors (pyproject); the only ones silenced are aiosqlite's
ResourceWarnings from LlamaIndex's own chat store (it never closes its in-memory SQLite
connection), and only on the tests that build a ``Memory`` or a chat engine."""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import memos_llamaindex
except ImportError:  # run from a checkout without the package on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import memos_llamaindex

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.chat_engine import ContextChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage, MockLLM
from llama_index.core.memory import Memory, VectorMemoryBlock
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from memos_llamaindex import (
    MemosMemoryBlock,
    MemosRetriever,
    MemosVectorStore,
    to_memos_filter,
)

from memos_core import (
    FilterError,
    InvalidInputError,
    MemOS,
    MissingDependencyError,
    NotSupportedError,
    PayloadTooLargeError,
)
from memos_core.testing import HashEmbedder

# LlamaIndex's SQLAlchemyChatStore (behind Memory and the chat engines) leaves its aiosqlite
# connection to the garbage collector, which warns; collected inside the test (see _collect).
AIOSQLITE_UNCLOSED = pytest.mark.filterwarnings(
    "ignore:<aiosqlite.core.Connection object at .* was deleted before being closed:ResourceWarning"
)


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[MemOS]:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as m:
        yield m


@pytest.fixture
def _collect() -> Iterator[None]:
    """Collect garbage before the test's warning filters are lifted (see AIOSQLITE_UNCLOSED)."""
    yield
    gc.collect()


def _chat(mem: MemOS, conversation_id: str, *lines: str) -> None:
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(lines)]
    mem.add_message(msgs, user_id="u1", conversation_id=conversation_id)


# ----------------------------------------------------------------------------- retriever


def test_retriever_returns_nodes_with_memos_metadata(mem: MemOS) -> None:
    """Node id = memory id, score = MemOS score, and the metadata carries the score breakdown,
    provenance and origin. If this fails, look at hit_to_node."""
    _chat(mem, "c1", "I moved to Berlin last year", "Berlin is a great city")
    nodes = MemosRetriever(mem, user_id="u1").retrieve("where does the user live? Berlin")
    assert nodes and isinstance(nodes[0], NodeWithScore)
    top = nodes[0]
    hit = mem.search_memory("where does the user live? Berlin", user_id="u1").data.memory_detail_list[0]
    assert top.node.node_id == hit.id == top.node.metadata["memory_id"]
    assert "Berlin" in top.node.get_content()
    meta = top.node.metadata
    assert meta["score"] == top.score and top.score is not None and top.score > 0
    assert {"vector", "bm25", "final"} <= set(meta["score_details"])
    assert meta["sources"][0]["conversation_id"] == "c1" and meta["sources"][0]["role"] == "user"
    assert meta["memory_type"] == "long_term" and meta["origin"] == "memory"
    assert meta["conversation_id"] == "c1"
    # Only memory_type and event_time reach a prompt; ids and score breakdowns do not.
    from llama_index.core.schema import MetadataMode

    llm_text = top.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "memory_type: long_term" in llm_text and "score_details" not in llm_text


def test_retriever_scope_conversation_filter_top_k_and_knowledgebase(mem: MemOS) -> None:
    """conversation_id, filter, top_k and knowledgebase_ids reach search_memory."""
    _chat(mem, "c1", "my cat is called Tom", "nice cat")
    _chat(mem, "c2", "my cat likes fish", "cats do")
    mem.add_memory("the cat's vet is Dr. Lee", user_id="u1", tags=["pets"], info={"scene": "vet"})
    assert len(MemosRetriever(mem, user_id="u1", top_k=1).retrieve("cat")) == 1
    convo = MemosRetriever(mem, user_id="u1", conversation_id="c2").retrieve("cat")
    assert convo and {n.node.metadata["conversation_id"] for n in convo} == {"c2"}
    tagged = MemosRetriever(mem, user_id="u1", filter={"scene": "vet"}).retrieve("cat")
    assert [n.node.get_content() for n in tagged] == ["the cat's vet is Dr. Lee"]
    mem.create_knowledgebase("u1", kb_id="kb1")
    mem.add_document("kb1", b"Cats sleep sixteen hours a day.", user_id="u1", filename="cats.txt")
    both = MemosRetriever(mem, user_id="u1", knowledgebase_ids=["kb1"], top_k=10).retrieve("cats sleep")
    assert {"knowledgebase", "memory"} <= {n.node.metadata["origin"] for n in both}
    kb_hit = next(n for n in both if n.node.metadata["origin"] == "knowledgebase")
    assert kb_hit.node.metadata["sources"][0]["type"] == "doc"


def test_retriever_lexical_mode(mem: MemOS) -> None:
    """mode="lexical" reaches search_memory: BM25 alone, so only memories sharing a word
    come back and none has a vector rank (hybrid ranks them by vector too); a mode outside
    SearchMode is refused by MemOS when the retriever searches."""
    _chat(mem, "c1", "I live in Lisbon and work as a nurse", "nice")
    _chat(mem, "c2", "I play the cello on weekends", "lovely")
    nodes = MemosRetriever(mem, user_id="u1", mode="lexical").retrieve("cello")
    assert nodes and "cello" in nodes[0].node.get_content()
    assert all(n.node.metadata["score_details"]["vector_rank"] == 0 for n in nodes)
    assert nodes[0].node.metadata["score_details"]["bm25_rank"] == 1
    hybrid = MemosRetriever(mem, user_id="u1").retrieve("cello")
    assert len(hybrid) > len(nodes) and hybrid[0].node.node_id == nodes[0].node.node_id
    assert hybrid[0].node.metadata["score_details"]["vector_rank"] > 0
    keyword = MemosRetriever(mem, user_id="u1", mode="keyword").retrieve("cello")
    assert [n.node.node_id for n in keyword] == [n.node.node_id for n in nodes]
    assert set(keyword[0].node.metadata["score_details"]) == {"bm25", "bm25_rank"}
    with pytest.raises(InvalidInputError, match="mode"):
        MemosRetriever(mem, user_id="u1", mode="vector")  # type: ignore[arg-type]


def test_retriever_async(mem: MemOS) -> None:
    """_aretrieve gives the same nodes as _retrieve."""
    _chat(mem, "c1", "I play the violin", "lovely")
    retriever = MemosRetriever(mem, user_id="u1")
    sync = [n.node.node_id for n in retriever.retrieve("violin")]
    assert sync and [n.node.node_id for n in asyncio.run(retriever.aretrieve("violin"))] == sync


def test_retriever_in_query_engine(mem: MemOS) -> None:
    """A RetrieverQueryEngine with MockLLM (which echoes its prompt) answers from memory."""
    _chat(mem, "c1", "my favourite colour is teal", "teal it is")
    engine = RetrieverQueryEngine.from_args(MemosRetriever(mem, user_id="u1"), llm=MockLLM())
    response = engine.query("what is my favourite colour?")
    assert "teal" in str(response)
    assert response.source_nodes[0].node.metadata["memory_type"] == "long_term"
    assert "teal" in str(asyncio.run(engine.aquery("favourite colour")))


@AIOSQLITE_UNCLOSED
@pytest.mark.usefixtures("_collect")
def test_retriever_in_context_chat_engine(mem: MemOS) -> None:
    """A ContextChatEngine puts retrieved memories into its system prompt."""
    _chat(mem, "c1", "I am allergic to peanuts", "noted")
    chat = ContextChatEngine.from_defaults(retriever=MemosRetriever(mem, user_id="u1"), llm=MockLLM())
    response = chat.chat("what am I allergic to?")
    assert "peanuts" in str(response)
    assert response.source_nodes and "peanuts" in response.source_nodes[0].node.get_content()


# ----------------------------------------------------------------------------- memory block


def _memory(session_id: str, *blocks: Any) -> Memory:
    # A tiny short-term window so every new turn flushes the older ones into the blocks.
    return Memory.from_defaults(
        session_id=session_id,
        memory_blocks=list(blocks),
        token_limit=40,
        chat_history_token_ratio=0.5,
        token_flush_size=10,
        tokenizer_fn=str.split,
    )


@AIOSQLITE_UNCLOSED
@pytest.mark.usefixtures("_collect")
def test_memory_block_puts_each_session_under_its_own_conversation(mem: MemOS) -> None:
    """One block shared by two Memory objects: flushed messages land in MemOS with each
    Memory's session_id as conversation_id (LlamaIndex's VectorMemoryBlock, which pops the id
    off the messages, runs next to it and must not steal it). If this fails, look at
    MemosMemoryBlock._batches."""
    block = MemosMemoryBlock(memos=mem, user_id="u1")
    neighbour = VectorMemoryBlock(
        vector_store=MemosVectorStore(memos=mem, user_id="u1", collection="vmb"),
        embed_model=MockEmbedding(embed_dim=8),
    )
    topics = {"sess-a": "Alice hikes in the Alps", "sess-b": "Bob plays violin at concerts"}
    for session_id, topic in topics.items():
        memory = _memory(session_id, block, neighbour)
        for i in range(4):
            memory.put(ChatMessage(role="user", content=f"{topic}, note {i}"))
            memory.put(ChatMessage(role="assistant", content=f"ok {i}"))
    for session_id, topic in topics.items():
        items = mem.list_memories("u1", filter={"conversation_id": session_id}).data.items
        assert items, f"nothing flushed for {session_id}"
        said = [i for i in items if i.sources and i.sources[0].role == "user"]  # one memory a turn
        assert said and all(topic in i.memory and i.mode == "fast" for i in said)
        assert all(s.conversation_id == session_id for i in items for s in i.sources)
    chat_items = mem.list_memories("u1", filter={"memory_type": "long_term"}).data.items
    assert {i.conversation_id for i in chat_items} == set(topics)


@AIOSQLITE_UNCLOSED
@pytest.mark.usefixtures("_collect")
def test_memory_block_recalls_into_memory_get(mem: MemOS) -> None:
    """Memory.get() inserts what the block recalls; search_scope="session" keeps to the
    Memory's own session (the id arrives as aget's session_id keyword)."""
    _chat(mem, "old", "Carol collects vintage cameras", "nice hobby")
    _chat(mem, "sess-x", "Carol also collects stamps", "ok")
    wide = _memory("sess-x", MemosMemoryBlock(memos=mem, user_id="u1", name="recall"))
    system = wide.get(input="what does Carol collect?")[0]
    assert system.role == "system" and "vintage cameras" in (system.content or "")
    narrow = _memory(
        "sess-x", MemosMemoryBlock(memos=mem, user_id="u1", name="recall", search_scope="session")
    )
    text = narrow.get(input="what does Carol collect?")[0].content or ""
    assert "stamps" in text and "vintage cameras" not in text


def test_memory_block_direct_put_and_get(mem: MemOS) -> None:
    """Outside a Memory: aput without a session id uses the block's conversation_id; roles
    map to MemOS roles; text-less messages are skipped; aget of nothing is ''."""
    block = MemosMemoryBlock(memos=mem, user_id="u1", conversation_id="fallback", tags=["li"])
    asyncio.run(
        block.aput(
            [
                ChatMessage(role="developer", content="be brief"),
                ChatMessage(role="user", content="I run marathons"),
                ChatMessage(role="assistant", content=""),
                ChatMessage(role="chatbot", content="impressive"),
            ]
        )
    )
    items = mem.list_memories("u1").data.items
    assert items and {i.conversation_id for i in items} == {"fallback"}
    assert all(i.tags == ["li"] for i in items)
    assert {s.role for i in items for s in i.sources} == {"system", "user", "assistant"}
    assert "marathons" in asyncio.run(block.aget([ChatMessage(role="user", content="marathons")]))
    assert asyncio.run(block.aget([])) == ""
    asyncio.run(block.aput([ChatMessage(role="user", content="in session")], session_id="s9"))
    assert mem.list_memories("u1", conversation_id="s9").data.total == 1


# ----------------------------------------------------------------------------- vector store


def _nodes() -> list[TextNode]:
    rows: list[tuple[str, str, dict[str, Any]]] = [
        ("n1", "The cat sat on the mat in Paris.", {"city": "Paris", "year": 2020, "labels": ["a", "b"]}),
        ("n2", "Dogs run in the park of Rome.", {"city": "Rome", "year": 2024, "labels": ["b"]}),
        ("n3", "Birds sing over Lisbon harbour.", {"city": "lisbon", "year": 2022, "labels": [], "note": ""}),
    ]
    out = []
    for node_id, text, meta in rows:
        node = TextNode(id_=node_id, text=text, metadata=meta)
        node.relationships = {}
        out.append(node)
    return out


def test_vector_store_add_query_delete_round_trip(mem: MemOS) -> None:
    """Nodes come back with their ids, text, metadata and ref_doc_id; delete(ref_doc_id)
    removes a document's nodes; adding a node id again replaces it."""
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    store = MemosVectorStore(memos=mem, user_id="u1")
    nodes = _nodes()
    for node, doc in zip(nodes, ["docA", "docA", "docB"], strict=True):
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    assert store.add(nodes) == ["n1", "n2", "n3"]
    result = store.query(VectorStoreQuery(query_str="cat mat Paris", similarity_top_k=3))
    assert result.ids is not None and result.nodes is not None and result.similarities is not None
    assert result.ids[0] == "n1" and len(result.ids) == 3
    first = result.nodes[0]
    assert first.get_content() == "The cat sat on the mat in Paris."
    assert first.metadata == {"city": "Paris", "year": 2020, "labels": ["a", "b"]}
    assert first.ref_doc_id == "docA" and result.similarities[0] > 0
    stored = mem.list_memories("u1", filter={"info._node_id": "n1"}).data.items[0]
    assert stored.memory_type == "knowledge" and stored.tags == ["llamaindex:default"]
    assert stored.sources[0].doc_id == "docA"

    store.delete("docA")
    left = store.query(VectorStoreQuery(query_str="cat dogs birds", similarity_top_k=5))
    assert left.ids == ["n3"]
    store.add([TextNode(id_="n3", text="Gulls now, not birds.", metadata={"city": "Lisbon"})])
    assert [n.get_content() for n in store.get_nodes(node_ids=["n3"])] == ["Gulls now, not birds."]
    assert store.query(VectorStoreQuery(query_str="x", doc_ids=["docB"])).ids == []


def test_a_refused_node_leaves_the_stored_ones_in_place(mem: MemOS) -> None:
    """Re-adding nodes where one is too large changes nothing: the check runs before any
    write, and old versions are removed only after the new ones are stored."""
    from llama_index.core.schema import TextNode

    store = MemosVectorStore(memos=mem, user_id="u1")
    store.add([TextNode(id_="a", text="alpha v1"), TextNode(id_="b", text="beta v1")])
    big = TextNode(id_="b", text="beta v2", metadata={"blob": "x" * 70_000})
    with pytest.raises(PayloadTooLargeError):
        store.add([TextNode(id_="a", text="alpha v2"), big])
    texts = sorted(n.get_content() for n in store.get_nodes(node_ids=["a", "b"]))
    assert texts == ["alpha v1", "beta v1"]


def test_vector_store_collections_other_calls_and_async(mem: MemOS) -> None:
    """Collections do not see each other; get_nodes / delete_nodes / clear and the async
    twins work; unsupported query modes and text-less queries say why."""
    a = MemosVectorStore(memos=mem, user_id="u1", collection="a")
    b = MemosVectorStore(memos=mem, user_id="u1", collection="b")
    assert asyncio.run(a.async_add(_nodes())) == ["n1", "n2", "n3"]
    b.add([TextNode(id_="n1", text="The cat in collection b.")])
    assert len(a.get_nodes()) == 3 and [n.get_content() for n in b.get_nodes()] == [
        "The cat in collection b."
    ]
    q = VectorStoreQuery(query_str="cat", similarity_top_k=5)
    assert asyncio.run(a.aquery(q)).ids == a.query(q).ids
    assert b.query(q).ids == ["n1"]
    # TEXT_SEARCH is MemOS's lexical mode: only the node that says "cat", no vector neighbours
    text_q = VectorStoreQuery(query_str="cat", similarity_top_k=5, mode=VectorStoreQueryMode.TEXT_SEARCH)
    assert a.query(text_q).ids == ["n1"] and len(a.query(q).ids) == 3
    rome = MetadataFilters(filters=[MetadataFilter(key="city", value="Rome")])
    assert [n.node_id for n in asyncio.run(a.aget_nodes(filters=rome))] == ["n2"]
    asyncio.run(a.adelete_nodes(filters=rome))
    a.delete_nodes(node_ids=["n1"])
    assert [n.node_id for n in a.get_nodes()] == ["n3"]
    asyncio.run(a.aclear())
    assert a.get_nodes() == [] and len(b.get_nodes()) == 1
    with pytest.raises(InvalidInputError):
        a.delete_nodes()
    with pytest.raises(NotSupportedError, match="query mode 'mmr'"):
        a.query(VectorStoreQuery(query_str="cat", mode=VectorStoreQueryMode.MMR))
    with pytest.raises(NotSupportedError, match="query_str"):
        a.query(VectorStoreQuery(query_embedding=[0.0] * 8))
    with pytest.raises(InvalidInputError, match="no text"):
        a.add([TextNode(id_="empty", text="  ")])
    assert a.client is mem


def test_vector_store_index_from_documents_and_from_vector_store(mem: MemOS) -> None:
    """VectorStoreIndex.from_documents writes through the store; from_vector_store reads it
    back; as_query_engine(llm=MockLLM()) answers; delete_ref_doc deletes."""
    store = MemosVectorStore(memos=mem, user_id="u1")
    docs = [
        Document(text="The Eiffel tower is in Paris.", metadata={"city": "Paris"}, id_="d1"),
        Document(text="The Colosseum is in Rome.", metadata={"city": "Rome"}, id_="d2"),
    ]
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=MockEmbedding(embed_dim=8),
    )
    hits = index.as_retriever(similarity_top_k=2).retrieve("Eiffel tower")
    assert hits[0].node.ref_doc_id == "d1" and hits[0].node.metadata == {"city": "Paris"}

    again = VectorStoreIndex.from_vector_store(store, embed_model=MockEmbedding(embed_dim=8))
    response = again.as_query_engine(llm=MockLLM()).query("Colosseum")
    assert "Colosseum" in str(response)
    only_rome = MetadataFilters(filters=[MetadataFilter(key="city", value="Rome")])
    assert [n.node.ref_doc_id for n in again.as_retriever(filters=only_rome).retrieve("tower")] == ["d2"]
    index.delete_ref_doc("d1")
    assert [n.node.ref_doc_id for n in again.as_retriever(similarity_top_k=5).retrieve("tower")] == ["d2"]


# ----------------------------------------------------------------------------- filters


def _f(key: str, value: Any, op: FilterOperator) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (_f("city", "Rome", FilterOperator.EQ), {"n2"}),
        (_f("city", "Rome", FilterOperator.NE), {"n1", "n3"}),
        (_f("year", 2022, FilterOperator.GT), {"n2"}),
        (_f("year", 2022, FilterOperator.GTE), {"n2", "n3"}),
        (_f("year", 2022, FilterOperator.LT), {"n1"}),
        (_f("year", 2022, FilterOperator.LTE), {"n1", "n3"}),
        (_f("city", ["Rome", "Paris"], FilterOperator.IN), {"n1", "n2"}),
        (_f("city", ["Rome", "Paris"], FilterOperator.NIN), {"n3"}),
        (_f("labels", "a", FilterOperator.CONTAINS), {"n1"}),
        (_f("labels", ["a", "b"], FilterOperator.ANY), {"n1", "n2"}),
        (_f("labels", ["a", "b"], FilterOperator.ALL), {"n1"}),
        (_f("city", "isbo", FilterOperator.TEXT_MATCH), {"n3"}),
        (_f("city", "LISB", FilterOperator.TEXT_MATCH), set()),
        (_f("city", "LISB", FilterOperator.TEXT_MATCH_INSENSITIVE), {"n3"}),
        (_f("labels", None, FilterOperator.IS_EMPTY), {"n3"}),
        (_f("note", None, FilterOperator.IS_EMPTY), {"n1", "n2", "n3"}),
        (_f("missing", "x", FilterOperator.NE), {"n1", "n2", "n3"}),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="year", value=2021, operator=FilterOperator.GT),
                    MetadataFilter(key="city", value="Paris"),
                ],
                condition=FilterCondition.OR,
            ),
            {"n1", "n2", "n3"},
        ),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="city", value="Paris"), MetadataFilter(key="city", value="Rome")],
                condition=FilterCondition.NOT,
            ),
            {"n3"},
        ),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="labels", value="b", operator=FilterOperator.CONTAINS),
                    MetadataFilters(
                        filters=[
                            MetadataFilter(key="year", value=2020),
                            MetadataFilter(key="city", value="Rome", operator=FilterOperator.NE),
                        ],
                        condition=FilterCondition.AND,
                    ),
                ],
                condition=FilterCondition.AND,
            ),
            {"n1"},
        ),
    ],
    ids=[
        "EQ",
        "NE",
        "GT",
        "GTE",
        "LT",
        "LTE",
        "IN",
        "NIN",
        "CONTAINS",
        "ANY",
        "ALL",
        "TEXT_MATCH",
        "TEXT_MATCH-case",
        "TEXT_MATCH_INSENSITIVE",
        "IS_EMPTY-list",
        "IS_EMPTY-string",
        "NE-missing",
        "OR",
        "NOT",
        "nested",
    ],
)
def test_metadata_filters_select_like_llamaindex(
    mem: MemOS, filters: MetadataFilters, expected: set[str]
) -> None:
    """Each FilterOperator and condition, compiled to the MemOS DSL, selects the nodes that
    LlamaIndex's own reference filter (build_metadata_filter_fn) selects; get_nodes and query
    agree. If one fails, look at the
    row for that operator in memos_llamaindex.filters."""
    from llama_index.core.vector_stores.utils import build_metadata_filter_fn

    # LlamaIndex's own reference filter (what SimpleVectorStore applies) must agree with the
    # expected set, so the expectations are LlamaIndex's, not ours.
    # (The reference refuses nested filters; for those the expectation is written by hand.)
    by_id = {n.node_id: n.metadata for n in _nodes()}
    if not any(isinstance(f, MetadataFilters) for f in filters.filters):
        reference = build_metadata_filter_fn(lambda node_id: by_id[node_id], filters)
        assert {i for i in by_id if reference(i)} == expected
    store = MemosVectorStore(memos=mem, user_id="u1")
    store.add(_nodes())
    assert {n.node_id for n in store.get_nodes(filters=filters)} == expected
    result = store.query(VectorStoreQuery(query_str="cat dogs birds", similarity_top_k=10, filters=filters))
    assert set(result.ids or []) == expected


def test_filter_compilation_shape_and_errors() -> None:
    """Keys are addressed as info.<key>; a metadata key named like a column stays metadata;
    operators without an exact mapping raise FilterError naming the filter."""
    assert to_memos_filter(None) is None and to_memos_filter(MetadataFilters(filters=[])) is None
    assert to_memos_filter(_f("tags", "x", FilterOperator.EQ)) == {"and": [{"info.tags": {"eq": "x"}}]}
    assert to_memos_filter(_f("memory_type", "user", FilterOperator.EQ), prefix="") == {
        "and": [{"memory_type": {"eq": "user"}}]
    }
    assert to_memos_filter(_f("k", "v", FilterOperator.IN)) == {"and": [{"info.k": {"in": ["v"]}}]}
    with pytest.raises(FilterError, match=r"'%' or '_'.*\$\.filters\[0\]"):
        to_memos_filter(_f("k", "50%", FilterOperator.TEXT_MATCH_INSENSITIVE))
    with pytest.raises(FilterError, match="ANY needs at least one value"):
        to_memos_filter(_f("k", [], FilterOperator.ANY))
    bogus = MetadataFilter.model_construct(key="k", value=1, operator="bogus")
    with pytest.raises(FilterError, match=r"has no mapping.*supported: EQ"):
        to_memos_filter(MetadataFilters.model_construct(filters=[bogus], condition=FilterCondition.AND))


# ----------------------------------------------------------------------------- packaging


def test_missing_llama_index_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llama-index-core, importing the package raises MissingDependencyError that
    names the extra to install."""
    for name in [m for m in sys.modules if m == "memos_llamaindex" or m.startswith("memos_llamaindex.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    with pytest.raises(MissingDependencyError) as info:
        importlib.import_module("memos_llamaindex")
    assert info.value.extra == "llamaindex" and "llama-index-core" in str(info.value)


def test_public_api() -> None:
    """The curated surface; change it on purpose."""
    assert sorted(memos_llamaindex.__all__) == [
        "MemosMemoryBlock",
        "MemosRetriever",
        "MemosVectorStore",
        "hit_to_node",
        "to_memos_filter",
    ]


@pytest.mark.slow
def test_cookbook_runs_offline_with_the_default_embedder(tmp_path: Path) -> None:
    """cookbook/llamaindex_memory.py, with the packaged MiniLM: sessions are remembered
    under their own ids, a new chat recalls across them, the filtered index query works."""
    root = Path(__file__).resolve().parents[3]
    package_dir = str(Path(memos_llamaindex.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in (package_dir, os.environ.get("PYTHONPATH")) if p),
    }
    r = subprocess.run(
        [sys.executable, str(root / "cookbook" / "llamaindex_memory.py"), str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=root,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "[trip-planning] user" in out and "Lisbon" in out
    assert "[cooking] user" in out and "vegetarian" in out
    assert "recalled: cooking" in out
    assert "guide: Porto trains leave from São Bento station." in out
    assert "after delete: 0" in out
