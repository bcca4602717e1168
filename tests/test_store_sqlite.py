"""The conformance suite against the embedded SQLite store, plus SQLite-only behaviour."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from memos_core import MemoryItem, MemoryStore, SqliteStore, StoreError
from memos_core.stores._sqlite_schema import SCHEMA_VERSION

from .store_conformance import MemoryStoreConformance


class TestSqliteConformance(MemoryStoreConformance):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[[], MemoryStore]]:
        opened: list[SqliteStore] = []

        def make() -> MemoryStore:
            store = SqliteStore.from_path(tmp_path / "db")
            store.setup()
            opened.append(store)
            return store

        yield make
        for s in opened:
            s.close()


def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    store = SqliteStore.from_path(tmp_path)
    store.setup()
    store._run(lambda c: c.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'"), write=True)
    store.close()
    again = SqliteStore.from_path(tmp_path)
    with pytest.raises(StoreError, match="schema version 999"):
        again.setup()
    again.close()


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A file made before items had ``context`` opens, keeps its items and takes new ones."""
    import sqlite3

    import numpy as np

    from memos_core import Context, MemoryItem
    from memos_core.ports import PutItems

    store = SqliteStore.from_path(tmp_path)
    store.setup()
    old = MemoryItem(cube_id="c", user_id="u", memory="Ana: I keep bees")
    store.batch([PutItems([old], [np.ones(4, dtype=np.float32) / 2])])
    store.close()
    conn = sqlite3.connect(tmp_path / "memos.db")  # turn it back into a version-1 file
    conn.execute("ALTER TABLE items DROP COLUMN context")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    again = SqliteStore.from_path(tmp_path)
    again.setup()
    assert again.get([old.id])[0] == old
    new = MemoryItem(
        cube_id="c", user_id="u", memory="Ben: me too", context=Context(before=["Ana: I keep bees"])
    )
    again.batch([PutItems([new], [np.ones(4, dtype=np.float32) / 2])])
    got = again.get([new.id])[0]
    assert got is not None and got.context == new.context
    again.close()


def test_a_version_2_file_gets_the_cube_column_in_its_text_index(tmp_path: Path) -> None:
    """Before version 3 the FTS table held text only: opening such a file rebuilds it with
    each row's cube, so text search finds every old item, in its own cube only."""
    import sqlite3

    from memos_core import MemoryItem

    store = SqliteStore.from_path(tmp_path)
    store.setup()
    mine = MemoryItem(cube_id="c", user_id="u", memory="Ana: I keep bees")
    theirs = MemoryItem(cube_id="d", user_id="v", memory="Bo: bees sting")
    store.put([mine, theirs])
    store.close()
    conn = sqlite3.connect(tmp_path / "memos.db")  # turn it back into a version-2 file
    texts = conn.execute("SELECT rowid, text FROM items_fts").fetchall()
    conn.execute("DROP TABLE items_fts")
    conn.execute(
        "CREATE VIRTUAL TABLE items_fts USING fts5(text, tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    conn.executemany("INSERT INTO items_fts(rowid, text) VALUES (?, ?)", texts)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    again = SqliteStore.from_path(tmp_path)
    again.setup()
    assert [h.id for h in again.search_text(["c"], "bees")] == [mine.id]
    assert [h.id for h in again.search_text(["c", "d"], "bees", limit=5)] != []
    columns = again._run(lambda c: [r[1] for r in c.execute("PRAGMA table_info(items_fts)")], write=False)
    assert columns == ["text", "cube"]
    version = again._run(
        lambda c: c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0], write=False
    )
    assert version == str(SCHEMA_VERSION)
    again.close()


def test_wal_mode_is_on(tmp_path: Path) -> None:
    store = SqliteStore.from_path(tmp_path)
    store.setup()
    mode = store._run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0], write=False)
    assert mode == "wal"
    store.close()


def test_change_log_is_pruned_and_lagging_readers_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change log stays bounded; a reader whose view predates the pruned part reloads."""
    from memos_core.testing import HashEmbedder

    from .store_conformance import item, put

    monkeypatch.setattr(SqliteStore, "CHANGES_KEPT", 5)
    reader, writer = SqliteStore.from_path(tmp_path), SqliteStore.from_path(tmp_path)
    reader.setup()
    first = put(writer, item("first note about kites"))[0]
    q = HashEmbedder(dim=32).embed(["note about kites 19"])[0]
    assert [h.id for h in reader.search_vector(["cube-a"], q, limit=1)] == [first.id]
    for i in range(19):
        put(writer, item(f"note about kites {i}"))
    last = put(writer, item("final zebra balloon"))[0]
    count = writer._run(lambda c: c.execute("SELECT COUNT(*) FROM changes").fetchone()[0], write=False)
    assert count <= 11
    zebra = HashEmbedder(dim=32).embed(["final zebra balloon"])[0]
    assert reader.search_vector(["cube-a"], zebra, limit=1)[0].id == last.id
    assert len(reader.search_vector(["cube-a"], q, limit=50)) == 21
    reader.close()
    writer.close()


def test_search_text_items_without_a_transaction_fills_its_limit(tmp_path: Path) -> None:
    """The base class reads the items after the search: hits whose items changed in between are
    dropped and more are asked for, so the caller still gets ``limit`` when there are enough."""

    class Untransacted(SqliteStore):
        search_text_items = MemoryStore.search_text_items
        gone: frozenset[str] = frozenset()

        def get(self, ids: Sequence[str], *, cached: bool = False) -> list[MemoryItem | None]:
            items = super().get(ids, cached=cached)
            return [None if i in self.gone else it for i, it in zip(ids, items, strict=True)]

    store = Untransacted.from_path(tmp_path)
    store.setup()
    items = [MemoryItem(cube_id="c", memory=f"pear {'tart ' * i}") for i in range(30)]
    store.put(items)
    best = store.search_text(["c"], "pear", limit=30)
    store.gone = frozenset(h.id for h in best[:8])  # the 8 best "changed" between search and read
    found = store.search_text_items(["c"], "pear", limit=5)
    assert [h.id for h, _ in found] == [h.id for h in best[8:13]]
    assert [i.id for _, i in found] == [h.id for h, _ in found]
    assert len(store.search_text_items(["c"], "pear", limit=25)) == 22  # all that are left
    store.close()
