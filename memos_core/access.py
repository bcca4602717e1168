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

import logging
import threading
from collections import defaultdict
from datetime import datetime

from .ports import MemoryStore, TouchItems

__all__ = ["ReadLog"]

log = logging.getLogger(__name__)


class ReadLog:
    """Reads waiting to be written to ``store`` (``delay`` 0: written by each call at once)."""

    def __init__(self, store: MemoryStore, *, delay: float = 0.5) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.store = store
        self.delay = delay
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._lock = threading.Lock()  # guards _pending and the thread
        self._flush_lock = threading.Lock()  # one batch written at a time, in order
        self._wake = threading.Event()
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
                raise

    def _loop(self) -> None:
        while not self._stop.wait(self.delay):
            try:
                self.flush()
            except Exception:
                log.exception("writing access statistics failed; retrying in %.1fs", self.delay)
            with self._lock:
                if not self._pending:  # idle: the next read starts a new thread
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return

    def close(self) -> None:
        """Stop the background thread and write what is left."""
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self.flush()
