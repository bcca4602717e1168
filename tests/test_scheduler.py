"""MemScheduler: retries with backoff, failure after max attempts, never a false 'completed'."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from memos_core import ConflictError, MemScheduler, SqliteStore, StoreError, TaskStatus
from memos_core.ports import EnqueueTask, Op, PutItems
from memos_core.schema import MemoryItem, Task, new_id, utcnow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.from_path(tmp_path)
    s.setup()
    yield s
    s.close()


def enqueue(store: SqliteStore, kind: str, payload: dict[str, Any] | None = None) -> str:
    now = utcnow()
    task = Task(task_id=new_id(), kind=kind, status=TaskStatus.QUEUED, created_at=now, updated_at=now)
    store.batch([EnqueueTask(task, payload or {})])
    return task.task_id


def run_until(sched: MemScheduler, store: SqliteStore, tid: str, status: TaskStatus) -> Task:
    """Run the scheduler until the task reaches ``status`` (re-queued tasks wait out a backoff)."""
    for _ in range(100):
        sched.run_until_idle()
        task = store.get_task(tid)
        assert task is not None
        if task.status == status:
            break
        time.sleep(0.05)
    return task


def test_transient_failures_are_retried_until_success(store: SqliteStore) -> None:
    calls = []

    def flaky(payload: dict[str, Any]) -> Sequence[Op]:
        calls.append(1)
        if len(calls) < 5:  # 3 in-place tries fail, the task is re-queued, then succeeds
            raise StoreError("disk hiccup")
        return [PutItems([MemoryItem(cube_id="c", memory="written")])]

    sched = MemScheduler(store, {"flaky": flaky}, retry_base=0.01)
    tid = enqueue(store, "flaky")
    final = run_until(sched, store, tid, TaskStatus.COMPLETED)
    assert final.status == TaskStatus.COMPLETED and final.attempts == 2
    assert store.list_items(["c"])[1] == 1


def test_permanent_failure_is_reported_with_its_error(store: SqliteStore) -> None:
    def broken(payload: dict[str, Any]) -> Sequence[Op]:
        raise ValueError("cannot parse payload")

    sched = MemScheduler(store, {"broken": broken}, max_attempts=2, retry_base=0.01)
    tid = enqueue(store, "broken")
    task = run_until(sched, store, tid, TaskStatus.FAILED)
    assert task.status == TaskStatus.FAILED and "cannot parse payload" in (task.error or "")
    assert task.attempts == 2


def test_a_failed_write_never_reports_completed(store: SqliteStore) -> None:
    """The handler 'succeeds' but its write conflicts: the task must not become completed."""
    item = MemoryItem(cube_id="c", memory="v1")
    store.put([item])

    def stale(payload: dict[str, Any]) -> Sequence[Op]:
        return [PutItems([item.evolve(memory="stale")], None, [41])]

    sched = MemScheduler(store, {"stale": stale}, max_attempts=1, retry_base=0.01)
    tid = enqueue(store, "stale")
    sched.run_until_idle()
    task = store.get_task(tid)
    assert task is not None and task.status == TaskStatus.FAILED
    assert ConflictError.__name__ in (task.error or "")
    assert store.get([item.id])[0].memory == "v1"  # type: ignore[union-attr]


def test_unknown_kind_fails_clearly(store: SqliteStore) -> None:
    sched = MemScheduler(store, {})
    tid = enqueue(store, "mystery")
    sched.run_until_idle()
    task = store.get_task(tid)
    assert task is not None and task.status == TaskStatus.FAILED and "mystery" in (task.error or "")


def test_thread_mode_runs_tasks_in_the_background(store: SqliteStore) -> None:
    sched = MemScheduler(store, {"ok": lambda p: []}, poll_interval=0.05)
    sched.start()
    try:
        tid = enqueue(store, "ok")
        sched.notify()
        assert sched.wait(tid, timeout=10).status == TaskStatus.COMPLETED
    finally:
        sched.stop()


def test_a_hung_handler_loses_its_lease_and_its_late_write_is_refused(store: SqliteStore) -> None:
    """A handler that outlives max_task_seconds stops renewing; another worker takes the task
    over and completes it; the first worker's late write rolls back and it reports nothing."""
    item = MemoryItem(cube_id="c", memory="original")
    store.put([item])
    release = threading.Event()

    def slow(payload: dict[str, Any]) -> Sequence[Op]:
        release.wait(10)
        return [PutItems([item.evolve(memory="late write")])]

    def quick(payload: dict[str, Any]) -> Sequence[Op]:
        return [PutItems([item.evolve(memory="new owner")])]

    first = MemScheduler(store, {"k": slow}, lease_seconds=0.3, max_task_seconds=0.2)
    second = MemScheduler(store, {"k": quick}, lease_seconds=30)
    tid = enqueue(store, "k")
    runner = threading.Thread(target=first.run_once)
    runner.start()
    while store.get_task(tid).status != TaskStatus.RUNNING:  # type: ignore[union-attr]
        time.sleep(0.01)  # the first worker holds the task
    deadline = time.monotonic() + 10
    while not second.run_once():  # claimable once the first lease lapses
        assert time.monotonic() < deadline, "the hung task's lease never lapsed"
        time.sleep(0.05)
    release.set()
    runner.join(10)
    first.stop()
    task = store.get_task(tid)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.attempts == 2
    assert store.get([item.id])[0].memory == "new owner"  # type: ignore[union-attr]


def test_a_long_handler_keeps_its_lease_by_heartbeat(store: SqliteStore) -> None:
    def slow(payload: dict[str, Any]) -> Sequence[Op]:
        time.sleep(1.0)
        return []

    owner = MemScheduler(store, {"k": slow}, lease_seconds=0.3)
    thief = MemScheduler(store, {"k": slow}, lease_seconds=0.3)
    tid = enqueue(store, "k")
    runner = threading.Thread(target=owner.run_once)
    runner.start()
    while store.get_task(tid).status != TaskStatus.RUNNING:  # type: ignore[union-attr]
        time.sleep(0.01)
    stolen = False
    while runner.is_alive():
        stolen = stolen or thief.run_once()
        time.sleep(0.05)
    owner.stop()
    assert not stolen
    task = store.get_task(tid)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.attempts == 1


def test_plugins_register_task_kinds_and_submit_durable_tasks(store: SqliteStore) -> None:
    """register() adds a task kind (how kv_accel runs migrations); submit() enqueues it durably
    and its ops commit with the completion. An unregistered kind is refused at submit, and a
    scheduler that never registered it fails the task instead of dropping it."""
    from memos_core import RequestError
    from memos_core.ports import PutRecords

    seen: list[dict[str, Any]] = []

    def handler(payload: dict[str, Any]) -> Sequence[Op]:
        seen.append(payload)
        return [PutRecords("plugin", {payload["key"]: {"done": True}})]

    sched = MemScheduler(store, {})
    sched.register("plugin_job", handler)
    task = sched.submit("plugin_job", {"key": "k1"}, memory_ids=["m1"])
    assert task.status == TaskStatus.QUEUED and task.memory_ids == ["m1"]
    done = run_until(sched, store, task.task_id, TaskStatus.COMPLETED)
    assert done.status == TaskStatus.COMPLETED and seen == [{"key": "k1"}]
    assert store.get_record("plugin", "k1") == {"done": True}
    with pytest.raises(RequestError, match="no handler"):
        sched.submit("unknown_job", {})
    with pytest.raises(RequestError):
        sched.register("", handler)
    other = sched.submit("plugin_job", {"key": "k2"})
    stranger = MemScheduler(store, {}, max_attempts=1)
    failed = run_until(stranger, store, other.task_id, TaskStatus.FAILED)
    assert "no handler" in (failed.error or "")
