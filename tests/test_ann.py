"""The SQLite store's HNSW vector index: always in step with the exact matrix, never fewer
hits than exact search, saved next to the database and verified when loaded.

Each test compares a store with the index against the exact path on the same file; when one
fails, look at ``memos_core/stores/_vectors.py`` (the matrix/index bookkeeping) or the
candidate/fallback loop in ``SqliteStore._vector_search``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from memos_core import MemoryItem, MemoryStore, SqliteStore
from memos_core.filters import parse_filter
from memos_core.stores._ann import AnnIndex, ann_file
from memos_core.stores.sqlite import AnnConfig

from .store_conformance import T0, MemoryStoreConformance

DIM = 32
CUBE = "cube-a"
MODEL = f"rand/{DIM}"
#: An index from the first vector on, built in the search that needs it.
EAGER = AnnConfig(threshold=1, background=False)


class TestSqliteWithIndexConformance(MemoryStoreConformance):
    """The whole conformance suite with every cube indexed from its first vector."""

    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[[], MemoryStore]]:
        opened: list[SqliteStore] = []

        def make() -> MemoryStore:
            store = SqliteStore.from_path(tmp_path / "db", ann=EAGER)
            store.setup()
            opened.append(store)
            return store

        yield make
        for s in opened:
            s.close()


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def items(n: int, *, start: int = 0, convs: int = 10) -> list[MemoryItem]:
    return [
        MemoryItem(
            cube_id=CUBE,
            memory=f"note {start + i}",
            conversation_id=f"c{(start + i) % convs}",
            embedding_model=MODEL,
            created_at=T0,
            updated_at=T0,
        )
        for i in range(n)
    ]


def open_store(folder: Path, ann: AnnConfig | None = EAGER) -> SqliteStore:
    store = SqliteStore.from_path(folder, ann=ann or AnnConfig(threshold=None))
    store.setup()
    return store


def fill(store: SqliteStore, n: int, rng: np.random.Generator, **kw: int) -> list[MemoryItem]:
    made = items(n, **kw)
    store.put(made, list(unit(rng, n)))
    return made


def in_step(store: SqliteStore, cube_id: str = CUBE) -> None:
    """The cube's index holds exactly the matrix's keys, with the matrix's vectors."""
    cube = store._cubes[cube_id]
    assert cube.ann is not None
    n = len(cube)
    assert sorted(cube.ann.keys().tolist()) == sorted(cube.seqs[:n].tolist())
    got = cube.ann.vectors(cube.seqs[:n])
    cos = np.einsum("ij,ij->i", got, cube.mat[:n]) / np.linalg.norm(got, axis=1)
    assert np.all(cos > 0.99)


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.id for h in hits]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_recall_against_exact_search(tmp_path: Path, rng: np.random.Generator) -> None:
    """HNSW candidates rescored exactly find (almost) what the exact scan finds."""
    store, exact = open_store(tmp_path), open_store(tmp_path, ann=None)
    fill(store, 2000, rng)
    queries = unit(rng, 50)
    found = 0
    for q in queries:
        a, b = store.search_vector([CUBE], q, limit=10), exact.search_vector([CUBE], q, limit=10)
        assert len(a) == len(b) == 10
        found += len(set(ids(a)) & set(ids(b)))
        assert a[0].score == pytest.approx(b[0].score) or a[0].id != b[0].id
    assert store.stats()["vector_index"][CUBE]["index"] == "hnsw"
    assert found / (10 * len(queries)) >= 0.95
    store.close()
    exact.close()


def test_index_follows_upserts_removes_and_rewrites(tmp_path: Path, rng: np.random.Generator) -> None:
    """Every change to the matrix reaches the index: new vectors are found at once, deleted
    ones never come back, an id erased and written again (a new row) has one key."""
    store = open_store(tmp_path)
    made = fill(store, 300, rng)
    store.search_vector([CUBE], unit(rng, 1)[0], limit=1)  # builds the index
    moved = unit(rng, 1)[0]
    store.put([made[0]], [moved])  # new vector for an existing item
    assert store.search_vector([CUBE], moved, limit=1)[0].id == made[0].id
    store.delete([CUBE], ids=[made[1].id])  # soft
    store.delete([CUBE], ids=[made[2].id], hard=True)
    for gone in (made[1], made[2]):
        q = store.get_embeddings([made[3].id])[made[3].id]
        assert gone.id not in ids(store.search_vector([CUBE], q, limit=300))
    again = unit(rng, 1)[0]
    store.put([made[2]], [again])  # the erased id written again: a new seq
    assert store.search_vector([CUBE], again, limit=1)[0].id == made[2].id
    fill(store, 50, rng, start=300)
    in_step(store)
    assert len(store.search_vector([CUBE], again, limit=1000)) == 349
    store.close()


def test_writes_of_another_process_reach_the_index(tmp_path: Path, rng: np.random.Generator) -> None:
    """Another handle (as another process would) writes; this one catches up from the change
    log and its index stays exactly in step."""
    reader, writer = open_store(tmp_path), open_store(tmp_path, ann=None)
    made = fill(writer, 400, rng)
    reader.search_vector([CUBE], unit(rng, 1)[0], limit=1)
    new = fill(writer, 40, rng, start=400)
    writer.delete([CUBE], ids=[m.id for m in made[:30]], hard=True)
    v = unit(rng, 1)[0]
    writer.put([made[50]], [v])
    assert reader.search_vector([CUBE], v, limit=1)[0].id == made[50].id
    in_step(reader)
    q = writer.get_embeddings([new[5].id])[new[5].id]
    assert reader.search_vector([CUBE], q, limit=1)[0].id == new[5].id
    reader.close()
    writer.close()


@pytest.mark.parametrize("where", [{"conversation_id": "c3"}, {"conversation_id": {"in": ["c1", "c2"]}}])
def test_filters_never_cost_hits(
    tmp_path: Path, rng: np.random.Generator, where: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Filtered searches return as many hits as exact search, the same ones when the filter
    is selective (exact among what it allows); every hit matches the filter."""
    store, exact = open_store(tmp_path), open_store(tmp_path, ann=None)
    fill(store, 1500, rng, convs=50)
    node = parse_filter(where)
    fallbacks: list[int] = []
    exact_allowed = store._exact_allowed

    def counted(*args: object) -> object:
        fallbacks.append(1)
        return exact_allowed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_exact_allowed", counted)
    for q in unit(rng, 20):
        a = store.search_vector([CUBE], q, node, limit=50)
        b = exact.search_vector([CUBE], q, node, limit=50)
        assert len(a) == len(b)
        assert ids(a) == ids(b)  # 30 or 60 items allowed: the exact fallback
    # Every one of them: asking HNSW for most of a 1,500-vector cube (a lucky first head can
    # say ~1,250 candidates would do) ranks them approximately and, now and then, misses one.
    assert len(fallbacks) == 20
    store.close()
    exact.close()


def test_broad_filter_oversamples_the_index(tmp_path: Path, rng: np.random.Generator) -> None:
    """A filter that lets most items through is checked on the index's candidates; the hit
    count still equals exact search's."""
    store, exact = open_store(tmp_path), open_store(tmp_path, ann=None)
    made = fill(store, 1500, rng, convs=4)
    store.delete([CUBE], ids=[m.id for m in made[::3]])  # soft-deleted: status filter drops them
    node = parse_filter({"conversation_id": {"in": ["c0", "c1", "c2"]}, "status": "activated"})
    overlap = 0
    for q in unit(rng, 20):
        a = store.search_vector([CUBE], q, node, limit=20)
        b = exact.search_vector([CUBE], q, node, limit=20)
        assert len(a) == len(b) == 20
        overlap += len(set(ids(a)) & set(ids(b)))
        assert all(store.get([h.id])[0].conversation_id != "c3" for h in a)  # type: ignore[union-attr]
    assert overlap / 400 >= 0.9
    store.close()
    exact.close()


def test_threshold_switches_from_exact_to_index(tmp_path: Path, rng: np.random.Generator) -> None:
    """Below the threshold a cube is searched exactly; the search after it crosses builds
    the index."""
    store = open_store(tmp_path, ann=AnnConfig(threshold=500, background=False))
    fill(store, 499, rng)
    q = unit(rng, 1)[0]
    store.search_vector([CUBE], q, limit=5)
    assert store._cubes[CUBE].ann is None
    fill(store, 1, rng, start=499)
    store.search_vector([CUBE], q, limit=5)
    in_step(store)
    store.close()


def test_background_build_searches_exactly_meanwhile(tmp_path: Path, rng: np.random.Generator) -> None:
    """With background builds, searches never wait for the index and stay correct while it
    is built; writes made during the build reach it."""
    store = open_store(tmp_path, ann=AnnConfig(threshold=100, persist=False))
    exact = open_store(tmp_path, ann=None)
    fill(store, 3000, rng)
    q = unit(rng, 1)[0]
    assert ids(store.search_vector([CUBE], q, limit=10)) == ids(exact.search_vector([CUBE], q, limit=10))
    late = fill(store, 20, rng, start=3000)  # maybe while the build runs
    deadline = time.monotonic() + 60
    while store._cubes[CUBE].ann is None and time.monotonic() < deadline:
        time.sleep(0.05)
    in_step(store)
    v = store.get_embeddings([late[0].id])[late[0].id]
    assert store.search_vector([CUBE], v, limit=1)[0].id == late[0].id
    store.close()
    exact.close()


def test_index_is_saved_and_loaded_with_later_changes_replayed(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """The index is saved next to the database; a new process loads it (no rebuild), replays
    what was written after it was saved, and verifies it."""
    store = open_store(tmp_path)
    made = fill(store, 800, rng)
    assert store.warm([CUBE])[CUBE]["index"] == "built"
    path = ann_file(tmp_path / "memos.db.ann", CUBE)
    assert path.is_file()
    store.close()
    writer = open_store(tmp_path, ann=None)  # changes the saved index does not know
    writer.delete([CUBE], ids=[m.id for m in made[:10]], hard=True)
    fill(writer, 25, rng, start=800)
    v = unit(rng, 1)[0]
    writer.put([made[20]], [v])
    again = open_store(tmp_path)
    info = again.warm([CUBE])[CUBE]
    assert info["index"] == "loaded" and info["vectors"] == 815
    in_step(again)
    assert again.search_vector([CUBE], v, limit=1)[0].id == made[20].id
    again.close()
    writer.close()


def test_closing_saves_a_changed_index(tmp_path: Path, rng: np.random.Generator) -> None:
    """Writes after the build are saved on close, so the next start has less to replay."""
    store = open_store(tmp_path)
    fill(store, 300, rng)
    store.warm([CUBE])
    fill(store, 10, rng, start=300)
    store.close()
    saved = AnnIndex.load(ann_file(tmp_path / "memos.db.ann", CUBE), EAGER, cube_id=CUBE, dim=DIM)
    assert saved is not None and len(saved) == 310


def test_stale_or_damaged_index_is_rebuilt(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index older than the change log, a garbage file, a truncated file or another
    cube's file is never trusted: the store rebuilds and saves a good one."""
    store = open_store(tmp_path)
    made = fill(store, 300, rng)
    store.warm([CUBE])
    store.close()
    path = ann_file(tmp_path / "memos.db.ann", CUBE)
    good = path.read_bytes()

    monkeypatch.setattr(SqliteStore, "CHANGES_KEPT", 5)
    writer = open_store(tmp_path, ann=None)
    for i in range(20):
        writer.put([made[i]], [unit(rng, 1)[0]])  # the log is pruned past the saved position
    writer.close()
    stale = open_store(tmp_path)
    assert stale.warm([CUBE])[CUBE]["index"] == "built"
    in_step(stale)
    stale.close()
    fresh = open_store(tmp_path)
    assert fresh.warm([CUBE])[CUBE]["index"] == "loaded"
    fresh.close()

    for damage in (b"garbage" * 100, good[: len(good) // 2], good[:-3]):
        path.write_bytes(damage)
        s = open_store(tmp_path)
        assert s.warm([CUBE])[CUBE]["index"] == "built"
        in_step(s)
        s.close()

    other = ann_file(tmp_path / "memos.db.ann", "cube-b")
    other.write_bytes(path.read_bytes())  # cube-a's index under cube-b's name
    b_items = [i.evolve(cube_id="cube-b") for i in items(300, start=2000)]
    writer = open_store(tmp_path, ann=None)
    writer.put(b_items, list(unit(rng, 300)))
    s = open_store(tmp_path)
    assert s.warm(["cube-b"])["cube-b"]["index"] == "built"
    in_step(s, "cube-b")
    s.close()
    writer.close()


def test_index_vectors_that_disagree_with_the_database_are_rebuilt(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """A well-formed index whose vectors are not the database's (written by hand, or by a bug)
    fails the sampled check and is rebuilt."""
    store = open_store(tmp_path)
    fill(store, 300, rng)
    store.warm([CUBE])
    cube = store._cubes[CUBE]
    assert cube.ann is not None
    wrong = AnnIndex(DIM, EAGER)
    wrong.add_many(cube.seqs[: len(cube)], unit(rng, len(cube)))
    wrong.position = cube.seen
    wrong.save(ann_file(tmp_path / "memos.db.ann", CUBE), cube_id=CUBE, model=None)
    store._ann = AnnConfig(threshold=1, background=False, persist=False)  # keep the bad file
    store.close()
    again = open_store(tmp_path)
    assert again.warm([CUBE])[CUBE]["index"] == "built"
    in_step(again)
    again.close()


@pytest.mark.slow
def test_index_then_onnx_embedder_in_one_process(tmp_path: Path) -> None:
    """A process that builds an index before its first embedding must not crash: usearch's
    extension loaded before onnxruntime's segfaults on import (the store loads onnxruntime
    first). Runs in a subprocess, so a crash is a failed test, not a dead test run."""
    code = (
        "import numpy as np, sys\n"
        "from memos_core import SqliteStore, SentenceTransformerEmbedder\n"
        "from memos_core.stores.sqlite import AnnConfig\n"
        "from tests.test_ann import fill\n"
        "s = SqliteStore.from_path(sys.argv[1], ann=AnnConfig(threshold=10, background=False))\n"
        "s.setup()\n"
        "fill(s, 50, np.random.default_rng(1))\n"
        "assert s.warm(['cube-a'])['cube-a']['index'] == 'built'\n"
        "print(SentenceTransformerEmbedder().embed(['after the index']).shape)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(1, 384)" in proc.stdout
