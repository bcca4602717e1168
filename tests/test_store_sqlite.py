"""The conformance suite against the embedded SQLite store, plus SQLite-only behaviour."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memos_core import MemoryStore, SqliteStore, StoreError

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


def test_wal_mode_is_on(tmp_path: Path) -> None:
    store = SqliteStore.from_path(tmp_path)
    store.setup()
    mode = store._run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0], write=False)
    assert mode == "wal"
    store.close()
