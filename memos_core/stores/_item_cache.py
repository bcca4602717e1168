"""Decoded items kept between reads of the SQLite store.

Decoding a row (six JSON columns, then pydantic validation) is most of what loading an item
costs: ~50 µs, so ~4 ms for the 80 items a search loads. An entry is valid for one version of
its row, named by ``(seq, revision)``: every write of a row bumps its revision (the store's own
writes and other processes' alike, the upsert and the soft delete), and an id written again after
a hard delete gets a new ``seq`` (``AUTOINCREMENT``). So a read first fetches those two numbers
(and the access statistics, the one thing written without a revision bump) and decodes only
the rows whose version it has not seen. Items are immutable, so entries are shared as they are.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from ..schema import MemoryItem, parse_time


class _Entry(NamedTuple):
    seq: int
    revision: int
    access_count: int
    last_accessed_at: str | None
    item: MemoryItem


class ItemCache:
    """At most ``size`` decoded items, least recently read dropped first (0: off)."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("item cache size must be >= 0")
        self.size = size
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, item_id: str, seq: int, revision: int, access_count: int, last_accessed_at: str | None
    ) -> MemoryItem | None:
        """The item at this version of its row, with these access statistics; None if unseen."""
        with self._lock:
            entry = self._entries.get(item_id)
            if entry is None or entry.seq != seq or entry.revision != revision:
                return None
            self._entries.move_to_end(item_id)
        if entry.access_count == access_count and entry.last_accessed_at == last_accessed_at:
            return entry.item
        item = entry.item.model_copy(
            update={
                "access_count": access_count,
                "last_accessed_at": None if last_accessed_at is None else parse_time(last_accessed_at),
            }
        )
        self.put(item_id, seq, revision, access_count, last_accessed_at, item)
        return item

    def put(
        self,
        item_id: str,
        seq: int,
        revision: int,
        access_count: int,
        last_accessed_at: str | None,
        item: MemoryItem,
    ) -> None:
        if not self.size:
            return
        with self._lock:
            self._entries[item_id] = _Entry(seq, revision, access_count, last_accessed_at, item)
            self._entries.move_to_end(item_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
