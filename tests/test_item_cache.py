"""The SQLite store's cache of decoded items: a read never returns a version of a row other
than the one committed now, whoever wrote it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from memos_core import ConflictError, MemoryItem
from memos_core.ports import DeleteItems, GetItems, PutItems, TouchItems
from memos_core.stores.sqlite import SqliteStore


@pytest.fixture
def two(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two handles on one database, as two processes have."""
    a, b = SqliteStore(tmp_path / "m.db"), SqliteStore(tmp_path / "m.db")
    a.setup()
    yield a, b
    a.close()
    b.close()


def test_reads_come_from_the_cache_until_the_row_changes(two) -> None:  # type: ignore[no-untyped-def]
    a, _ = two
    item = MemoryItem(cube_id="c", memory="first", tags=["t"])
    a.put([item])
    first = a.get([item.id], cached=True)[0]
    assert first is not None and a.get([item.id], cached=True)[0] is first  # decoded once
    a.put([first.evolve(memory="second")])
    got = a.get([item.id], cached=True)[0]
    assert got is not None and (got.memory, got.revision) == ("second", 2)


def test_another_handles_writes_are_seen(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    item = MemoryItem(cube_id="c", memory="first")
    a.put([item])
    assert a.get([item.id], cached=True)[0].memory == "first"  # type: ignore[union-attr]
    b.put([item.evolve(memory="from b")])
    assert a.get([item.id], cached=True)[0].memory == "from b"  # type: ignore[union-attr]
    b.batch([DeleteItems(["c"], ids=[item.id])])
    assert a.get([item.id], cached=True)[0].status == "deleted"  # type: ignore[union-attr]
    b.batch([TouchItems([item.id], datetime(2026, 1, 2, tzinfo=timezone.utc))])
    got = a.get([item.id], cached=True)[0]
    assert got is not None and got.access_count == 1
    assert got.last_accessed_at == datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_an_id_written_again_after_a_hard_delete_is_not_the_old_item(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    item = MemoryItem(cube_id="c", memory="old text")
    a.put([item])
    assert a.get([item.id], cached=True)[0].memory == "old text"  # type: ignore[union-attr]
    b.batch([DeleteItems(["c"], ids=[item.id], hard=True)])
    assert a.get([item.id], cached=True) == [None]
    b.put([MemoryItem(id=item.id, cube_id="c", memory="new text")])  # revision 1 again, new row
    got = a.get([item.id], cached=True)[0]
    assert got is not None and (got.memory, got.revision) == ("new text", 1)


def test_a_rolled_back_write_never_reaches_the_cache(two) -> None:  # type: ignore[no-untyped-def]
    a, _ = two
    item, other = MemoryItem(cube_id="c", memory="kept"), MemoryItem(cube_id="c", memory="x")
    a.put([item, other])
    with pytest.raises(ConflictError):
        a.batch(
            [
                PutItems([item.evolve(memory="rolled back")]),
                GetItems([item.id]),  # reads the write's own, uncommitted revision 2
                PutItems([other.evolve(memory="y")], if_revisions=[7]),  # fails: all rolled back
            ]
        )
    a.put([item.evolve(memory="committed")])  # the revision 2 that exists
    got = a.get([item.id], cached=True)[0]
    assert got is not None and (got.memory, got.revision) == ("committed", 2)


def test_the_cache_is_bounded_and_can_be_off(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db", item_cache=3)
    store.setup()
    items = [MemoryItem(cube_id="c", memory=f"m{i}") for i in range(10)]
    store.put(items)
    got = store.get([i.id for i in items], cached=True)
    assert [i.memory for i in got] == [f"m{i}" for i in range(10)]  # type: ignore[union-attr]
    assert len(store._items._entries) == 3
    store.close()
    off = SqliteStore(tmp_path / "m.db", item_cache=0)
    assert off.get([items[0].id], cached=True)[0] is not off.get([items[0].id], cached=True)[0]
    off.close()
    with pytest.raises(ValueError):
        SqliteStore(tmp_path / "m.db", item_cache=-1)


def test_only_cached_reads_share_items(two) -> None:  # type: ignore[no-untyped-def]
    """A plain get is the caller's own to mutate: it neither comes from nor goes into the cache."""
    a, _ = two
    item = MemoryItem(cube_id="c", memory="m", info={"nested": {"k": 1}}, tags=["t"])
    a.put([item])
    mine = a.get([item.id])[0]
    assert mine is not None and mine is not a.get([item.id])[0]
    mine.info["nested"]["k"] = 999  # a caller mutating what it was given (items are frozen, dicts are not)
    mine.tags.append("x")
    shared = a.get([item.id], cached=True)[0]
    assert shared is not None and shared.info == {"nested": {"k": 1}} and shared.tags == ["t"]
    assert a.get([item.id])[0] is not shared
