"""Access statistics written behind the search.

Every search counts a read of each memory it returns (``access_count``, ``last_accessed_at``:
the usage signal of ranking and what migration into KV caches and adapters reads). Writing them
in the search's own transaction made every search a durable write: on SQLite it rewrote each
returned row and waited for an fsync, about a third of a lexical search. :class:`ReadLog` keeps
the reads in memory and writes them in one batch every ``delay`` seconds from a background
thread, and at once whenever :meth:`ReadLog.flush` is called: MemOS calls it before every
call that shows items or filters on their statistics, and on close, so within a process the
counts are always exact. Other processes see them at most ``delay`` seconds late; a crash loses
at most the last ``delay`` seconds of read counts, never a memory.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import defaultdict
from datetime import datetime

from .ports import MemoryStore, TouchItems

__all__ = ["ReadLog"]

log = logging.getLogger(__name__)


class ReadLog:
    """Reads waiting to be written to ``store`` (``delay`` 0: written by each call at once).

    One writer thread per log, started by the first read and sleeping while there is nothing to
    write (so it keeps the one store connection it opened). Reads still pending when the
    interpreter exits without :meth:`close` are written by an ``atexit`` hook; a forked child
    drops its parent's pending reads (the parent writes them) and starts its own writer.
    """

    def __init__(self, store: MemoryStore, *, delay: float = 0.5) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.store = store
        self.delay = delay
        self._reset()
        _LOGS.add(self)

    def _reset(self) -> None:
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._lock = threading.Lock()  # guards _pending, _thread and _wake
        self._flush_lock = threading.Lock()  # one batch written at a time, in order
        self._wake = threading.Event()  # set while reads wait to be written
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, ids: list[str], at: datetime) -> None:
        """Count one read of each of ``ids`` (duplicates count once) at ``at``."""
        if not ids:
            return
        if self.delay == 0:
            self.store.batch([TouchItems(list(dict.fromkeys(ids)), at)])
            return
        with self._lock:
            for item_id in dict.fromkeys(ids):
                n, last = self._pending.get(item_id, (0, at))
                self._pending[item_id] = (n + 1, max(last, at))
            self._wake.set()
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="memos-reads", daemon=True)
                self._thread.start()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> None:
        """Write every read counted so far (a no-op when there is none)."""
        with self._flush_lock:
            with self._lock:
                if not self._pending:
                    return
                taken, self._pending = self._pending, {}
                self._wake.clear()  # reads counted from here on set it again
            # TouchItems adds one read per id: ids read n times go in n ops, each group stamped
            # with its latest read (the time is exact to within ``delay``).
            groups: dict[int, list[str]] = defaultdict(list)
            stamps: dict[int, datetime] = {}
            for item_id, (n, at) in taken.items():
                groups[n].append(item_id)
                stamps[n] = max(stamps.get(n, at), at)
            ops = [TouchItems(ids, stamps[n]) for n, ids in groups.items() for _ in range(n)]
            try:
                self.store.batch(ops)
            except BaseException:
                with self._lock:  # not written: keep them for the next flush
                    for item_id, (n, at) in taken.items():
                        m, last = self._pending.get(item_id, (0, at))
                        self._pending[item_id] = (n + m, max(last, at))
                    self._wake.set()
                raise

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()  # until a read (or close) comes
            if self._stop.wait(self.delay):  # let reads gather, then write them together
                return
            try:
                self.flush()
            except Exception:
                log.exception("writing access statistics failed; retrying in %.1fs", self.delay)

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self.flush()
        _LOGS.discard(self)


_LOGS: weakref.WeakSet[ReadLog] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """A process that never closed its MemOS still writes its last reads."""
    for read_log in list(_LOGS):
        try:
            read_log.flush()
        except Exception:  # the store may be closed or gone by now
            log.warning("access statistics not written at exit", exc_info=True)


def _after_fork_in_child() -> None:
    for read_log in list(_LOGS):
        read_log._reset()  # the parent writes its own pending reads; its thread is not ours


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
