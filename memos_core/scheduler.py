"""MemScheduler: runs durable background tasks (the fine stage of an add, lifecycle jobs).

Tasks live in the store (:class:`~memos_core.ports.TaskQueue`), so they survive a restart:
a task left ``running`` by a dead process is claimed again once its lease runs out. A
handler returns the writes it wants; the scheduler applies them in one batch together with
the task's completion, so a task is never ``completed`` unless its write happened.

A store without a task table (Weaviate) keeps its tasks in a separate ``queue`` (a
:class:`~memos_core.stores.sqlite.SqliteStore`). A write and its task op then cannot share a
transaction, so :meth:`MemScheduler.apply` orders them to never lose a write:

- enqueue: the items are written to the store first, then the task is enqueued. A crash in
  between leaves the items stored and searchable (fast stage) with no fine stage queued for
  them; nothing written is lost, but that add is never refined.
- completion: the handler's writes go to the store first, then the task is completed. A crash
  in between leaves the task ``running``; its lease runs out and it runs again. The handler
  re-reads the items and every write carries the revisions it read, so the second run sees
  the first run's result (refined items, stored facts) instead of overwriting it blindly.
Transient failures are retried with exponential backoff (tenacity), first in place, then by
re-queueing; after ``max_attempts`` the task is ``failed`` with its error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .errors import ConflictError, LeaseLostError, RequestError, RuntimeFailure, TaskNotFoundError
from .ports import CompleteTask, EnqueueTask, MemoryStore, Op, TaskQueue
from .schema import Task, TaskStatus

__all__ = ["Handler", "MemScheduler"]

log = logging.getLogger(__name__)

#: A handler gets the task payload and returns the write ops to apply with its completion.
Handler = Callable[[dict[str, Any]], Sequence[Op]]


class MemScheduler:
    """Claims and runs tasks from a store's durable queue.

    Args:
        store: where handlers read and write; the task queue too when it is a
            :class:`TaskQueue` (``supports_tasks``) and no ``queue`` is given.
        handlers: task kind -> handler.
        queue: a separate durable queue (a store that is a :class:`TaskQueue`, e.g. a
            :class:`~memos_core.stores.sqlite.SqliteStore`) for a store without one.
        lease_seconds: how long a claim holds before another worker may take the task over.
        max_attempts: claims of one task before it is marked failed.
        poll_interval: seconds between looks at the queue when idle (writes from this
            process wake the worker at once).
        max_task_seconds: a handler running longer stops having its lease renewed.
    """

    def __init__(
        self,
        store: MemoryStore,
        handlers: dict[str, Handler],
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 5,
        poll_interval: float = 0.5,
        retry_base: float = 0.5,
        max_task_seconds: float = 600.0,
        queue: TaskQueue | None = None,
    ) -> None:
        if queue is None:
            if not isinstance(store, TaskQueue):
                raise TypeError(f"{type(store).__name__} has no durable task queue; pass queue=...")
            queue = store
        if not isinstance(queue, MemoryStore):  # tasks are enqueued and completed by batch ops
            raise TypeError(f"the task queue must be a MemoryStore, not {type(queue).__name__}")
        self.store = store
        self.queue: TaskQueue = queue  #: the store itself, or the separate queue
        self._queue_store: MemoryStore = queue
        #: Tasks live apart from the items: writes and task ops are two batches (see :meth:`apply`).
        self.separate_queue = queue is not store
        self.handlers = dict(handlers)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.retry_base = retry_base
        self.max_task_seconds = max_task_seconds
        self._current: tuple[str, float] | None = None  # the running task and its start
        self._lease_lost = threading.Event()
        self._beat: threading.Thread | None = None
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one task at a time per scheduler

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run tasks in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"memos-scheduler-{self.worker}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._thread, self._beat):
            if thread is not None:
                thread.join(timeout)
        self._thread = self._beat = None

    def register(self, kind: str, handler: Handler) -> None:
        """Run tasks of ``kind`` with ``handler`` (plugins add their background jobs this way).

        Tasks are durable, so a task of ``kind`` enqueued by another process is run by any
        scheduler that registered ``kind``; one that never did fails the task with "no handler"."""
        if not kind or not isinstance(kind, str):
            raise RequestError(f"task kind must be a non-empty string, not {kind!r}")
        self.handlers[kind] = handler

    def submit(self, kind: str, payload: dict[str, Any], *, memory_ids: Sequence[str] = ()) -> Task:
        """Enqueue a durable task of a registered ``kind`` and wake the worker."""
        if kind not in self.handlers:
            raise RequestError(f"no handler is registered for task kind {kind!r}")
        task = Task.queued(kind, memory_ids)
        self._queue_store.batch([EnqueueTask(task, dict(payload))])
        self.notify()
        return task

    def apply(self, ops: Sequence[Op]) -> None:
        """Apply writes together with task ops (:class:`EnqueueTask`, :class:`CompleteTask`).

        One transaction when the store is the queue. With a separate queue, the store's ops
        first and the task ops after them (module docstring): a crash in between may leave a
        write without its task op, never a task op without its write."""
        if not self.separate_queue:
            self.store.batch(ops)
            return
        writes = [op for op in ops if not isinstance(op, (EnqueueTask, CompleteTask))]
        tasks = [op for op in ops if isinstance(op, (EnqueueTask, CompleteTask))]
        if writes:
            self.store.batch(writes)
        if tasks:
            self._queue_store.batch(tasks)

    def notify(self) -> None:
        """A task was enqueued: look now instead of at the next poll."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # never let the worker thread die; the task stays leased
                log.exception("scheduler loop error")
                ran = False
            if not ran:
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    # ------------------------------------------------------------------ running

    def run_once(self) -> bool:
        """Claim and run one ready task. Returns False when none was ready."""
        with self._lock:
            claimed = self.queue.claim_task(
                self.worker, lease_seconds=self.lease_seconds, max_attempts=self.max_attempts
            )
            if claimed is None:
                return False
            task, payload = claimed
            self._execute(task, payload)
            return True

    def run_until_idle(self, timeout: float = 60.0) -> None:
        """Run ready tasks in this thread until none is left (used by inline mode and tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.run_once():
            pass

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Block until ``task_id`` is completed or failed (running ready tasks in this thread
        when no worker thread runs), or ``timeout`` passes. Returns the task as it then is."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.queue.get_task(task_id)
            if task is None:
                raise TaskNotFoundError(f"no task {task_id}")
            if task.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                return task
            if time.monotonic() > deadline:
                return task
            if self._thread is None and self.run_once():
                continue
            time.sleep(0.01)

    def _execute(self, task: Task, payload: dict[str, Any]) -> None:
        handler = self.handlers.get(task.kind)
        if handler is None:
            self._fail(task, f"no handler for task kind {task.kind!r}", retry_in=None)
            return
        self._lease_lost.clear()
        self._current = (task.task_id, time.monotonic())
        self._ensure_heartbeat()
        try:
            # In-place retries for races and busy stores: the handler re-reads on each try.
            # The completion names this worker, so if our lease was lost meanwhile the whole
            # write rolls back instead of racing the worker that took the task over.
            for attempt in Retrying(
                retry=retry_if_exception(_retry_in_place),
                wait=wait_exponential(multiplier=self.retry_base / 10, max=2.0),
                stop=stop_after_attempt(3),
                reraise=True,
            ):
                with attempt:
                    if self._lease_lost.is_set():
                        raise LeaseLostError(f"task {task.task_id} was taken over by another worker")
                    ops = list(handler(payload))
                    if self.separate_queue and not self.queue.renew_task(
                        task.task_id, self.worker, lease_seconds=self.lease_seconds
                    ):  # the completion cannot roll the writes back: check the lease before them
                        raise LeaseLostError(f"task {task.task_id} was taken over by another worker")
                    self.apply([*ops, CompleteTask(task.task_id, self.worker)])
        except LeaseLostError:
            log.info("task %s was taken over by another worker; leaving it to them", task.task_id)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, RequestError) or task.attempts >= self.max_attempts:
                # A bad request fails the same way every time: do not retry it.
                log.error("task %s (%s) failed for good: %s", task.task_id, task.kind, error)
                self._fail(task, error, retry_in=None)
            else:
                delay = self.retry_base * (2 ** (task.attempts - 1))
                log.warning(
                    "task %s failed (attempt %d), retrying in %.1fs: %s",
                    task.task_id,
                    task.attempts,
                    delay,
                    error,
                )
                self._fail(task, error, retry_in=delay)
        finally:
            self._current = None

    def _fail(self, task: Task, error: str, *, retry_in: float | None) -> None:
        self.queue.fail_task(task.task_id, error, retry_in=retry_in, worker=self.worker)

    def _ensure_heartbeat(self) -> None:
        """One long-lived thread per scheduler renews the running task's lease every third of
        its length, for at most ``max_task_seconds``: a hung handler then loses its lease, and
        the task is retried elsewhere (and failed after ``max_attempts``)."""
        if self._beat is not None and self._beat.is_alive():
            return

        def beat() -> None:
            while not self._stop.wait(self.lease_seconds / 3):
                current = self._current
                if current is None or self._lease_lost.is_set():
                    continue
                task_id, started = current
                if time.monotonic() - started > self.max_task_seconds:
                    log.error(
                        "task %s has run for over %.0fs; no longer renewing its lease",
                        task_id,
                        self.max_task_seconds,
                    )
                    self._lease_lost.set()
                    continue
                try:
                    if not self.queue.renew_task(task_id, self.worker, lease_seconds=self.lease_seconds):
                        self._lease_lost.set()
                except Exception:
                    log.exception("could not renew the lease of task %s", task_id)

        self._beat = threading.Thread(target=beat, name=f"memos-lease-{self.worker}", daemon=True)
        self._beat.start()


def _retry_in_place(exc: BaseException) -> bool:
    """Races and transient store failures are worth an immediate re-read and retry; a lost
    lease is not (the new owner does the work)."""
    return isinstance(exc, (ConflictError, RuntimeFailure)) and not isinstance(exc, LeaseLostError)
