"""AsyncWeaviateStore runs the very plans WeaviateStore runs: the same scenario (puts, gets,
listing, text / vector / hybrid search, filters, touches, deletes, records, errors) on both, on
the in-process stand-in through the real sync and async weaviate clients, gives identical
results. Also: the plans are I/O-free, and an unreachable server is a StoreError."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

pytest.importorskip("weaviate")

import weaviate
from weaviate.classes.init import AdditionalConfig, Timeout

import tests.weaviate_standin as standin_package
from memos_core import MemoryItem, NotSupportedError, RuntimeFailure, StoreError
from memos_core.filters import parse_filter
from memos_core.ports import (
    DeleteItems,
    GetItems,
    GetRecords,
    ListItems,
    ListRecords,
    PutItems,
    PutRecords,
    ScoredId,
    TextSearch,
    TouchItems,
    VectorSearch,
)
from memos_core.stores.weaviate import (
    AsyncWeaviateStore,
    Call,
    HybridSearch,
    WeaviatePlanner,
    WeaviateStore,
)
from tests.weaviate_standin import WeaviateStandIn

from .store_conformance import EMB, T0, item

weaviate_standin = standin_package.weaviate_standin  # the shared fixture, made visible here

ITEMS = [
    item("red apple pie", user_id="u1", tags=["food", "sweet"], info={"scene": "chat", "n": 3}),
    item("green apple", user_id="u2", tags=["food"], info={"scene": "work"}),
    item("banana bread recipe", tags=["baking"], created_at=T0 + timedelta(minutes=1)),
    item("cherries in the garden", user_id="u1", cube="cube-b", info={"scene": "chat"}),
    item("plain note without vector", user_id="u3"),
]
VECS: list[np.ndarray | None] = [*EMB.embed([i.memory for i in ITEMS[:4]]), None]
Q = EMB.embed(["apple"])[0]
A, B, C, D, E = (i.id for i in ITEMS)


def scenario() -> list[list[Any]]:
    """Batches of ops; each batch's results (or its error) are compared between the stores."""
    f_u1 = parse_filter({"user_id": "u1"})
    f_scene = parse_filter({"and": [{"tags": "food"}, {"scene": {"ne": "work"}}]})
    return [
        [PutItems(ITEMS, VECS)],
        [GetItems([A, B, C, D, E, "missing"])],
        [
            ListItems(["cube-a"]),
            ListItems(["cube-a", "cube-b"], f_u1),
            ListItems(["cube-a"], limit=2, offset=1),
        ],
        [TextSearch(["cube-a"], "apple"), TextSearch(["cube-a", "cube-b"], "apple", f_scene)],
        [VectorSearch(["cube-a", "cube-b"], Q), VectorSearch(["cube-a"], Q, f_u1, limit=1)],
        [HybridSearch(["cube-a"], "apple", Q, alpha=0.5), HybridSearch(["cube-a"], "apple", Q, f_scene)],
        [TouchItems([A, D], T0 + timedelta(hours=1)), GetItems([A, D])],
        [PutItems([ITEMS[1].evolve(memory="green apple, crisp")], [VECS[1]], if_revisions=[1])],
        [PutItems([ITEMS[1]], [VECS[1]], if_revisions=[1])],  # stale: ConflictError
        [GetItems([B])],
        [DeleteItems(["cube-a"], where=parse_filter({"tags": "baking"}))],
        [ListItems(["cube-a"]), TextSearch(["cube-a"], "bread"), VectorSearch(["cube-a"], Q)],
        [DeleteItems(["cube-a", "cube-b"], ids=[D, E], hard=True), GetItems([D, E])],
        [PutRecords("ns", {"k1": {"v": 1}, "k2": {"v": [2]}, "x": {"v": "三"}})],
        [GetRecords("ns", ["k1", "nope", "x"]), ListRecords("ns", "k")],
        [PutRecords("ns", {"k1": {"v": 9}}, if_absent=True)],  # exists: ConflictError
        [PutRecords("ns", {"k2": None}), ListRecords("ns")],
        [ListItems(["nobody"]), TextSearch(["nobody"], "apple")],
    ]


def normal(value: Any) -> Any:
    """Results in a comparable form (the time of a soft delete is the only thing that differs)."""
    if isinstance(value, MemoryItem):
        data = value.to_dict()
        if data["status"] == "deleted":
            data.pop("updated_at")
        return data
    if isinstance(value, ScoredId):
        return (value.id, round(value.score, 5))
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [round(float(x), 5) for x in value]
    return value


def run_sync(store: WeaviateStore) -> list[Any]:
    out: list[Any] = []
    for ops in scenario():
        try:
            out.append(normal(store.batch(ops)))
        except StoreError as exc:
            out.append(type(exc).__name__)
    out.append(normal(store.get_embeddings([A, B, C, E])))
    return out


async def run_async(store: AsyncWeaviateStore) -> list[Any]:
    out: list[Any] = []
    for ops in scenario():
        try:
            out.append(normal(await store.abatch(ops)))
        except StoreError as exc:
            out.append(type(exc).__name__)
    out.append(normal(await store.aget_embeddings([A, B, C, E])))
    return out


def async_client(standin: WeaviateStandIn) -> weaviate.WeaviateAsyncClient:
    return weaviate.use_async_with_custom(
        http_host=standin.host,
        http_port=standin.http_port,
        http_secure=False,
        grpc_host=standin.host,
        grpc_port=standin.grpc_port,
        grpc_secure=False,
        skip_init_checks=True,
    )


@pytest.fixture
def sync_store(weaviate_standin: WeaviateStandIn) -> Iterator[WeaviateStore]:
    s = WeaviateStore(client=weaviate_standin.connect(), collection="SyncItem", owns_client=True)
    s.setup()
    yield s
    s.close()


def test_async_store_gives_the_sync_store_results(
    sync_store: WeaviateStore, weaviate_standin: WeaviateStandIn
) -> None:
    """Look at the two drivers (run_plan / arun_plan) when this fails: the plans are shared."""
    expected = run_sync(sync_store)

    async def run() -> list[Any]:
        client = async_client(weaviate_standin)
        await client.connect()
        store = AsyncWeaviateStore(client=client, collection="AsyncItem", owns_client=True)
        try:
            await store.setup()
            await store.setup()  # idempotent
            return await run_async(store)
        finally:
            await store.aclose()

    got = asyncio.run(run())
    assert got == expected
    # and the scenario did what it says (so identical results are not identical failures)
    assert expected[8] == expected[15] == "ConflictError"
    assert [h[0] for h in expected[3][0]] == [B, A]
    assert expected[5][0][:2] == [(B, 1.0), (A, 0.40825)]  # relativeScoreFusion, alpha 0.5
    assert expected[12] == [2, [None, None]]
    assert expected[14] == [[{"v": 1}, None, {"v": "三"}], [["k1", {"v": 1}], ["k2", {"v": [2]}]]]


def test_async_conveniences_and_from_url(weaviate_standin: WeaviateStandIn) -> None:
    """The a* wrappers and the async from_url; a sync call on the async store says what to use."""
    url = f"http://{weaviate_standin.host}:{weaviate_standin.http_port}"

    async def run() -> None:
        store = await AsyncWeaviateStore.from_url(
            url, grpc_port=weaviate_standin.grpc_port, skip_init_checks=True
        )
        try:
            await store.setup()
            await store.aput(ITEMS[:2], VECS[:2])
            assert await store.aget([A, "x"]) == [ITEMS[0].evolve(revision=1), None]
            items, total = await store.alist_items(["cube-a"])
            assert total == 2 and {i.id for i in items} == {A, B}
            assert [h.id for h in await store.asearch_text(["cube-a"], "red pie")] == [A]
            assert (await store.asearch_vector(["cube-a"], VECS[1], limit=1))[0].id == B  # type: ignore[arg-type]
            assert (await store.ahybrid_search(["cube-a"], "green", Q, alpha=0.0))[0].id == B
            await store.atouch([A], T0)
            got = await store.aget([A])
            assert got[0] is not None and got[0].access_count == 1
            await store.aput_records("n", {"a": {"x": 1}})
            assert await store.aget_record("n", "a") == {"x": 1}
            assert await store.alist_records("n") == [("a", {"x": 1})]
            assert await store.adelete(["cube-a"], ids=[A], hard=True) == 1
            with pytest.raises(NotSupportedError, match="abatch"):
                store.batch([GetItems([A])])
        finally:
            await store.aclose()

    asyncio.run(run())


def test_plans_are_io_free_request_descriptions() -> None:
    """A plan only yields Call descriptions and consumes what it is sent: no client needed."""
    plan = WeaviatePlanner(collection="Mem").plan(
        TextSearch(["cube-a"], "apples", parse_filter({"tags": "x"}))
    )
    call = next(plan)  # the cube's generation pointer (none), then its tenant
    assert (call.collection, call.path) == ("MemRecord", "data.exists")
    call = plan.send(False)
    assert call == Call("Mem", None, "tenants.exists", ("cube-a",))
    call = plan.send(True)
    assert (call.collection, call.tenant, call.path) == ("Mem", "cube-a", "query.bm25")
    assert call.kwargs["query"] == "apple" and call.kwargs["limit"] == 10
    assert call.kwargs["query_properties"] == ["search_text"]
    assert call.kwargs["filters"] is not None

    class Res:
        objects: tuple[Any, ...] = ()

    with pytest.raises(StopIteration) as stop:
        plan.send(Res())
    assert stop.value.value == []


# ----------------------------------------------------------------------------- unreachable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAST = AdditionalConfig(timeout=Timeout(init=2, query=2, insert=2))


def test_from_url_to_a_closed_port_is_a_store_error() -> None:
    """Connection errors are translated at the boundary: StoreError (a RuntimeFailure), raised
    from the client's own exception."""
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(StoreError) as info:
        WeaviateStore.from_url(url, grpc_port=closed_port(), additional_config=FAST)
    assert isinstance(info.value, RuntimeFailure)
    assert isinstance(info.value.__cause__, weaviate.exceptions.WeaviateBaseError)

    async def run() -> None:
        await AsyncWeaviateStore.from_url(url, grpc_port=closed_port(), additional_config=FAST)

    with pytest.raises(StoreError) as ainfo:
        asyncio.run(run())
    assert isinstance(ainfo.value.__cause__, weaviate.exceptions.WeaviateBaseError)


def test_ops_against_a_server_that_went_away_are_store_errors() -> None:
    """Connected, then the server stops: every op (sync and async) is a StoreError raised from
        the client's error, never a raw grpc/httpx exception. (Only ops whose first request is REST
    here: a gRPC query to a dead server is retried by the client five times, about a minute.)"""
    standin = WeaviateStandIn().start()
    store = WeaviateStore(client=standin.connect(additional_config=FAST), owns_client=True)
    store.setup()

    async def connect() -> AsyncWeaviateStore:
        client = async_client(standin)
        await client.connect()
        return AsyncWeaviateStore(client=client, owns_client=True)

    loop = asyncio.new_event_loop()
    try:
        astore = loop.run_until_complete(connect())
        loop.run_until_complete(astore.setup())
        standin.stop()
        time.sleep(5.2)  # httpx drops its idle keep-alive connection (the stand-in would serve it)
        for call in (
            lambda: store.search_text(["cube-a"], "x"),
            lambda: store.list_items(["c"]),
            store.setup,
        ):
            with pytest.raises(StoreError) as info:
                call()
            assert info.value.__cause__ is not None and not isinstance(info.value.__cause__, StoreError)
        with pytest.raises(StoreError) as ainfo:
            loop.run_until_complete(astore.asearch_text(["cube-a"], "x"))
        assert ainfo.value.__cause__ is not None
        with pytest.raises(StoreError):
            loop.run_until_complete(astore.alist_items(["cube-a"]))
    finally:
        store.close()
        loop.run_until_complete(astore.aclose())
        loop.close()


def test_async_from_url_closes_the_client_when_connect_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    class Client:
        async def connect(self) -> None:
            raise weaviate.exceptions.WeaviateConnectionError("refused")

        async def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(weaviate, "use_async_with_custom", lambda **_: Client())
    with pytest.raises(StoreError):
        asyncio.run(AsyncWeaviateStore.from_url("http://127.0.0.1:1"))
    assert closed == [True]


def test_async_touch_and_soft_delete_keep_the_item_json(weaviate_standin: WeaviateStandIn) -> None:
    """The async driver runs the touch's partial update: counters change, revision does not."""

    async def run() -> tuple[Any, Any]:
        client = async_client(weaviate_standin)
        await client.connect()
        store = AsyncWeaviateStore(client=client, owns_client=True)
        await store.setup()
        first = item("original")
        await store.aput([first])
        await store.atouch([first.id], T0 + timedelta(days=1))
        touched = (await store.aget([first.id]))[0]
        await store.adelete(["cube-a"], ids=[first.id])
        deleted = (await store.alist_items(["cube-a"]))[0][0]
        await store.aclose()
        return touched, deleted

    touched, deleted = asyncio.run(run())
    assert (touched.revision, touched.access_count, touched.last_accessed_at) == (
        1,
        1,
        T0 + timedelta(days=1),
    )
    assert (deleted.status, deleted.revision, deleted.access_count) == ("deleted", 2, 1)


def test_async_store_sees_another_stores_replace_space(weaviate_standin: WeaviateStandIn) -> None:
    """A cached tenant generation that another process replaced: abatch re-reads the pointer."""

    async def run() -> None:
        client = async_client(weaviate_standin)
        await client.connect()
        store = AsyncWeaviateStore(client=client, owns_client=True)
        try:
            await store.setup()
            await store.aput([item("old", cube="r")], [np.ones(4, np.float32)])
            assert (await store.alist_items(["r"]))[1] == 1
            other = WeaviateStore(client=weaviate_standin.connect(), owns_client=True)
            other.batch([PutItems([item("new", cube="r")], [np.ones(8, np.float32)], replace_space=True)])
            other.close()
            got, total = await store.alist_items(["r"])
            assert total == 2 and {i.memory for i in got} == {"old", "new"}
            hits = await store.asearch_vector(["r"], np.ones(8, np.float32), limit=5)
            assert len(hits) == 1
        finally:
            await store.aclose()

    asyncio.run(run())
