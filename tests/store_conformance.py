"""The conformance suite every MemoryStore backend runs.

Subclass :class:`MemoryStoreConformance` and provide the ``make_store`` fixture: a factory
that opens a new, set-up handle on one fresh backend (each call a new connection, as another
process would have). Optional capabilities (``supports_tasks``, ``supports_transactions``,
``supports_multiprocess``) are detected from the class flags and skipped, not failed.
Each test's docstring says what to look at when it fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from memos_core import (
    ConflictError,
    InvalidInputError,
    MemoryItem,
    MemoryStore,
    SourceRef,
    Task,
    TaskStatus,
    VersionRecord,
)
from memos_core.filters import parse_filter
from memos_core.ports import CompleteTask, EnqueueTask, PutItems, PutRecords, VectorSearch
from memos_core.testing import HashEmbedder

EMB = HashEmbedder(dim=32)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def item(text: str, cube: str = "cube-a", **kw: object) -> MemoryItem:
    kw.setdefault("created_at", T0)
    kw.setdefault("updated_at", T0)
    return MemoryItem(cube_id=cube, memory=text, embedding_model=EMB.model_id, **kw)  # type: ignore[arg-type]


def put(store: MemoryStore, *items: MemoryItem) -> list[MemoryItem]:
    store.put(list(items), list(EMB.embed([i.memory for i in items])))
    return list(items)


class MemoryStoreConformance:
    """Behaviour every backend must show. Provide ``make_store``."""

    @pytest.fixture
    def make_store(self) -> Callable[[], MemoryStore]:
        raise NotImplementedError("backends provide a make_store fixture")

    @pytest.fixture
    def store(self, make_store: Callable[[], MemoryStore]) -> MemoryStore:
        return make_store()

    # ------------------------------------------------------------------ items

    def test_put_get_round_trip_keeps_every_field(self, store: MemoryStore) -> None:
        """Look at the row <-> item conversion: JSON columns, times, unicode."""
        original = item(
            "用户喜欢 Python",
            user_id="u1",
            agent_id="a1",
            conversation_id="c1",
            app_id="app",
            key="language",
            memory_type="preference",
            tags=["工作", "study"],
            info={"custom_status": "待准备", "n": 3, "nested": {"x": [1, 2]}},
            keywords=["python"],
            sources=[SourceRef(message_id="m1", role="user", chat_time=T0, conversation_id="c1")],
            history=[VersionRecord(version=1, memory="old", changed_at=T0)],
            version=2,
            event_time=T0 - timedelta(days=1),
            confidence=0.5,
        )
        put(store, original)
        got = store.get([original.id])[0]
        assert got is not None
        assert got.model_dump(exclude={"revision"}) == original.model_dump(exclude={"revision"})
        assert got.revision == 1  # the store numbers the writes of a row

    def test_get_returns_none_for_unknown_ids_in_order(self, store: MemoryStore) -> None:
        """get() must align its result with the ids asked for."""
        a = put(store, item("alpha"))[0]
        assert [i.id if i else None for i in store.get(["nope", a.id, "nope2"])] == [None, a.id, None]

    def test_put_replaces_and_keeps_vector_when_none_given(self, store: MemoryStore) -> None:
        """An upsert with embedding None must keep the stored vector (vector search still finds it)."""
        a = put(store, item("red apples in the orchard"))[0]
        store.put([a.evolve(tags=["fruit"])], [None])
        assert store.get([a.id])[0].tags == ["fruit"]  # type: ignore[union-attr]
        hits = store.search_vector(["cube-a"], EMB.embed(["red apples in the orchard"])[0], limit=1)
        assert hits and hits[0].id == a.id

    def test_vectors_of_another_dimension_are_refused(self, store: MemoryStore) -> None:
        """A cube holds one embedding space: a vector of another size is a clear error before
        anything is written (opening a folder with the wrong embedder)."""
        put(store, item("first"))
        other = item("second")
        with pytest.raises(InvalidInputError, match="dimension"):
            store.put([other], [np.ones(7, dtype=np.float32)])
        assert store.get([other.id]) == [None]
        with pytest.raises(InvalidInputError, match="dimensional"):
            store.search_vector(["cube-a"], np.ones(7, dtype=np.float32), limit=1)
        same_size_other_model = item("third").evolve(embedding_model="other-model/32")
        with pytest.raises(InvalidInputError, match="other-model"):
            store.put([same_size_other_model], list(EMB.embed(["third"])))

    def test_ids_cannot_move_between_cubes(self, store: MemoryStore) -> None:
        """A put must never re-home an existing id into another cube (tenant isolation)."""
        a = put(store, item("mine", cube="cube-a"))[0]
        with pytest.raises(InvalidInputError):
            store.put([a.evolve(cube_id="cube-b")])

    def test_if_revisions_detects_every_concurrent_write(self, store: MemoryStore) -> None:
        """PutItems.if_revisions guards read-modify-write (update, fine stage): any write in
        between — an update, a soft delete — makes a stale write fail instead of undoing it."""
        a = put(store, item("v1"))[0]
        read = store.get([a.id])[0]
        assert read is not None and read.revision == 1
        store.batch([PutItems([read.evolve(memory="v2", version=2)], None, [1])])
        with pytest.raises(ConflictError):
            store.batch([PutItems([read.evolve(memory="v2b", version=2)], None, [1])])
        assert store.get([a.id])[0].memory == "v2"  # type: ignore[union-attr]
        fresh = store.get([a.id])[0]
        assert fresh is not None and fresh.revision == 2
        store.delete(["cube-a"], ids=[a.id])
        with pytest.raises(ConflictError):  # a stale copy must not resurrect a deleted item
            store.batch([PutItems([fresh.evolve(tags=["enriched"])], None, [fresh.revision])])
        assert store.get([a.id])[0].status == "deleted"  # type: ignore[union-attr]
        with pytest.raises(ConflictError):  # 0 means "must not exist yet"
            store.batch([PutItems([fresh], None, [0])])

    def test_batch_is_atomic(self, store: MemoryStore) -> None:
        """A failing op must roll back the writes before it in the same batch."""
        if not store.supports_transactions:
            pytest.skip("backend does not claim transactions")
        a = put(store, item("base"))[0]
        fresh = item("should not survive")
        with pytest.raises(ConflictError):
            store.batch([PutItems([fresh], list(EMB.embed([fresh.memory]))), PutItems([a], None, [99])])
        assert store.get([fresh.id]) == [None]

    def test_list_is_newest_first_paged_and_filtered(self, store: MemoryStore) -> None:
        """ListItems: order by created_at desc, limit/offset, total, and the filter."""
        items = [
            item(f"note {i}", created_at=T0 + timedelta(minutes=i), tags=["even" if i % 2 == 0 else "odd"])
            for i in range(7)
        ]
        put(store, *items)
        page, total = store.list_items(["cube-a"], limit=3, offset=0)
        assert total == 7 and [i.memory for i in page] == ["note 6", "note 5", "note 4"]
        page2, _ = store.list_items(["cube-a"], limit=3, offset=6)
        assert [i.memory for i in page2] == ["note 0"]
        evens, total_even = store.list_items(["cube-a"], parse_filter({"tags": "even"}))
        assert total_even == 4 and {i.memory for i in evens} == {"note 0", "note 2", "note 4", "note 6"}

    def test_soft_and_hard_delete(self, store: MemoryStore) -> None:
        """Soft delete keeps the id resolvable (status deleted) and hides it from search; hard erases."""
        a, b = put(store, item("keep me around"), item("erase me entirely"))
        assert store.delete(["cube-a"], ids=[a.id]) == 1
        got = store.get([a.id])[0]
        assert got is not None and got.status == "deleted"
        assert a.id not in [h.id for h in store.search_vector(["cube-a"], EMB.embed([a.memory])[0], limit=5)]
        assert a.id not in [h.id for h in store.search_text(["cube-a"], "keep around", limit=5)]
        assert store.delete(["cube-a"], ids=[b.id], hard=True) == 1
        assert store.get([b.id]) == [None]
        assert b.id not in [h.id for h in store.search_text(["cube-a"], "erase entirely", limit=5)]

    def test_delete_by_filter_stays_inside_the_cube(self, store: MemoryStore) -> None:
        """A filter delete in cube A must not touch cube B, even when B's items match."""
        put(store, item("x", cube="cube-a", tags=["t"]), item("y", cube="cube-b", tags=["t"]))
        assert store.delete(["cube-a"], where=parse_filter({"tags": "t"}), hard=True) == 1
        assert store.list_items(["cube-b"])[1] == 1

    def test_touch_counts_reads(self, store: MemoryStore) -> None:
        """TouchItems increments access_count and sets last_accessed_at; later puts keep it."""
        a = put(store, item("read me"))[0]
        store.touch([a.id], T0)
        store.touch([a.id], T0 + timedelta(hours=1))
        store.put([a.evolve(tags=["x"])])  # a stale copy (access_count 0) must not reset the count
        got = store.get([a.id])[0]
        assert got is not None and got.access_count == 2
        assert got.last_accessed_at == T0 + timedelta(hours=1)

    # ------------------------------------------------------------------ search

    def test_text_search_ranks_by_bm25_within_scope_and_filter(self, store: MemoryStore) -> None:
        """TextSearch: matching terms, BM25 order, cube scope, and the filter all apply."""
        put(
            store,
            item("the cat sat on the mat", tags=["a"]),
            item("cats and more cats, a cat house", tags=["a"]),
            item("dogs only here", tags=["a"]),
            item("cat in another cube", cube="cube-b"),
            item("cat filtered out", tags=["b"]),
        )
        hits = store.search_text(["cube-a"], "cat", parse_filter({"tags": "a"}), limit=10)
        texts = [store.get([h.id])[0].memory for h in hits]  # type: ignore[union-attr]
        assert set(texts) == {"the cat sat on the mat", "cats and more cats, a cat house"}
        assert texts[0] == "cats and more cats, a cat house"
        assert hits[0].score >= hits[1].score

    def test_text_search_with_items(self, store: MemoryStore) -> None:
        """search_text_items: the same hits as search_text, in order, each with its item."""
        put(
            store,
            item("the cat sat on the mat", tags=["a"]),
            item("cats and more cats, a cat house", tags=["a"]),
            item("cat in another cube", cube="cube-b"),
            item("cat filtered out", tags=["b"]),
        )
        where = parse_filter({"tags": "a"})
        found = store.search_text_items(["cube-a"], "cat", where, limit=10)
        plain = store.search_text(["cube-a"], "cat", where, limit=10)
        assert [(h.id, h.score) for h, _ in found] == [(h.id, h.score) for h in plain]
        assert [(h.id, i.memory) for h, i in found] == [
            (h.id, store.get([h.id])[0].memory)  # type: ignore[union-attr]
            for h, _ in found
        ]
        assert len(found) == 2 and all(i.tags == ["a"] for _, i in found)
        assert store.search_text_items(["cube-a"], "dog", limit=10) == []

    def test_text_search_handles_chinese(self, store: MemoryStore) -> None:
        """CJK text is segmented (jieba): a Chinese query finds Chinese memories by word."""
        a, _ = put(store, item("下周三在上海给客户做季度汇报"), item("我对花生过敏"))
        hits = store.search_text(["cube-a"], "客户汇报", limit=5)
        assert hits and hits[0].id == a.id

    def test_text_search_ignores_query_syntax(self, store: MemoryStore) -> None:
        """Quotes, operators and punctuation in a query are text, never FTS syntax errors."""
        put(store, item('he said "hello" AND left'))
        assert store.search_text(["cube-a"], 'said "hello" AND NOT (', limit=5)
        assert store.search_text(["cube-a"], "?!", limit=5) == []

    def test_vector_search_is_exact_and_scoped(self, store: MemoryStore) -> None:
        """VectorSearch returns the true nearest neighbours (cosine), best first, per cube."""
        texts = [
            f"topic {w} number {i}"
            for i, w in enumerate(["apple", "river", "engine", "violin", "planet"] * 4)
        ]
        put(store, *[item(t) for t in texts], item("topic apple number 0", cube="cube-b"))
        q = EMB.embed(["topic violin number 3"])[0]
        hits = store.search_vector(["cube-a"], q, limit=5)
        vecs = EMB.embed(texts)
        expected = [texts[i] for i in np.argsort(-(vecs @ q), kind="stable")[:5]]
        got = [store.get([h.id])[0].memory for h in hits]  # type: ignore[union-attr]
        assert got[0] == "topic violin number 3"
        assert sorted(got) == sorted(expected)
        assert all(hits[i].score >= hits[i + 1].score for i in range(len(hits) - 1))

    def test_vector_search_applies_selective_filters(self, store: MemoryStore) -> None:
        """A filter that only the worst-ranked items pass must still return them (no silent empty)."""
        many = [item(f"common words here {i}") for i in range(1200)]  # past the scan budget
        rare = item("completely unrelated zebra text", info={"special": True})
        put(store, *many, rare)
        q = EMB.embed(["common words here"])[0]
        hits = store.search_vector(["cube-a"], q, parse_filter({"special": True}), limit=3)
        assert [h.id for h in hits] == [rare.id]

    def test_searches_over_several_cubes(self, store: MemoryStore) -> None:
        """Searching [A, B] merges both cubes; searching [A] never returns B's items."""
        a, b = put(store, item("shared fact alpha", cube="cube-a"), item("shared fact beta", cube="cube-b"))
        q = EMB.embed(["shared fact"])[0]
        assert {h.id for h in store.search_vector(["cube-a", "cube-b"], q, limit=5)} == {a.id, b.id}
        assert {h.id for h in store.search_text(["cube-a", "cube-b"], "shared", limit=5)} == {a.id, b.id}
        assert {h.id for h in store.search_vector(["cube-a"], q, limit=5)} == {a.id}

    def test_another_handle_sees_writes(self, make_store: Callable[[], MemoryStore]) -> None:
        """Writes through one handle (another process) are visible to the next search of another,
        including updates and deletes of vectors already cached in memory."""
        if not make_store().supports_multiprocess:
            pytest.skip("backend is single-process")
        reader, writer = make_store(), make_store()
        first = put(writer, item("first memory about sailing"))[0]
        q = EMB.embed(["second memory about sailing"])[0]
        assert [h.id for h in reader.search_vector(["cube-a"], q, limit=5)] == [first.id]
        second = put(writer, item("second memory about sailing"))[0]
        assert reader.search_vector(["cube-a"], q, limit=1)[0].id == second.id
        writer.delete(["cube-a"], ids=[second.id], hard=True)
        assert [h.id for h in reader.search_vector(["cube-a"], q, limit=5)] == [first.id]

    # ------------------------------------------------------------------ tasks

    def test_tasks_claim_lease_retry_complete(self, store: MemoryStore) -> None:
        """Durable tasks: enqueued atomically with items, claimed once, re-claimed after the lease
        runs out (a dead worker), re-queued by fail(retry_in), completed with a write."""
        if not store.supports_tasks:
            pytest.skip("backend has no task queue")
        q = store  # the store is its own TaskQueue
        now = datetime.now(timezone.utc)
        task = Task(task_id="t1", kind="k", status=TaskStatus.QUEUED, created_at=now, updated_at=now)
        a = item("with task")
        store.batch([PutItems([a]), EnqueueTask(task, {"x": 1})])
        claimed = q.claim_task("w1", lease_seconds=0.5)  # type: ignore[attr-defined]
        assert claimed is not None and claimed[0].task_id == "t1" and claimed[1] == {"x": 1}
        assert claimed[0].status == TaskStatus.RUNNING
        assert q.claim_task("w2", lease_seconds=30) is None  # type: ignore[attr-defined]  # leased
        time.sleep(0.6)
        again = q.claim_task("w2", lease_seconds=30)  # type: ignore[attr-defined]
        assert again is not None and again[0].attempts == 2
        q.fail_task("t1", "boom", retry_in=0.0)  # type: ignore[attr-defined]
        assert q.get_task("t1").status == TaskStatus.QUEUED  # type: ignore[attr-defined]
        assert q.claim_task("w3", lease_seconds=30)[0].attempts == 3  # type: ignore[attr-defined, index]
        with pytest.raises(ConflictError):  # w2 lost the task to w3: its write is refused
            store.batch([PutItems([a.evolve(tags=["stale"])]), CompleteTask("t1", "w2")])
        q.fail_task("t1", "stale worker", retry_in=None, worker="w2")  # type: ignore[attr-defined]
        assert q.get_task("t1").status == TaskStatus.RUNNING  # type: ignore[attr-defined]
        assert store.get([a.id])[0].tags == []  # type: ignore[union-attr]
        store.batch([PutItems([a.evolve(tags=["done"])]), CompleteTask("t1", "w3")])
        done = q.get_task("t1")  # type: ignore[attr-defined]
        assert done.status == TaskStatus.COMPLETED and done.error is None
        assert store.get([a.id])[0].tags == ["done"]  # type: ignore[union-attr]
        assert q.pending_tasks() == 0  # type: ignore[attr-defined]

    def test_task_whose_workers_keep_dying_is_failed(self, store: MemoryStore) -> None:
        """A task that kills its worker every time is failed after max_attempts claims, not
        re-claimed forever."""
        if not store.supports_tasks:
            pytest.skip("backend has no task queue")
        now = datetime.now(timezone.utc)
        task = Task(task_id="t3", kind="k", status=TaskStatus.QUEUED, created_at=now, updated_at=now)
        store.batch([EnqueueTask(task, {})])
        for _ in range(2):
            assert store.claim_task("w", lease_seconds=0.01, max_attempts=2) is not None  # type: ignore[attr-defined]
            time.sleep(0.05)  # the worker "dies": its lease runs out
        assert store.claim_task("w", lease_seconds=30, max_attempts=2) is None  # type: ignore[attr-defined]
        failed = store.get_task("t3")  # type: ignore[attr-defined]
        assert failed.status == TaskStatus.FAILED and "worker lost 2 times" in failed.error

    def test_task_fails_for_good(self, store: MemoryStore) -> None:
        """fail_task(retry_in=None) leaves the task failed with its error, never claimed again."""
        if not store.supports_tasks:
            pytest.skip("backend has no task queue")
        now = datetime.now(timezone.utc)
        store.batch(
            [
                EnqueueTask(
                    Task(task_id="t2", kind="k", status=TaskStatus.QUEUED, created_at=now, updated_at=now), {}
                )
            ]
        )
        assert store.claim_task("w", lease_seconds=30) is not None  # type: ignore[attr-defined]
        store.fail_task("t2", "bad input", retry_in=None)  # type: ignore[attr-defined]
        failed = store.get_task("t2")  # type: ignore[attr-defined]
        assert failed.status == TaskStatus.FAILED and failed.error == "bad input"
        assert store.claim_task("w", lease_seconds=30) is None  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ records

    def test_records_put_get_list_delete(self, make_store: Callable[[], MemoryStore]) -> None:
        """Records are small JSON values by (namespace, key): listed by key prefix in key order,
        deleted by writing None, visible to another handle, namespaces kept apart."""
        store = make_store()
        store.put_records("grant", {"kb:1\x1fbob": {"mode": "read"}, "kb:1\x1fann": {"mode": "write"}})
        store.put_records("grant", {"kb:2\x1fbob": {"mode": "read"}})
        store.put_records("doc", {"kb:1\x1fbob": {"other": True}})
        other = make_store()
        assert other.get_record("grant", "kb:1\x1fbob") == {"mode": "read"}
        assert [k for k, _ in other.list_records("grant", "kb:1\x1f")] == ["kb:1\x1fann", "kb:1\x1fbob"]
        assert len(other.list_records("grant")) == 3
        store.put_records("grant", {"kb:1\x1fbob": None, "kb:1\x1fann": {"mode": "read"}})
        assert other.get_record("grant", "kb:1\x1fbob") is None
        assert other.get_record("grant", "kb:1\x1fann") == {"mode": "read"}
        assert other.get_record("doc", "kb:1\x1fbob") == {"other": True}

    def test_records_are_atomic_with_items(self, store: MemoryStore) -> None:
        """A record written in a batch whose item write fails is not written either."""
        if not store.supports_transactions:
            pytest.skip("backend has no transactions")
        (a,) = put(store, item("x"))
        with pytest.raises(ConflictError):
            store.batch([PutRecords("doc", {"k": {"v": 1}}), PutItems([a], None, [99])])
        assert store.get_record("doc", "k") is None

    def test_records_created_only_if_absent(self, store: MemoryStore) -> None:
        """PutRecords(if_absent=True) creates keys; when one exists already the whole batch
        fails with ConflictError and nothing of it is applied (idempotent adds rely on this to
        store once when two writers race on one key)."""
        if not store.supports_transactions:
            pytest.skip("backend has no transactions")
        store.batch([PutRecords("idem", {"k": {"v": 1}}, if_absent=True)])
        (a,) = [item("never stored")]
        with pytest.raises(ConflictError):
            store.batch([PutItems([a], None), PutRecords("idem", {"k": {"v": 2}}, if_absent=True)])
        assert store.get_record("idem", "k") == {"v": 1}
        assert store.get([a.id]) == [None]
        store.batch([PutRecords("idem", {"k2": {"v": 3}}, if_absent=True)])
        assert store.get_record("idem", "k2") == {"v": 3}

    def test_replace_space_reembeds_a_cube(self, store: MemoryStore) -> None:
        """A PutItems with replace_space swaps every vector of a cube to another model (and
        dimension) at once; vector search then answers in the new space only."""
        a, b = put(store, item("red apples"), item("blue sky"))
        store.batch([VectorSearch(["cube-a"], EMB.embed(["sky"])[0], None, 2, EMB.model_id)])  # view loaded
        other = HashEmbedder(dim=16)
        with pytest.raises(InvalidInputError):
            store.put([a.evolve(embedding_model=other.model_id)], list(other.embed([a.memory])))
        moved = [i.evolve(embedding_model=other.model_id) for i in (a, b)]
        store.batch([PutItems(moved, list(other.embed([a.memory, b.memory])), replace_space=True)])
        hits = store.batch([VectorSearch(["cube-a"], other.embed(["blue sky"])[0], None, 2, other.model_id)])[
            0
        ]
        assert hits[0].id == b.id
        with pytest.raises(InvalidInputError):
            store.batch([VectorSearch(["cube-a"], EMB.embed(["blue sky"])[0], None, 2, EMB.model_id)])
