"""WeaviateStore on the in-process stand-in: the whole conformance suite, tenant isolation
(one tenant per cube), and the filter compiler checked operator by operator against the
reference evaluator (:func:`memos_core.filters.evaluate`)."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

pytest.importorskip("weaviate")

import weaviate
from weaviate.classes.query import Filter

import tests.weaviate_standin as standin_package
from memos_core import FilterError, InvalidInputError, MemoryStore, StoreError
from memos_core.filters import evaluate, parse_filter
from memos_core.ports import PutItems
from memos_core.stores.weaviate import (
    WeaviateStore,
    compile_filter,
    connection_params,
    info_pairs,
    search_terms,
    tenant_name,
)
from tests.weaviate_standin import WeaviateStandIn

from .store_conformance import EMB, T0, MemoryStoreConformance, item, put

UUID0 = "00000000-0000-0000-0000-000000000000"
weaviate_standin = standin_package.weaviate_standin  # the shared fixture, made visible here


class TestWeaviateConformance(MemoryStoreConformance):
    @pytest.fixture
    def make_store(self, weaviate_standin: WeaviateStandIn) -> Iterator[Callable[[], MemoryStore]]:
        opened: list[WeaviateStore] = []

        def make() -> MemoryStore:
            store = WeaviateStore(client=weaviate_standin.connect(), owns_client=True)
            store.setup()
            opened.append(store)
            return store

        yield make
        for s in opened:
            s.close()


@pytest.fixture
def store(weaviate_standin: WeaviateStandIn) -> Iterator[WeaviateStore]:
    s = WeaviateStore(client=weaviate_standin.connect(), owns_client=True)
    s.setup()
    s.setup()  # idempotent
    yield s
    s.close()


# ----------------------------------------------------------------------------- tenants


def test_cube_a_never_sees_cube_b(store: WeaviateStore) -> None:
    """Search, filters, listing and deletes of cube A stay inside A's tenant, even when B holds
    the same text, tags and vectors."""
    a, b = put(
        store,
        item("shared secret about kites", cube="cube-a", tags=["t"], info={"scene": "x"}),
        item("shared secret about kites", cube="cube-b", tags=["t"], info={"scene": "x"}),
    )
    q = EMB.embed(["shared secret about kites"])[0]
    flt = parse_filter({"and": [{"tags": "t"}, {"scene": "x"}]})
    assert [h.id for h in store.search_text(["cube-a"], "kites secret", flt)] == [a.id]
    assert [h.id for h in store.search_vector(["cube-a"], q, flt)] == [a.id]
    assert [i.id for i in store.list_items(["cube-a"], flt)[0]] == [a.id]
    assert store.delete(["cube-a"], ids=[b.id], hard=True) == 0  # B's id through A's scope
    assert store.delete(["cube-a"], where=flt) == 1
    got_b = store.get([b.id])[0]
    assert got_b is not None and got_b.status == "activated"
    assert store.list_items(["cube-b"], flt)[1] == 1
    assert {h.id for h in store.search_text(["cube-a", "cube-b"], "kites")} == {b.id}


def test_a_cube_without_a_tenant_reads_as_empty(
    store: WeaviateStore, weaviate_standin: WeaviateStandIn
) -> None:
    """Reads of an unknown cube return nothing and create no tenant; the first write does."""
    q = EMB.embed(["x"])[0]
    assert store.list_items(["nobody"]) == ([], 0)
    assert store.search_text(["nobody"], "x") == []
    assert store.search_vector(["nobody"], q) == []
    assert store.delete(["nobody"], where=parse_filter({"tags": "t"})) == 0
    client = weaviate_standin.connect()
    try:
        tenants = client.collections.use("MemosItem").tenants.get()
        assert "nobody" not in tenants
        put(store, item("hello", cube="some cube/with:odd chars"))
        assert tenant_name("some cube/with:odd chars") in client.collections.use("MemosItem").tenants.get()
    finally:
        client.close()
    assert store.list_items(["some cube/with:odd chars"])[1] == 1


def test_a_failed_object_raises_naming_it(store: WeaviateStore) -> None:
    """A per-object batch error is never dropped: StoreError names the item."""
    ok, bad = item("fine"), item("wrong size")
    with pytest.raises(StoreError, match=bad.id):
        store.batch(
            [PutItems([ok, bad], [EMB.embed(["fine"])[0], np.ones(7, dtype=np.float32)], replace_space=True)]
        )


def test_records_if_absent_and_odd_keys(store: WeaviateStore) -> None:
    from memos_core import ConflictError
    from memos_core.ports import PutRecords

    store.batch([PutRecords("n", {"a*b?": {"v": 1}, "a-c": {"v": 2}}, if_absent=True)])
    with pytest.raises(ConflictError):
        store.batch([PutRecords("n", {"a*b?": {"v": 3}}, if_absent=True)])
    assert store.list_records("n", "a*") == [("a*b?", {"v": 1})]
    assert [k for k, _ in store.list_records("n", "a")] == ["a*b?", "a-c"]


def test_search_terms_fold_plurals_and_segment_chinese() -> None:
    assert search_terms("The cats and ponies", query=True) == ["cat", "pony"]
    assert "客户" in search_terms("给客户做汇报")


# ----------------------------------------------------------------------------- filters

ITEMS = [
    item(
        "red apple pie",
        user_id="u1",
        key="language",
        memory_type="preference",
        tags=["study", "work"],
        info={"scene": "chat", "n": 3, "flag": True, "nested": {"x": [1, 2]}, "custom_status": "待准备"},
        version=2,
        confidence=0.5,
        event_time=T0 - timedelta(days=1),
    ),
    item("green apple", user_id="u2", key="lang", tags=["study"], info={"scene": "work", "n": 4.5}),
    item(
        "banana bread",
        tags=[],
        info={"n": "3", "words": ["chat", "x"]},
        created_at=T0 + timedelta(minutes=1),
        version=3,
    ),
    item("cherry", user_id="u1", memory_type="working", info={"scene": None}, confidence=1.0),
]

CASES: list[dict[str, Any]] = [
    {"user_id": "u1"},
    {"user_id": {"ne": "u1"}},
    {"user_id": {"in": ["u1", "u2"]}},
    {"user_id": {"nin": ["u1"]}},
    {"user_id": {"exists": True}},
    {"user_id": {"exists": False}},
    {"user_id": None},
    {"user_id": {"ne": None}},
    {"memory": {"contains": "apple"}},
    {"memory": {"like": "%apple%"}},
    {"key": {"like": "lang_age"}},
    {"key": {"gt": "lang"}},
    {"key": {"gte": "lang"}},
    {"memory_type": {"lt": "preference"}},
    {"memory_type": {"lte": "preference"}},
    {"version": {"gt": 1}},
    {"version": {"gte": 1.5}},
    {"version": {"lt": 2.5}},
    {"version": {"lte": 2}},
    {"version": 1.5},
    {"version": {"ne": 1.5}},
    {"version": {"in": [1, 3, 2.5]}},
    {"version": {"nin": [2]}},
    {"confidence": {"gte": 0.75}},
    {"confidence": 1},
    {"created_at": {"gt": "2024-05-01T12:00:30Z"}},
    {"created_at": {"in": ["2024-05-01T12:00:00Z"]}},
    {"created_at": "2024-05-01T12:00:00+00:00"},
    {"event_time": {"exists": True}},
    {"event_time": {"lt": "2024-05-01"}},
    {"event_time": None},
    {"tags": "study"},
    {"tags": {"contains": "work"}},
    {"tags": {"in": ["nope", "work"]}},
    {"tags": {"nin": ["work"]}},
    {"tags": {"ne": "study"}},
    {"tags": {"like": "wor%"}},
    {"tags": {"exists": True}},
    {"tags": {"exists": False}},
    {"scene": "chat"},
    {"scene": {"ne": "chat"}},
    {"scene": {"in": ["chat", "work"]}},
    {"scene": {"nin": ["chat"]}},
    {"scene": {"exists": True}},
    {"scene": {"exists": False}},
    {"scene": None},
    {"scene": {"contains": "ha"}},
    {"scene": {"like": "c%t"}},
    {"n": 3},
    {"n": 3.0},
    {"n": "3"},
    {"n": {"in": [4.5, 7]}},
    {"flag": True},
    {"flag": 1},
    {"nested.x": {"contains": 1}},
    {"nested": {"exists": True}},
    {"words": {"contains": "chat"}},
    {"info.custom_status": "待准备"},
    {"and": [{"tags": "study"}, {"not": {"user_id": "u2"}}]},
    {"or": [{"scene": "work"}, {"version": {"gte": 3}}]},
    {"not": {"or": [{"tags": {"exists": True}}, {"n": 4.5}]}},
]


@pytest.fixture
def loaded(store: WeaviateStore) -> WeaviateStore:
    put(store, *ITEMS)
    return store


@pytest.mark.parametrize("spec", CASES, ids=[str(c) for c in CASES])
def test_compiled_filter_selects_what_the_evaluator_selects(
    loaded: WeaviateStore, spec: dict[str, Any]
) -> None:
    """Every operator on every field kind: the stand-in, given the compiled filter, selects
    exactly the items the reference evaluator accepts."""
    node = parse_filter(spec)
    want = {i.memory for i in ITEMS if evaluate(node, i)}
    got, total = loaded.list_items(["cube-a"], node)
    assert {i.memory for i in got} == want and total == len(want)


def test_id_filter(loaded: WeaviateStore) -> None:
    got, _ = loaded.list_items(["cube-a"], parse_filter({"id": {"in": [ITEMS[1].id, "not-a-uuid"]}}))
    assert [i.id for i in got] == [ITEMS[1].id]


@pytest.mark.parametrize(
    "spec",
    [
        {"n": {"gt": 1}},
        {"scene": {"lte": "z"}},
        {"tags": {"like": "a*"}},
        {"memory": {"contains": "what?"}},
        {"scene": {"like": "x?%"}},
    ],
)
def test_what_weaviate_cannot_express_is_a_filter_error(spec: dict[str, Any]) -> None:
    """Order tests on info keys and literal '*'/'?' in like patterns fail at compile time."""
    with pytest.raises(FilterError):
        compile_filter(parse_filter(spec))


def test_compile_is_pure_and_builds_weaviate_filters() -> None:
    assert compile_filter(None) is None
    flt = compile_filter(parse_filter({"and": [{"tags": "a"}, {"version": {"gte": 1.5}}]}))
    assert type(flt) is type(Filter.all_of([Filter.by_property("a").equal(1), Filter.by_id().equal(UUID0)]))
    tags, version = flt.filters
    assert (tags.target, tags.value) == ("tags", ["a"])
    assert (version.target, version.operator.name, version.value) == ("version", "GREATER_THAN_EQUAL", 2)
    assert info_pairs({"a": {"b": [1, "x", None]}, "c": 2.0, "d": None}) == [
        "a",
        "a.b",
        "a.b[]=1",
        'a.b[]="x"',
        "c",
        "c=2",
    ]


def test_from_url_connects_and_close_releases(weaviate_standin: WeaviateStandIn) -> None:
    url = f"http://{weaviate_standin.host}:{weaviate_standin.http_port}"
    s = WeaviateStore.from_url(url, grpc_port=weaviate_standin.grpc_port, skip_init_checks=True)
    s.setup()
    (a,) = put(s, item("over the url"))
    assert s.get([a.id])[0] == a
    s.close()


# ----------------------------------------------------------------------------- hybrid


def test_native_hybrid_search_is_relative_score_fusion(store: WeaviateStore) -> None:
    """query.hybrid with relativeScoreFusion, checkable by hand. Each leg is min-max normalised
    over its own results, weighted (vector: alpha, BM25: 1 - alpha) and summed.

    BM25 "apple": "apple apple" (tf 2) > "apple pie" (tf 1) -> normalised 1, 0.
    vector [1, 0]: cosine 1 ("apple pie"), 1/√2 ("banana"), 0 ("apple apple") -> the same.
    alpha 0.6: "apple pie" 0.6, "banana" 0.6/√2 = 0.4243, "apple apple" 0.4.
    """
    pie, twice, banana = item("apple pie"), item("apple apple"), item("banana", tags=["fruit"])
    gone = item("apple apple apple")
    store.put(
        [pie, twice, banana, gone],
        [np.array(v, dtype=np.float32) for v in ([1, 0], [0, 1], [1, 1], [1, 0])],
    )
    store.delete(["cube-a"], ids=[gone.id])  # soft-deleted items are out of every search
    q = np.array([1.0, 0.0], dtype=np.float32)
    hits = store.hybrid_search(["cube-a"], "apple", q, alpha=0.6)
    assert [h.id for h in hits] == [pie.id, banana.id, twice.id]
    assert [h.score for h in hits] == pytest.approx([0.6, 0.6 / math.sqrt(2), 0.4], rel=1e-5)
    assert [h.id for h in store.hybrid_search(["cube-a"], "apples", q, alpha=0.0)] == [twice.id, pie.id]
    assert [h.id for h in store.hybrid_search(["cube-a"], "apple", q, alpha=1.0, limit=2)] == [
        pie.id,
        banana.id,
    ]
    flt = parse_filter({"tags": "fruit"})
    assert [h.id for h in store.hybrid_search(["cube-a"], "apple", q, flt, alpha=0.6)] == [banana.id]
    assert store.hybrid_search(["nobody"], "apple", q) == []
    with pytest.raises(InvalidInputError):
        store.hybrid_search(["cube-a"], "apple", q, alpha=1.5)
    with pytest.raises(InvalidInputError):  # a query vector of another dimension
        store.hybrid_search(["cube-a"], "apple", np.ones(3, dtype=np.float32))


# ----------------------------------------------------------------------------- a real server

WEAVIATE_URL = os.environ.get("WEAVIATE_URL")


@pytest.mark.skipif(not WEAVIATE_URL, reason="set WEAVIATE_URL (e.g. http://localhost:8080) to run")
class TestWeaviateConformanceRealServer(MemoryStoreConformance):
    """The same conformance suite against a real Weaviate at ``WEAVIATE_URL`` (gRPC port from
    ``WEAVIATE_GRPC_PORT``, default 50051; API key from ``WEAVIATE_API_KEY``). Each test gets its
    own collections (``MemosTest<hex>`` and its ``Record`` twin), deleted afterwards."""

    @pytest.fixture
    def make_store(self) -> Iterator[Callable[[], MemoryStore]]:
        assert WEAVIATE_URL
        collection = f"MemosTest{uuid.uuid4().hex[:12]}"
        grpc_port = os.environ.get("WEAVIATE_GRPC_PORT")
        params = connection_params(
            WEAVIATE_URL,
            grpc_port=int(grpc_port) if grpc_port else None,
            api_key=os.environ.get("WEAVIATE_API_KEY"),
        )
        opened: list[WeaviateStore] = []

        def make() -> MemoryStore:
            store = WeaviateStore.from_url(
                WEAVIATE_URL,
                grpc_port=int(grpc_port) if grpc_port else None,
                api_key=os.environ.get("WEAVIATE_API_KEY"),
                collection=collection,
            )
            store.setup()
            opened.append(store)
            return store

        yield make
        for s in opened:
            s.close()
        with weaviate.connect_to_custom(**params) as client:
            client.collections.delete([collection, f"{collection}Record"])


# ----------------------------------------------------------------------------- review fixes


def _drive(store: WeaviateStore, plan: Any, stop: Callable[[Any], bool]) -> Any:
    """Run ``plan`` on the store's client until ``stop(call)``; return that (unperformed) call."""
    from memos_core.stores.weaviate import _method

    call = next(plan)
    while not stop(call):
        call = plan.send(_method(store._client, call)(*call.args, **call.kwargs))
    return call


def _finish(store: WeaviateStore, plan: Any, call: Any) -> None:
    from memos_core.stores.weaviate import _method

    try:
        while True:
            call = plan.send(_method(store._client, call)(*call.args, **call.kwargs))
    except StopIteration:
        pass


def test_a_touch_never_undoes_a_concurrent_update(store: WeaviateStore) -> None:
    """A touch updates the access counters in place: an update that lands between the touch's
    read and its write survives, and the revision never goes backwards."""
    from memos_core.ports import TouchItems

    (first,) = put(store, item("original"))
    plan = store.plan(TouchItems([first.id], T0 + timedelta(days=1)))
    pending = _drive(store, plan, lambda c: c.path == "data.update")
    old = store.get([first.id])[0]
    assert old is not None
    store.batch([PutItems([old.evolve(memory="UPDATED")], None, [old.revision])])
    _finish(store, plan, pending)
    got = store.get([first.id])[0]
    assert got is not None
    assert (got.memory, got.revision, got.access_count) == ("UPDATED", 2, 1)
    assert got.last_accessed_at == T0 + timedelta(days=1)
    store.touch([first.id], T0 + timedelta(days=2))
    again = store.get([first.id])[0]
    assert again is not None and (again.revision, again.access_count) == (2, 2)
    assert again.last_accessed_at == T0 + timedelta(days=2)


def test_a_soft_delete_keeps_an_update_made_since_its_match(store: WeaviateStore) -> None:
    """Soft delete re-reads right before writing: it builds the deleted row from what is stored
    now, not from the copy it matched."""
    from memos_core.ports import DeleteItems

    (first,) = put(store, item("original"))
    plan = store.plan(DeleteItems(["cube-a"], [first.id]))
    # the match is done; stop before the re-read
    calls: list[str] = []

    def stop(call: Any) -> bool:
        calls.append(call.path)
        return calls.count("query.fetch_objects") == 2

    pending = _drive(store, plan, stop)
    old = store.get([first.id])[0]
    assert old is not None
    store.batch([PutItems([old.evolve(memory="UPDATED")], None, [old.revision])])
    _finish(store, plan, pending)
    with_deleted, _ = store.list_items(["cube-a"])
    assert [(i.memory, i.status, i.revision) for i in with_deleted] == [("UPDATED", "deleted", 3)]


def test_only_canonical_uuid_ids_are_their_own_object_uuid(store: WeaviateStore) -> None:
    from memos_core.stores.weaviate import object_uuid

    u = uuid.uuid4()
    ids = [str(u), u.hex, str(u).upper()]
    assert object_uuid(str(u)) == str(u)
    assert len({object_uuid(i) for i in ids}) == 3
    for n, i in enumerate(ids):
        store.put([item(f"m{n}", id=i)])
    assert [g and g.memory for g in store.get(ids)] == ["m0", "m1", "m2"]
    assert store.list_items(["cube-a"])[1] == 3


@pytest.mark.parametrize(
    "spec",
    [
        {"info.a.b": 1},
        {"info.k": 1},
        {"info.k": {"exists": True}},
        {"info.x": {"eq": 5}},
        {"info.x": {"contains": "1"}},
        {"info.s": {"like": "v%"}},
    ],
)
def test_info_keys_with_separators_do_not_collide(store: WeaviateStore, spec: dict[str, Any]) -> None:
    items = [
        item("nested", info={"a": {"b": 1}}),
        item("dotted", info={"a.b": 1}),
        item("eqkey", info={"k=1": "x"}),
        item("boolv", info={"k": True}),
        item("brackets", info={"x[]": 5, "x": ["1"]}),
        item("backslash", info={"s\\": "v", "s": "w"}),
    ]
    put(store, *items)
    node = parse_filter(spec)
    got, _ = store.list_items(["cube-a"], node)
    assert {i.memory for i in got} == {i.memory for i in items if evaluate(node, i)}


LIKE_ITEMS = [
    item("Hello World", tags=["Red", "blue"], key="K1", info={"s": "Hello", "u": "naïve ÄB"}),
    item("hello world", info={"s": "hello", "u": "äb"}),
    item("  padded  ", tags=["red"]),
]


@pytest.mark.parametrize(
    "spec",
    [
        {"memory": {"like": "hello%"}},
        {"memory": {"like": "HELLO WORLD"}},
        {"memory": {"contains": "World"}},
        {"tags": {"like": "r%"}},
        {"key": {"like": "k_"}},
        {"info.s": {"like": "HELLO"}},
        {"info.u": {"like": "%äb"}},
        {"info.u": {"like": "%ÄB"}},
        {"memory": {"eq": "  padded  "}},
        {"memory": {"like": "%padded%"}},
    ],
)
def test_like_is_ascii_case_insensitive_as_the_evaluator(store: WeaviateStore, spec: dict[str, Any]) -> None:
    put(store, *LIKE_ITEMS)
    node = parse_filter(spec)
    got, _ = store.list_items(["cube-a"], node)
    assert {i.memory for i in got} == {i.memory for i in LIKE_ITEMS if evaluate(node, i)}


def test_a_stale_index_entry_does_not_block_a_put(store: WeaviateStore) -> None:
    """A hard delete cut short after removing the objects leaves index entries; a later put of
    the id into another cube still succeeds."""
    from memos_core.ports import DeleteItems

    (first,) = put(store, item("one", cube="cube-a"))
    plan = store.plan(DeleteItems(["cube-a"], [first.id], hard=True))
    _drive(store, plan, lambda c: c.path == "data.delete_many" and c.collection.endswith("Record"))
    plan.close()  # the crash: the index entry is left behind
    assert store.get([first.id]) == [None]
    store.put([item("moved", cube="cube-b", id=first.id)])
    got = store.get([first.id])[0]
    assert got is not None and (got.cube_id, got.memory) == ("cube-b", "moved")
    (live,) = put(store, item("two", cube="cube-a"))
    with pytest.raises(InvalidInputError):
        store.put([item("steal", cube="cube-b", id=live.id)])


def test_full_reads_never_page_by_offset(store: WeaviateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deletes, re-embedding and record listings read everything with the ``after`` cursor or
    keyset paging, never past an offset cap (here pages of 5 against a cap of 6)."""
    import memos_core.stores.weaviate as wv
    from memos_core.ports import DeleteItems, ListRecords

    monkeypatch.setattr(wv, "_PAGE", 5)
    client = store._client

    def capped(plan: Any) -> Any:
        try:
            call = next(plan)
            while True:
                kw = call.kwargs
                assert kw.get("offset", 0) + (kw.get("limit") or 0) <= 6 or "offset" not in kw, call
                assert not kw.get("offset"), call
                call = plan.send(wv._method(client, call)(*call.args, **call.kwargs))
        except StopIteration as stop:
            return stop.value

    items = [item(f"m{n}", tags=["odd"] if n % 2 else []) for n in range(23)]
    store.put(items)
    store.put_records("ns", {f"k{n:02d}": {"n": n} for n in range(17)})
    assert [k for k, _ in capped(store.plan(ListRecords("ns", "", 100)))] == [f"k{n:02d}" for n in range(17)]
    assert len(capped(store.plan(ListRecords("ns", "k1", 100)))) == 7
    assert len(capped(store.plan(ListRecords("ns", "", 12)))) == 12
    assert capped(store.plan(DeleteItems(["cube-a"], None, parse_filter({"tags": "odd"}), hard=True))) == 11
    assert capped(store.plan(DeleteItems(["cube-a"], [i.id for i in items]))) == 12
    assert capped(store.plan(DeleteItems(["cube-a"], [i.id for i in items]))) == 12
    left, total = store.list_items(["cube-a"], limit=100)
    assert total == 12 and {i.status for i in left} == {"deleted"}
    assert len(capped(store.plan_embeddings([i.id for i in items]))) == 0
    from memos_core.stores.weaviate import tenant_name

    assert len(capped(store._fetch_where(tenant_name("cube-a"), None))) == 12


def test_replace_space_failing_midway_leaves_the_cube_intact(
    store: WeaviateStore, weaviate_standin: WeaviateStandIn
) -> None:
    """replace_space builds a new tenant generation and switches to it only when complete: a
    failure while copying leaves the cube as it was; a success is seen by another store whose
    tenant cache still names the old generation."""
    from memos_core.stores.weaviate import _method

    other = WeaviateStore(client=weaviate_standin.connect(), owns_client=True)
    try:
        keep = [item(f"keep {n}", cube="r") for n in range(20)]
        store.put(keep, [np.ones(4, np.float32)] * 20)
        assert len(other.list_items(["r"])[0]) == 20  # `other` caches the first generation
        tenants_before = set(store._client.collections.use("MemosItem").tenants.get())
        op = PutItems([item("new", cube="r")], [np.ones(8, np.float32)], replace_space=True)
        plan = store.plan(op)
        call = next(plan)
        with pytest.raises(ConnectionError):
            while True:
                if call.path == "data.insert_many" and call.tenant not in tenants_before:
                    call = plan.throw(ConnectionError("network blip"))
                else:
                    call = plan.send(_method(store._client, call)(*call.args, **call.kwargs))
        assert set(store._client.collections.use("MemosItem").tenants.get()) == tenants_before
        assert store.list_items(["r"], limit=100)[1] == 20
        assert len(store.get_embeddings([i.id for i in keep])) == 20
        assert store.get([keep[0].id])[0] == other.get([keep[0].id])[0] is not None

        store.batch([op])
        assert store.list_items(["r"], limit=100)[1] == 21
        assert set(store.get_embeddings([i.id for i in keep])) == set()
        got, total = other.list_items(["r"], limit=100)  # stale cache: re-reads the pointer
        assert total == 21 and "new" in {i.memory for i in got}
        assert other.search_vector(["r"], np.ones(8, np.float32), limit=1)[0].id == op.items[0].id
        assert len(set(store._client.collections.use("MemosItem").tenants.get())) == len(tenants_before)
    finally:
        other.close()
