"""MemOS on the Weaviate store (the in-process stand-in): the facade with its tasks in a
separate SQLite queue in the data folder, a restart that resumes a queued task, a task re-run
after a crash between its writes and its completion, a cube dumped from SQLite and loaded
into Weaviate, and the server with a Weaviate collection per tenant."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("weaviate")

import tests.weaviate_standin as standin_package
from memos_core import InvalidInputError, MemOS
from memos_core.cube import MemCube
from memos_core.memos import user_cube_id
from memos_core.schema import MemoryItem, TaskStatus
from memos_core.stores.sqlite import SqliteStore
from memos_core.stores.weaviate import WeaviateStore
from memos_core.testing import HashEmbedder
from tests.weaviate_standin import WeaviateStandIn

weaviate_standin = standin_package.weaviate_standin  # the shared fixture, made visible here

Opener = Callable[..., MemOS]


@pytest.fixture
def open_mem(tmp_path: Path, weaviate_standin: WeaviateStandIn) -> Iterator[Opener]:
    """``open_mem(**options)``: a MemOS on ``tmp_path/data`` with a fresh client of the same
    stand-in (so a second call is a restart on the same data)."""
    opened: list[MemOS] = []

    def open_(path: Path | None = None, **options: Any) -> MemOS:
        store = WeaviateStore(client=weaviate_standin.connect(), owns_client=True)
        store.setup()
        options.setdefault("embedder", HashEmbedder())
        options.setdefault("scheduler", "inline")
        mem = MemOS(path or tmp_path / "data", store=store, **options)
        opened.append(mem)
        return mem

    yield open_
    for mem in opened:
        mem.close()


def _ids(mem: MemOS, user: str) -> list[tuple[str, str, str]]:
    items, _ = mem.store.list_items([user_cube_id(user)], limit=200)
    return sorted((i.id, i.memory, i.status) for i in items)


def test_a_store_without_a_queue_needs_a_path(weaviate_standin: WeaviateStandIn) -> None:
    """Tasks of a WeaviateStore live in a SQLite store in the data folder: no folder, no MemOS."""
    store = WeaviateStore(client=weaviate_standin.connect(), owns_client=True)
    store.setup()
    try:
        with pytest.raises(InvalidInputError, match="needs a data folder path"):
            MemOS(store=store, embedder=HashEmbedder())
    finally:
        store.close()


def test_facade_round_trip(open_mem: Opener, tmp_path: Path) -> None:
    """add (the fine stage runs), search, get, update, delete and feedback on Weaviate; the
    task is in the data folder's SQLite queue, not in Weaviate."""
    mem = open_mem()
    assert mem.scheduler.separate_queue and (tmp_path / "data" / "memos.db").exists()
    r = mem.add_message(
        [{"role": "user", "content": "I live in Paris and I play the cello"}],
        user_id="u1",
        conversation_id="c1",
        async_mode=False,
    ).data
    assert r.status == TaskStatus.COMPLETED
    assert mem.get_task_status(r.task_id).data[0].status == TaskStatus.COMPLETED
    assert mem.get_memory(r.memory_ids[0]).data.mode == "fine"
    hits = mem.search_memory("where does the user live", user_id="u1").data.memory_detail_list
    assert hits and "Paris" in hits[0].memory
    assert mem.search_memory("cello", user_id="u2").data.memory_detail_list == []
    lexical = mem.search_memory("cello", user_id="u1", mode="lexical").data.memory_detail_list
    assert lexical and "cello" in lexical[0].memory and lexical[0].score_details["vector_rank"] == 0
    assert mem.get_memory(lexical[0].id).data.access_count >= 2  # the reads were written to Weaviate
    keyword = mem.search_memory("cello", user_id="u1", mode="keyword").data.memory_detail_list
    assert [h.id for h in keyword] == [h.id for h in lexical]  # one memory holds the word
    assert keyword[0].score_details == {"bm25": round(keyword[0].score, 6), "bm25_rank": 1.0}

    fact = next(h for h in hits if h.memory_type != "feedback")
    updated = mem.update_memory(fact.id, memory="u1 lives in Lyon", user_id="u1").data
    assert updated.version == fact.version + 1 and mem.get_memory(fact.id).data.memory == "u1 lives in Lyon"
    mem.add_feedback("u1", "c1", "No, I moved to Berlin in May")
    found = mem.search_memory("where does the user live now", user_id="u1").data.memory_detail_list
    assert any("Berlin" in h.memory for h in found)
    assert mem.delete_memory([fact.id], user_id="u1").data["deleted"] == 1
    assert mem.get_memory(fact.id).data.status == "deleted"
    assert fact.id not in {h.id for h in mem.search_memory("Lyon", user_id="u1").data.memory_detail_list}


def test_the_thread_scheduler_runs_the_fine_stage(open_mem: Opener) -> None:
    mem = open_mem(scheduler="thread")
    r = mem.add_message([{"role": "user", "content": "my sister is called Ana"}], user_id="u1").data
    assert r.status == TaskStatus.QUEUED
    assert mem.scheduler.wait(r.task_id, timeout=30).status == TaskStatus.COMPLETED
    assert all(mem.get_memory(i).data.mode == "fine" for i in r.memory_ids)


def test_a_restart_resumes_a_queued_task(open_mem: Opener) -> None:
    """A task queued by a MemOS that closed before running it is run by the next MemOS on
    the same folder and store."""
    first = open_mem(scheduler="off")
    r = first.add_message([{"role": "user", "content": "I work as a nurse in Porto"}], user_id="u1").data
    first.close()
    second = open_mem()
    assert second.get_task_status(r.task_id).data[0].status == TaskStatus.QUEUED
    assert second.get_memory(r.memory_ids[0]).data.mode == "fast"  # written before the enqueue
    second.run_pending()
    assert second.get_task_status(r.task_id).data[0].status == TaskStatus.COMPLETED
    assert second.get_memory(r.memory_ids[0]).data.mode == "fine"


def test_a_crash_between_the_writes_and_the_completion_reruns_safely(open_mem: Opener) -> None:
    """The handler's writes reach Weaviate, the process dies before the task is completed:
    the task's lease runs out, it runs again on what the first run wrote, and ends with the
    same memories (no second copy of a fact), completed."""
    mem = open_mem(scheduler="off", lease_seconds=0.2)
    messages = [{"role": "user", "content": "I live in Paris. My favourite food is sushi"}]
    r = mem.add_message(messages, user_id="u1", conversation_id="c1").data
    sched = mem.scheduler
    claimed = sched.queue.claim_task("dead-worker", lease_seconds=0.2)
    assert claimed is not None and claimed[0].task_id == r.task_id
    ops = list(sched.handlers[claimed[0].kind](claimed[1]))
    mem.store.batch(ops)  # the writes went through; the completion never came
    after_crash = _ids(mem, "u1")
    assert mem.get_task_status(r.task_id).data[0].status == TaskStatus.RUNNING
    time.sleep(0.3)
    retry = open_mem(lease_seconds=0.2)
    retry.run_pending()
    assert retry.get_task_status(r.task_id).data[0].status == TaskStatus.COMPLETED
    assert _ids(retry, "u1") == after_crash


def test_task_ops_go_to_the_queue_after_the_writes(open_mem: Opener) -> None:
    """With a separate queue, ``apply`` writes the store's ops first and the task ops after
    them; the Weaviate store never sees a task op."""
    mem = open_mem(scheduler="off")
    seen: list[str] = []
    store_batch, queue_batch = mem.store.batch, mem.scheduler._queue_store.batch

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def batch(ops: Any) -> Any:
            seen.extend(f"{name}:{type(op).__name__}" for op in ops)
            return real(ops)

        return batch

    mem.store.batch = spy("store", store_batch)  # type: ignore[method-assign]
    mem.scheduler._queue_store.batch = spy("queue", queue_batch)  # type: ignore[method-assign]
    r = mem.add_message([{"role": "user", "content": "hello there"}], user_id="u1", idempotency_key="k1")
    assert [s for s in seen if "Task" in s or s.startswith("queue")] == ["queue:EnqueueTask"]
    assert seen.index("queue:EnqueueTask") > seen.index("store:PutItems")
    # the idempotent retry finds the first add and reads its task from the queue
    again = mem.add_message([{"role": "user", "content": "hello there"}], user_id="u1", idempotency_key="k1")
    assert again.data.task_id == r.data.task_id and again.data.status == TaskStatus.QUEUED
    seen.clear()
    mem.run_pending()
    assert seen[-1] == "queue:CompleteTask" and "store:CompleteTask" not in seen


GREEN_TEA = [{"role": "user", "content": "I like green tea"}]


def test_two_handles_racing_on_one_key_store_once_on_weaviate(
    open_mem: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of one tenant: A looks the key up before B recorded it (simulated: A's
    first look finds nothing). Weaviate applies a batch op by op, so A must claim the key
    before writing anything: it finds B's claim, writes nothing and answers B's result."""
    from memos_core.memos import IDEMPOTENCY

    a, b = open_mem(scheduler="off"), open_mem(scheduler="off")
    winner = b.add_message(GREEN_TEA, user_id="u", idempotency_key="k1").data
    real = a.store.get_record
    looks = {"n": 0}

    def racing(namespace: str, key: str) -> Any:
        if namespace == IDEMPOTENCY and looks["n"] == 0:
            looks["n"] += 1
            return None
        return real(namespace, key)

    monkeypatch.setattr(a.store, "get_record", racing)
    loser = a.add_message(GREEN_TEA, user_id="u", idempotency_key="k1").data
    assert looks["n"] == 1
    assert (loser.task_id, loser.memory_ids) == (winner.task_id, winner.memory_ids)
    assert [i for i, _, _ in _ids(a, "u")] == sorted(winner.memory_ids)  # stored once
    assert [t.task_id for t in a.get_task_status(winner.task_id).data] == [winner.task_id]


def test_the_key_is_claimed_before_the_items_are_written(open_mem: Opener) -> None:
    """Without transactions: the claim (pending, naming the final ids) first, then the
    items and the task, then the record marked done."""
    from memos_core.memos import IDEMPOTENCY
    from memos_core.ports import EnqueueTask, PutItems, PutRecords

    mem = open_mem(scheduler="off")
    seen: list[Any] = []
    real = mem.store.batch

    def spy(ops: Any) -> Any:
        seen.extend(ops)
        return real(ops)

    mem.store.batch = spy  # type: ignore[method-assign]
    r = mem.add_message(GREEN_TEA, user_id="u", idempotency_key="k1").data
    idem = [
        (n, op) for n, op in enumerate(seen) if isinstance(op, PutRecords) and op.namespace == IDEMPOTENCY
    ]
    put_items = next(n for n, op in enumerate(seen) if isinstance(op, PutItems))
    (first, claim), (last, done) = idem
    assert first < put_items < last and claim.if_absent  # nothing of the add before the claim
    assert not any(isinstance(op, (PutItems, EnqueueTask)) for op in seen[:first])
    (record,) = claim.records.values()
    assert record["pending"] is True and record["data"]["memory_ids"] == r.memory_ids
    assert record["data"]["task_id"] == r.task_id
    (final,) = done.records.values()
    assert "pending" not in final
    (key,) = done.records
    assert "pending" not in mem.store.get_record(IDEMPOTENCY, key)


def test_a_pending_claim_is_answered_as_it_is(open_mem: Opener) -> None:
    """A crash after the claim leaves it pending: a retry answers the claimed ids (they are
    final) and writes nothing more."""
    from memos_core.cube import SEP
    from memos_core.memos import IDEMPOTENCY
    from memos_core.ports import PutRecords

    mem = open_mem(scheduler="off")
    first = mem.add_message(GREEN_TEA, user_id="u", idempotency_key="k1").data
    key = f"{user_cube_id('u')}{SEP}k1"
    record = mem.store.get_record(IDEMPOTENCY, key)
    assert record is not None
    mem.store.batch([PutRecords(IDEMPOTENCY, {key: {**record, "pending": True}})])
    before = _ids(mem, "u")
    again = mem.add_message(GREEN_TEA, user_id="u", idempotency_key="k1").data
    assert (again.task_id, again.memory_ids) == (first.task_id, first.memory_ids)
    assert _ids(mem, "u") == before


def test_a_failed_write_after_the_claim_releases_it(
    open_mem: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writes fail after the claim: the claim is released, so a retry adds (instead of
    answering memories that were never written)."""
    from memos_core.errors import StoreError

    mem = open_mem(scheduler="off")
    real = mem.scheduler.apply
    monkeypatch.setattr(mem.scheduler, "apply", lambda ops: (_ for _ in ()).throw(StoreError("down")))
    with pytest.raises(StoreError):
        mem.add_message(GREEN_TEA, user_id="u", idempotency_key="k1")
    assert _ids(mem, "u") == []
    monkeypatch.setattr(mem.scheduler, "apply", real)
    r = mem.add_message(GREEN_TEA, user_id="u", idempotency_key="k1").data
    assert [i for i, _, _ in _ids(mem, "u")] == sorted(r.memory_ids)


def test_the_sqlite_path_is_one_transaction(tmp_path: Path) -> None:
    """Without a separate queue nothing changes: the store is the queue."""
    with MemOS(tmp_path, embedder=HashEmbedder(), scheduler="inline") as mem:
        assert not mem.scheduler.separate_queue and mem.scheduler.queue is mem.store


# ----------------------------------------------------------------------------- dump / load

TEXTS = [
    "I live in Paris with my partner",
    "My favourite food is sushi",
    "I play the cello on Sundays",
    "Our dog Rex is afraid of thunder",
    "I work as a nurse at the city hospital",
    "We are planning a trip to Japan in April",
]
QUERIES = [
    "where does the user live",
    "is the dog afraid",
    "trip to Japan",
    "who plays the cello",
    "favourite food",
]


def test_a_sqlite_dump_loads_into_weaviate_with_the_same_top_hits(open_mem: Opener, tmp_path: Path) -> None:
    """``MemCube.dump`` from an embedded MemOS, ``MemCube.load`` into the Weaviate store: a
    MemOS on it finds the same best memory for every query (BM25 details differ between
    FTS5 and Weaviate, so the whole ranking is not compared)."""
    cube_id = user_cube_id("u1")
    with MemOS(tmp_path / "sqlite", embedder=HashEmbedder(), scheduler="inline") as local:
        for text in TEXTS:
            local.add_message([{"role": "user", "content": text}], user_id="u1", async_mode=False)
        expected = {
            q: [h.id for h in local.search_memory(q, user_id="u1", top_k=3).data.memory_detail_list]
            for q in QUERIES
        }
        local.cube(cube_id, user_id="u1").dump(tmp_path / "dump")
    remote = open_mem(tmp_path / "remote")
    loaded = MemCube.load(tmp_path / "dump", remote.store)
    assert loaded.cube_id == cube_id and loaded.count() == len(_ids(remote, "u1")) > 0
    for q in QUERIES:
        got = [h.id for h in remote.search_memory(q, user_id="u1", top_k=3).data.memory_detail_list]
        assert got[:1] == expected[q][:1], q
        assert set(got) == set(expected[q]), q
    # and back: a dump of the Weaviate cube loads into a fresh SQLite store
    remote.cube(cube_id, user_id="u1").dump(tmp_path / "dump2")
    back = SqliteStore.from_path(tmp_path / "back")
    back.setup()
    try:
        assert MemCube.load(tmp_path / "dump2", back).count() == loaded.count()
    finally:
        back.close()


# ----------------------------------------------------------------------------- server


def test_server_keeps_each_tenant_in_its_own_collection(
    tmp_path: Path, weaviate_standin: WeaviateStandIn
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from memos_core.server import KeyStore, create_app, weaviate_collection

    def factory(tenant: str) -> WeaviateStore:
        store = WeaviateStore(
            client=weaviate_standin.connect(), collection=weaviate_collection(tenant), owns_client=True
        )
        store.setup()
        return store

    keys = KeyStore(tmp_path / "control")
    tokens = {t: keys.create(t)[1] for t in ("acme", "glo-bex")}
    app = create_app(tmp_path, keys=keys, embedder=HashEmbedder(), store_factory=factory, scheduler="inline")

    def call(tenant: str, method: str, path: str, **kwargs: Any) -> Any:
        resp = client.request(method, path, headers={"Authorization": f"Token {tokens[tenant]}"}, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    with TestClient(app) as client:
        add = {
            "messages": [{"role": "user", "content": "I live in Paris"}],
            "user_id": "u1",
            "async_mode": False,
        }
        data = call("acme", "POST", "/v1/memories/add_message", json=add)
        assert data["status"] == "completed"
        assert call("acme", "GET", f"/v1/tasks/{data['task_id']}")[0]["status"] == "completed"
        search = {"query": "where does the user live", "user_id": "u1"}
        hits = call("acme", "POST", "/v1/memories/search", json=search)["memory_detail_list"]
        assert hits and "Paris" in hits[0]["memory"]
        assert call("glo-bex", "POST", "/v1/memories/search", json=search)["memory_detail_list"] == []
        resp = client.get(
            f"/v1/memories/{hits[0]['id']}", params={"user_id": "u1"},
            headers={"Authorization": f"Token {tokens['glo-bex']}"},
        )  # fmt: skip
        assert resp.status_code == 404
    check = weaviate_standin.connect()
    try:
        assert check.collections.exists("Memos_acme_") and check.collections.exists("Memos_glo_xbex_")
    finally:
        check.close()
    assert (tmp_path / "tenants" / "acme" / "memos.db").exists()  # the tenant's tasks


def test_weaviate_names_and_urls() -> None:
    from memos_core.server import parse_weaviate_url, weaviate_collection

    assert weaviate_collection("acme") == "Memos_acme_"
    names = {weaviate_collection(t) for t in ("a-b", "a_b", "a_xb", "a__b", "a-_b")}
    assert len(names) == 5  # one-to-one
    assert parse_weaviate_url("weaviate://db:8080?grpc_port=50052") == (
        "http://db:8080",
        {"grpc_port": 50052},
    )
    assert parse_weaviate_url("weaviates://db?collection=Mine") == ("https://db:443", {"collection": "Mine"})
    for bad in ("http://db:8080", "weaviate://db:8080?nope=1", "weaviate://db:x"):
        with pytest.raises(InvalidInputError):
            parse_weaviate_url(bad)


TRICKY_TENANTS = [
    "bob", "bobrecord", "bob_record", "bob-record", "bobrecordrecord", "record", "r", "a-b", "a_b",
    "a_xb", "a__b", "a-_b", "a_-b", "a--b", "a_x_b", "a-x-b", "ax", "a_", "a-", "a__", "a_x",
    "a_record", "a-record", "a_", "x", "_x", "0", "0record", "memos", "memosrecord",
]  # fmt: skip


def test_no_two_tenants_share_a_collection_ignoring_case() -> None:
    """The store keeps records in ``<collection>Record`` and Weaviate compares collection
    names ignoring case: every item and records collection of a set of tenants is distinct
    (``bob``'s records once were ``Memos_bobRecord``, ``bobrecord``'s items
    ``Memos_bobrecord``), and every name is a valid Weaviate class name."""
    import itertools
    import re

    from memos_core.server import _TENANT, weaviate_collection

    tenants = sorted({t for t in TRICKY_TENANTS if _TENANT.fullmatch(t)})
    # and every tenant of up to three characters over an alphabet that can spell the escapes
    alphabet = "abrx_-"
    for n in (1, 2, 3):
        spelled = ("".join(p) for p in itertools.product(alphabet, repeat=n))
        tenants += [t for t in spelled if _TENANT.fullmatch(t)]
    tenants = sorted(set(tenants))
    names: dict[str, str] = {}
    for tenant in tenants:
        items = weaviate_collection(tenant)
        for name in (items, f"{items}Record"):  # the records collection, as WeaviateStore names it
            assert re.fullmatch(r"[A-Z][_0-9A-Za-z]*", name), name
            assert name.lower() not in names, (tenant, names.get(name.lower()), name)
            names[name.lower()] = tenant


def test_bob_and_bobrecord_set_up_side_by_side(weaviate_standin: WeaviateStandIn) -> None:
    """The collision the case-insensitive comparison made: both tenants' stores set up."""
    from memos_core.server import weaviate_collection

    stores = []
    try:
        for tenant in ("bob", "bobrecord", "bob_record"):
            store = WeaviateStore(
                client=weaviate_standin.connect(), collection=weaviate_collection(tenant), owns_client=True
            )
            stores.append(store)
            store.setup()
        stores[0].put([MemoryItem(id="m1", cube_id="c", memory="bob's")])
        assert stores[1].get(["m1"]) == [None]
    finally:
        for store in stores:
            store.close()


def test_serve_refuses_a_collection_in_the_store_url(weaviate_standin: WeaviateStandIn) -> None:
    from memos_core.server import weaviate_store_factory

    w = weaviate_standin
    with pytest.raises(InvalidInputError, match="own Weaviate collection"):
        weaviate_store_factory(f"weaviate://{w.host}:{w.http_port}?grpc_port={w.grpc_port}&collection=Mine")


def test_the_api_key_comes_from_the_environment(
    tmp_path: Path, weaviate_standin: WeaviateStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WEAVIATE_API_KEY`` reaches ``WeaviateStore.from_url`` from the server's factory and
    from the CLI; unset, no key is passed."""
    from memos_core.cli import main
    from memos_core.server import weaviate_store_factory

    seen: list[Any] = []
    real = WeaviateStore.from_url.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, url: str, **kwargs: Any) -> WeaviateStore:
        seen.append(kwargs.pop("api_key", "missing"))
        return real(cls, url, **kwargs)  # the stand-in checks no key

    monkeypatch.setattr(WeaviateStore, "from_url", classmethod(spy))
    w = weaviate_standin
    url = f"weaviate://{w.host}:{w.http_port}?grpc_port={w.grpc_port}"
    monkeypatch.setenv("WEAVIATE_API_KEY", "secret-key")
    weaviate_store_factory(url)("acme").close()
    argv = ["--path", str(tmp_path), "--store", url, "--embedder", "hash:64", "search", "--user", "u1", "x"]
    assert main(argv) == 0
    monkeypatch.delenv("WEAVIATE_API_KEY")
    weaviate_store_factory(url)("acme").close()
    assert seen == ["secret-key", "secret-key", None]


def test_cli_moves_a_cube_from_sqlite_to_weaviate(
    tmp_path: Path, weaviate_standin: WeaviateStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """``memos export`` from the SQLite folder, ``memos --store weaviate://... import`` into a
    collection, then ``memos --store ... search`` finds the memory there."""
    from memos_core.cli import main

    w = weaviate_standin
    store = f"weaviate://{w.host}:{w.http_port}?grpc_port={w.grpc_port}&collection=Cli"
    local = ["--path", str(tmp_path / "local"), "--embedder", "hash:64"]
    remote = ["--path", str(tmp_path / "remote"), "--store", store, "--embedder", "hash:64"]
    assert main([*local, "add", "--user", "u1", "--wait", "I live in Paris"]) == 0
    assert main([*local, "export", "--user", "u1", "--quiet", str(tmp_path / "dump")]) == 0
    assert main([*remote, "import", "--quiet", str(tmp_path / "dump")]) == 0
    capsys.readouterr()
    assert main([*remote, "search", "--user", "u1", "--json", "where", "do", "I", "live"]) == 0
    assert "Paris" in capsys.readouterr().out
    assert main([*remote, "stats"]) == 2
