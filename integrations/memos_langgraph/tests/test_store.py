"""``MemosStore`` against LangGraph's reference ``InMemoryStore``: one script of operations
run on both, sync and async, then TTL, namespace validation and real compiled graphs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedStore, ToolNode
from langgraph.runtime import Runtime
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore
from memos_langgraph import MemosStore
from memos_langgraph import store as store_module

from memos_core import InvalidInputError, MemOS
from memos_core.testing import HashEmbedder

_EMBEDDER = HashEmbedder()


def embed(texts: Sequence[str]) -> list[list[float]]:
    """The reference store embeds with the same vectors MemOS uses."""
    return [[float(x) for x in row] for row in _EMBEDDER.embed(list(texts))]


INDEX: IndexConfig = {"dims": _EMBEDDER.dim, "embed": embed, "fields": ["text"]}


@pytest.fixture
def mem(tmp_path: Path) -> Iterator[MemOS]:
    m = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline")
    yield m
    m.close()


@pytest.fixture
def stores(mem: MemOS) -> tuple[BaseStore, MemosStore]:
    return InMemoryStore(index=INDEX), MemosStore(mem, index=INDEX)


# ------------------------------------------------------------------ one script, two stores

VALUES: dict[str, dict[str, Any]] = {
    "alice": {
        "text": "Alice prefers dark mode and Python",
        "age": 31,
        "score": 9.5,
        "city": "Zürich",
        "tags": ["a", "b"],
        "profile": {"lang": "de", "pets": [{"name": "Mia", "kind": "cat"}]},
        "active": True,
        "note": None,
    },
    "bob": {"text": "Bob likes light mode and Rust", "age": 25, "score": 7, "city": "Lisbon", "tags": ["b"]},
    "carol": {"text": "Carol reads books about gardening", "age": 40, "score": 8.25, "city": "東京"},
    "use": {"text": "an item under the label use, not users", "age": 5},
    "deep": {"text": "deep namespace document about databases", "age": 60, "big": 2**53 + 1},
    "hidden": {"text": "Python tutorial that is not indexed", "age": 33},
    "doc": {"text": "Python programming tutorial for beginners", "age": 18},
    "second": {"text": "second", "age": 31, "score": 1},
    "bob2": {"text": "Bob now likes Go", "age": 26, "score": 7},
    "titled": {"text": "zzz", "title": "Kotlin"},
}

# (label, operation, args): what each step returns is compared between the two stores.
SCRIPT: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = [
    ("put alice", "put", (("users", "alice", "prefs"), "p", VALUES["alice"]), {}),
    ("put bob", "put", (("users", "bob", "prefs"), "p", VALUES["bob"]), {}),
    ("put carol", "put", (("users", "carol", "prefs"), "p", VALUES["carol"]), {}),
    ("put use", "put", (("use", "x"), "k", VALUES["use"]), {}),
    ("put deep", "put", (("docs", "a", "b", "c"), "d1", VALUES["deep"]), {}),
    ("put hidden", "put", (("docs", "a"), "h", VALUES["hidden"]), {"index": False}),
    ("put doc", "put", (("docs", "a"), "t", VALUES["doc"]), {}),
    (
        "put second key",
        "put",
        (("users", "alice", "prefs"), "q", {"text": "second", "age": 31, "score": 1}),
        {},
    ),
    ("get alice", "get", (("users", "alice", "prefs"), "p"), {}),
    ("get unicode", "get", (("users", "carol", "prefs"), "p"), {}),
    ("get big int", "get", (("docs", "a", "b", "c"), "d1"), {}),
    ("get missing key", "get", (("users", "alice", "prefs"), "nope"), {}),
    ("list all", "list", (), {}),
    ("list prefix users", "list", (), {"prefix": ("users",)}),
    ("list prefix use", "list", (), {"prefix": ("use",)}),
    ("list suffix prefs", "list", (), {"suffix": ("prefs",)}),
    ("list prefix+suffix", "list", (), {"prefix": ("users",), "suffix": ("prefs",)}),
    ("list wildcard", "list", (), {"prefix": ("users", "*", "prefs")}),
    ("list max_depth 1", "list", (), {"max_depth": 1}),
    ("list max_depth 2", "list", (), {"prefix": ("docs",), "max_depth": 2}),
    ("list limit/offset", "list", (), {"limit": 2, "offset": 1}),
    ("search users", "search", (("users",),), {}),
    ("search use (per label)", "search", (("use",),), {}),
    ("search all", "search", ((),), {"limit": 50}),
    ("search limit/offset", "search", (("users",),), {"limit": 2, "offset": 1}),
    ("filter plain eq", "search", (("users",),), {"filter": {"city": "Lisbon"}}),
    ("filter unicode eq", "search", (("users",),), {"filter": {"city": "東京"}}),
    ("filter $eq", "search", (("users",),), {"filter": {"age": {"$eq": 31}}}),
    ("filter $ne", "search", (("users",),), {"filter": {"city": {"$ne": "Lisbon"}}}),
    ("filter $gt", "search", (("users",),), {"filter": {"age": {"$gt": 25}}}),
    ("filter $gte", "search", (("users",),), {"filter": {"age": {"$gte": 31}}}),
    ("filter $lt", "search", (("users",),), {"filter": {"score": {"$lt": 8.25}}}),
    ("filter $lte", "search", (("users",),), {"filter": {"score": {"$lte": 8.25}}}),
    ("filter range", "search", (("users",),), {"filter": {"age": {"$gt": 20, "$lt": 35}}}),
    ("filter two keys", "search", (("users",),), {"filter": {"age": 31, "city": "Zürich"}}),
    ("filter nested", "search", (("users",),), {"filter": {"profile": {"lang": "de"}}}),
    ("filter list", "search", (("users",),), {"filter": {"tags": ["a", "b"]}}),
    ("filter bool", "search", (("users",),), {"filter": {"active": True}}),
    ("filter none", "search", ((),), {"filter": {"age": {"$gte": 33}}}),
    ("filter + limit", "search", ((),), {"filter": {"age": {"$gte": 18}}, "limit": 2, "offset": 1}),
    ("filter non-indexed", "search", (("docs",),), {"filter": {"age": 33}}),
    (
        "overwrite bob",
        "put",
        (("users", "bob", "prefs"), "p", {"text": "Bob now likes Go", "age": 26, "score": 7}),
        {},
    ),
    ("get bob", "get", (("users", "bob", "prefs"), "p"), {}),
    ("order after overwrite", "search", (("users",),), {}),
    ("delete second key", "delete", (("users", "alice", "prefs"), "q"), {}),
    ("get deleted", "get", (("users", "alice", "prefs"), "q"), {}),
    ("put it back", "put", (("users", "alice", "prefs"), "q", {"text": "back", "age": 1, "score": 2}), {}),
    ("order after delete+put", "search", (("users",),), {}),
    ("delete missing", "delete", (("users", "alice", "prefs"), "never"), {}),
    ("query top hit", "query", (("docs",), "Python programming tutorial"), {}),
    ("query users", "query", (("users",), "Carol gardening books"), {}),
    ("query with filter", "query", (("users",), "likes Go"), {"filter": {"age": {"$lt": 30}}}),
    ("query fills unindexed", "query", (("docs",), "databases"), {"limit": 10}),
    ("query prefix per label", "query", (("use",), "item label"), {}),
    (
        "query index=[fields]",
        "put",
        (("docs", "f"), "x", {"text": "zzz", "title": "Kotlin"}),
        {"index": ["title"]},
    ),
    ("query by other field", "query", (("docs", "f"), "Kotlin"), {}),
]


def _norm(result: Any) -> Any:
    if isinstance(result, Item):
        return (tuple(result.namespace), result.key, result.value)
    if isinstance(result, list) and result and isinstance(result[0], Item):
        return [_norm(r) for r in result]
    return result


def _query_view(hits: list[Any]) -> dict[str, Any]:
    """Semantic results: scores differ between stores, so compare the top hit, the set, and
    which hits are unscored (not indexed) and that those come last."""
    scored = [h for h in hits if h.score is not None]
    assert hits[: len(scored)] == scored, "unscored items must follow the scored ones"
    return {
        "top": _norm(hits[0]) if hits else None,
        "set": sorted((tuple(h.namespace), h.key) for h in hits),
        "unscored": sorted((tuple(h.namespace), h.key) for h in hits if h.score is None),
    }


def _sync_step(store: BaseStore, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if op == "put":
        return store.put(*args, **kwargs)
    if op == "get":
        return _norm(store.get(*args, **kwargs))
    if op == "delete":
        return store.delete(*args, **kwargs)
    if op == "list":
        return store.list_namespaces(*args, **kwargs)
    if op == "search":
        return _norm(store.search(*args, **kwargs))
    namespace, query = args
    return _query_view(store.search(namespace, query=query, **kwargs))


async def _async_step(store: BaseStore, op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if op == "put":
        return await store.aput(*args, **kwargs)
    if op == "get":
        return _norm(await store.aget(*args, **kwargs))
    if op == "delete":
        return await store.adelete(*args, **kwargs)
    if op == "list":
        return await store.alist_namespaces(*args, **kwargs)
    if op == "search":
        return _norm(await store.asearch(*args, **kwargs))
    namespace, query = args
    return _query_view(await store.asearch(namespace, query=query, **kwargs))


def _run_script(store: BaseStore, mode: str) -> list[tuple[str, Any]]:
    if mode == "sync":
        return [(label, _sync_step(store, op, a, k)) for label, op, a, k in SCRIPT]

    async def go() -> list[tuple[str, Any]]:
        return [(label, await _async_step(store, op, a, k)) for label, op, a, k in SCRIPT]

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_same_results_as_in_memory_store(stores: tuple[BaseStore, MemosStore], mode: str) -> None:
    """Every step of SCRIPT gives what InMemoryStore gives. On a failure the assertion names
    the step: look at the namespace coding (prefix per label), the filter evaluation, the
    non-query order (namespace of first insertion, then key of first insertion) or, for a
    `query` step, MemOS hybrid ranking."""
    reference, memos = stores
    expected = _run_script(reference, mode)
    got = _run_script(memos, mode)
    for (label, want), (_, have) in zip(expected, got, strict=True):
        assert have == want, label


def test_values_round_trip_exactly(mem: MemOS) -> None:
    """Nested dicts, lists, ints (beyond 2**53), floats, bools, None and Unicode keys/values
    come back equal, with the same types."""
    store = MemosStore(mem)
    value = {
        "i": 1,
        "f": 1.0,
        "neg": -0.5,
        "huge": 2**63 + 7,
        "s": "héllo 世界 🎉",
        "ключ": {"nested": [1, [2, [3, {"x": None}]], {"y": False}]},
        "empty": {},
        "list": [],
        "true": True,
    }
    store.put(("t",), "k", value)
    got = store.get(("t",), "k")
    assert got is not None and got.value == value
    assert type(got.value["f"]) is float and type(got.value["i"]) is int
    assert got.value["huge"] == 2**63 + 7


def test_batch_reads_see_state_before_writes(stores: tuple[BaseStore, MemosStore]) -> None:
    """In one batch, reads run before writes and the last put of a key wins (InMemoryStore)."""
    ops = [
        PutOp(("b",), "k", {"v": 1}),
        GetOp(("b",), "k"),
        PutOp(("b",), "k", {"v": 2}),
        SearchOp(("b",)),
    ]
    results = [[_norm(r) for r in s.batch(ops)] for s in stores]
    assert results[0] == results[1] == [None, None, None, []]
    # InMemoryStore's GetOp creates an empty namespace that list_namespaces then shows.
    assert stores[1].batch([ListNamespacesOp(), PutOp(("c",), "k", {"v": 1})])[0] == [("b",)]
    assert [_norm(s.get(("b",), "k")) for s in stores] == [(("b",), "k", {"v": 2})] * 2


def test_created_at_kept_and_updated_at_moves_on_overwrite(mem: MemOS) -> None:
    """Like PostgresStore (InMemoryStore resets created_at on overwrite)."""
    store = MemosStore(mem)
    store.put(("t",), "k", {"v": 1})
    first = store.get(("t",), "k")
    store.put(("t",), "k", {"v": 2})
    second = store.get(("t",), "k")
    assert first is not None and second is not None
    assert second.created_at == first.created_at and second.updated_at > first.updated_at
    assert len(mem.list_memories("langgraph", filter={"memory_type": "langgraph_store"}).data.items) == 1


# ------------------------------------------------------------------ namespaces

BAD_CALLS: list[tuple[str, Any]] = [
    ("put empty", lambda s: s.put((), "k", {"v": 1})),
    ("put langgraph root", lambda s: s.put(("langgraph", "x"), "k", {"v": 1})),
    ("put period", lambda s: s.put(("a.b",), "k", {"v": 1})),
    ("put empty label", lambda s: s.put(("a", ""), "k", {"v": 1})),
    ("put non-str label", lambda s: s.put(("a", 1), "k", {"v": 1})),
    ("put NUL", lambda s: s.put(("a\x00",), "k", {"v": 1})),
    ("delete period", lambda s: s.delete(("a.b",), "k")),
    ("list prefix period", lambda s: s.list_namespaces(prefix=("a.b",))),
    ("list suffix empty", lambda s: s.list_namespaces(suffix=("",))),
    ("delete langgraph root is fine", lambda s: s.delete(("langgraph",), "k")),
]


@pytest.mark.parametrize(("label", "call"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_namespace_errors_match(stores: tuple[BaseStore, MemosStore], label: str, call: Any) -> None:
    """The same calls fail with the same error type as InMemoryStore (or both succeed)."""
    outcomes = []
    for store in stores:
        try:
            call(store)
            outcomes.append(None)
        except Exception as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1], label


def test_ops_passed_to_batch_are_validated(mem: MemOS) -> None:
    """A period in a label could address another namespace once joined: batch refuses it."""
    store = MemosStore(mem)
    store.put(("foo", "bar"), "k", {"v": 1})
    for op in (
        GetOp(("foo.bar",), "k"),
        SearchOp(("foo.bar",)),
        PutOp(("foo.bar",), "k", {"v": 2}),
        PutOp((), "k", {"v": 2}),
        ListNamespacesOp(match_conditions=(MatchCondition("suffix", ("a.b",)),)),
    ):
        with pytest.raises(InvalidNamespaceError):
            store.batch([op])


def test_unknown_filter_operator_is_a_value_error(stores: tuple[BaseStore, MemosStore]) -> None:
    for store in stores:
        store.put(("f",), "k", {"v": 1})
        with pytest.raises(ValueError, match="Unsupported operator"):
            store.search(("f",), filter={"v": {"$in": [1]}})


# ------------------------------------------------------------------ TTL


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(store_module, "_now", c)
    return c


def test_ttl_expiry_and_sweep(mem: MemOS, clock: Clock) -> None:
    """An item with ttl stays visible (PostgresStore's default) until sweep_ttl deletes it;
    items without ttl are never swept."""
    store = MemosStore(mem)
    assert store.supports_ttl and not InMemoryStore().supports_ttl
    store.put(("t",), "short", {"v": 1}, ttl=1)
    store.put(("t",), "long", {"v": 2}, ttl=10)
    store.put(("t",), "forever", {"v": 3})
    clock.advance(2)
    assert store.get(("t",), "short", refresh_ttl=False) is not None
    assert store.sweep_ttl() == 1
    assert store.get(("t",), "short") is None
    assert [i.key for i in store.search(("t",))] == ["long", "forever"]
    clock.advance(100)
    assert asyncio.run(store.asweep_ttl()) == 1
    assert [i.key for i in store.search(("t",))] == ["forever"]
    assert store.list_namespaces() == [("t",)]


def test_omit_expired_hides_before_the_sweep(mem: MemOS, clock: Clock) -> None:
    store = MemosStore(mem, ttl={"omit_expired": True, "default_ttl": 1})
    store.put(("t",), "a", {"v": 1})
    store.put(("t",), "b", {"v": 2}, ttl=None)
    clock.advance(2)
    assert store.get(("t",), "a") is None
    assert [i.key for i in store.search(("t",))] == ["b"]
    store.delete(("t",), "b")
    assert store.list_namespaces() == []


def test_refresh_ttl_on_get_and_search(mem: MemOS, clock: Clock) -> None:
    """Reads push the expiry ttl minutes ahead unless refresh_ttl=False (or the store's
    refresh_on_read is off)."""
    store = MemosStore(mem, ttl={"omit_expired": True})
    store.put(("t",), "got", {"v": 1}, ttl=1)
    store.put(("t",), "searched", {"v": 2}, ttl=1)
    store.put(("t",), "not refreshed", {"v": 3}, ttl=1)
    clock.advance(0.75)
    assert store.get(("t",), "got") is not None
    assert len(store.search(("t",), filter={"v": 2})) == 1
    assert store.get(("t",), "not refreshed", refresh_ttl=False) is not None
    assert len(store.search(("t",), filter={"v": 3}, refresh_ttl=False)) == 1
    clock.advance(0.5)
    assert store.get(("t",), "got", refresh_ttl=False) is not None
    assert store.get(("t",), "searched", refresh_ttl=False) is not None
    assert store.get(("t",), "not refreshed") is None
    assert store.sweep_ttl() == 1

    lazy = MemosStore(mem, user_id="lazy", ttl={"refresh_on_read": False, "omit_expired": True})
    lazy.put(("t",), "k", {"v": 1}, ttl=1)
    clock.advance(0.75)
    assert lazy.get(("t",), "k") is not None
    clock.advance(0.5)
    assert lazy.get(("t",), "k") is None


def test_ttl_sweeper_thread(mem: MemOS, clock: Clock) -> None:
    store = MemosStore(mem)
    store.put(("t",), "k", {"v": 1}, ttl=1)
    clock.advance(5)
    done = store.start_ttl_sweeper(sweep_interval_minutes=0.001)
    with pytest.raises(InvalidInputError):
        store.start_ttl_sweeper()
    for _ in range(500):
        if store.get(("t",), "k", refresh_ttl=False) is None:
            break
        time.sleep(0.01)
    assert store.get(("t",), "k", refresh_ttl=False) is None
    assert store.stop_ttl_sweeper(timeout=5)
    assert done.result(timeout=5) is None


# ------------------------------------------------------------------ MemOS side


def test_persistent_and_scoped_per_user(tmp_path: Path) -> None:
    """Items survive a restart; stores of two user ids do not see each other."""
    with MemOS(tmp_path / "p", embedder=HashEmbedder(), scheduler="inline") as mem:
        MemosStore(mem, user_id="a").put(("ns",), "k", {"v": "a"})
        MemosStore(mem, user_id="b").put(("ns",), "k", {"v": "b"})
    with MemOS(tmp_path / "p", embedder=HashEmbedder(), scheduler="inline") as mem:
        a = MemosStore(mem, user_id="a", index=INDEX)
        got = a.get(("ns",), "k")
        assert got is not None and got.value == {"v": "a"}
        assert [i.value for i in a.search(("ns",))] == [{"v": "a"}]
        assert MemosStore(mem, user_id="c").list_namespaces() == []


def test_items_are_memories_searchable_in_memos(mem: MemOS) -> None:
    store = MemosStore(mem, index=INDEX)
    store.put(("docs",), "k", {"text": "The Eiffel tower is in Paris", "n": 1})
    hits = mem.search_memory("Eiffel tower", user_id="langgraph").data.memory_detail_list
    assert hits[0].memory == "The Eiffel tower is in Paris"
    assert hits[0].memory_type == "langgraph_store" and hits[0].info["value"]["n"] == 1


def test_sync_call_inside_event_loop_names_the_async_method(mem: MemOS) -> None:
    store = MemosStore(mem)

    async def go() -> None:
        with pytest.raises(InvalidInputError, match="aget"):
            store.get(("t",), "k")
        await store.aput(("t",), "k", {"v": 1})
        assert (await store.aget(("t",), "k")) is not None

    asyncio.run(go())


# ------------------------------------------------------------------ a real graph


class State(MessagesState):
    found: list[str]


@tool
def save_note(note: str, store: Annotated[BaseStore, InjectedStore()]) -> str:
    """Save a note for later."""
    store.put(("notes",), f"n{len(store.search(('notes',)))}", {"text": note})
    return "saved"


@tool
def count_notes(store: Annotated[BaseStore, InjectedStore()]) -> str:
    """Count the saved notes."""
    return str(len(store.search(("notes",))))


def _graph(store: BaseStore) -> Any:
    def write(state: State, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.store is not None
        runtime.store.put(("notes",), "seed", {"text": "seeded by a node"})
        calls = [
            {"name": "save_note", "args": {"note": "buy milk"}, "id": "c1", "type": "tool_call"},
            {"name": "count_notes", "args": {}, "id": "c2", "type": "tool_call"},
        ]
        return {"messages": [AIMessage(content="", tool_calls=calls)]}

    def read(state: State, *, store: BaseStore) -> dict[str, Any]:
        hits = store.search(("notes",), query="milk")
        return {"found": [h.value["text"] for h in hits]}

    g = StateGraph(State)
    g.add_node("write", write)
    g.add_node("tools", ToolNode([save_note, count_notes]))
    g.add_node("read", read)
    g.add_edge(START, "write")
    g.add_edge("write", "tools")
    g.add_edge("tools", "read")
    g.add_edge("read", END)
    return g.compile(store=store)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_compiled_graph_reads_and_writes_the_store(mem: MemOS, mode: str) -> None:
    """A node (runtime.store and the `store` parameter) and InjectedStore tools in a
    ToolNode all reach the MemosStore the graph was compiled with."""
    store = MemosStore(mem, index=INDEX)
    app = _graph(store)
    if mode == "sync":
        out = app.invoke({"messages": [], "found": []})
    else:
        out = asyncio.run(app.ainvoke({"messages": [], "found": []}))
    tools = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tools] == ["saved", "1"] or [m.content for m in tools] == ["saved", "2"]
    assert out["found"][0] == "buy milk"
    assert set(out["found"]) == {"buy milk", "seeded by a node"}
    saved = store.get(("notes",), "n1")
    assert saved is not None and saved.value == {"text": "buy milk"}


def test_order_comparison_on_a_missing_value_is_false(stores: tuple[BaseStore, MemosStore]) -> None:
    """A documented difference: InMemoryStore raises TypeError on ``$gt`` against a missing
    key; MemosStore, like PostgresStore's JSONB comparison, simply does not match."""
    reference, memos = stores
    for store in stores:
        store.put(("m",), "with", {"n": 2})
        store.put(("m",), "without", {"other": 1})
    with pytest.raises(TypeError):
        reference.search(("m",), filter={"n": {"$gt": 1}})
    assert [i.key for i in memos.search(("m",), filter={"n": {"$gt": 1}})] == ["with"]


def test_concurrent_puts_to_one_key_never_lose_the_item(tmp_path: Path) -> None:
    """Four threads put the same key at once, twenty times: the item is always there, with
    one of the written values (interleaved puts used to erase each other's memories)."""
    import threading

    for trial in range(20):
        mem = MemOS(tmp_path / f"d{trial}", embedder=HashEmbedder(), scheduler="inline")
        store = MemosStore(mem)
        threads = [threading.Thread(target=store.put, args=(("a",), "k", {"v": i})) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = store.get(("a",), "k")
        assert got is not None and got.value["v"] in range(4)
        mem.close()
