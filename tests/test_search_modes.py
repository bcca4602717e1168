"""Lexical search (no query embedding), MMR de-duplication, and the access statistics a
search writes behind itself. The SQLite store is real; the embedder is the hash one where
only whether it is called matters."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_core import SEARCH_MODES, InvalidInputError, MemoryItem, MemOS, RetrievalConfig
from memos_core.access import ReadLog
from memos_core.ports import Op, TextSearch, TouchItems
from memos_core.retrieval import _diversify
from memos_core.schema import MemoryHit
from memos_core.stores.sqlite import SqliteStore
from memos_core.testing import HashEmbedder
from memos_core.text import content_of, lexical_overlap


class CountingEmbedder(HashEmbedder):
    """The hash embedder, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += list(texts)
        return super().embed(texts)


FACTS = [
    "I adopted a greyhound called Biscuit last spring",
    "My sister lives in Lisbon and teaches chemistry",
    "I am training for the Berlin marathon in September",
]


@pytest.fixture
def counted(tmp_path: Path) -> tuple[MemOS, CountingEmbedder]:
    embedder = CountingEmbedder()
    mem = MemOS(tmp_path / "data", embedder=embedder, scheduler="inline")
    for i, text in enumerate(FACTS):
        mem.add_message([{"role": "user", "content": text, "id": f"m{i}"}], user_id="ana")
    yield mem, embedder
    mem.close()


def test_lexical_search_finds_by_words_without_embedding_the_query(
    counted: tuple[MemOS, CountingEmbedder],
) -> None:
    mem, embedder = counted
    embedder.texts.clear()
    hits = mem.search_memory(
        "where does my sister live", user_id="ana", mode="lexical"
    ).data.memory_detail_list
    assert embedder.texts == []  # no query embedding at all
    assert "Lisbon" in hits[0].memory
    assert hits[0].score_details["vector"] == 0.0 and hits[0].score_details["vector_rank"] == 0.0
    assert hits[0].score_details["bm25_rank"] == 1.0
    # Every hit shares a word with the query: BM25 alone returns nothing else.
    assert all(h.score_details["bm25_rank"] >= 1 for h in hits)


def test_hybrid_is_the_default_and_embeds_the_query(counted: tuple[MemOS, CountingEmbedder]) -> None:
    mem, embedder = counted
    embedder.texts.clear()
    hits = mem.search_memory("where does my sister live", user_id="ana").data.memory_detail_list
    assert embedder.texts == ["where does my sister live"]
    assert "Lisbon" in hits[0].memory and hits[0].score_details["vector_rank"] >= 1
    assert SEARCH_MODES == ("hybrid", "lexical", "keyword")


def test_lexical_query_sharing_no_word_falls_back_to_vectors(counted: tuple[MemOS, CountingEmbedder]) -> None:
    mem, embedder = counted
    embedder.texts.clear()
    hits = mem.search_memory("zzyzx qwrtp", user_id="ana", mode="lexical").data.memory_detail_list
    assert embedder.texts == ["zzyzx qwrtp"]
    assert len(hits) == len(FACTS)  # the vector leg ranks every memory
    assert all(h.score_details["bm25_rank"] == 0 and h.score_details["vector_rank"] >= 1 for h in hits)


@pytest.mark.parametrize("mode", ["fast", "", "LEXICAL", None, 1])
def test_unknown_search_mode_is_refused(counted: tuple[MemOS, CountingEmbedder], mode: Any) -> None:
    mem, _ = counted
    with pytest.raises(InvalidInputError, match="mode must be one of hybrid, lexical, keyword"):
        mem.search_memory("sister", user_id="ana", mode=mode)


@pytest.mark.parametrize("mode", ["lexical", "keyword"])
def test_lexical_search_keeps_scope_and_filters(tmp_path: Path, mode: Any) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as mem:
        mem.add_message([{"role": "user", "content": "I keep bees"}], user_id="ana", conversation_id="c1")
        mem.add_message([{"role": "user", "content": "I keep goats"}], user_id="ana", conversation_id="c2")
        mem.add_message([{"role": "user", "content": "I keep bees too"}], user_id="bob")
        got = mem.search_memory("keep", user_id="ana", conversation_id="c2", mode=mode).data
        assert [content_of(h.memory) for h in got.memory_detail_list] == ["I keep goats"]
        assert all(
            h.cube_id == "user:ana"
            for h in mem.search_memory("bees", user_id="ana", mode=mode).data.memory_detail_list
        )
        tagged = mem.search_memory("keep", user_id="ana", mode=mode, filter={"conversation_id": "c1"})
        assert [h.conversation_id for h in tagged.data.memory_detail_list] == ["c1"]


# ----------------------------------------------------------------- keyword mode


def test_keyword_search_is_the_stores_bm25_ranking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mode="keyword": the store's BM25 order and scores as they are, with no query embedding,
    no vector read, no nudge (the speaker the query names, a turn that only asks, recency) and no
    de-duplication; reads are counted as for any search."""
    embedder = CountingEmbedder()
    with MemOS(tmp_path / "d", embedder=embedder, scheduler="inline", read_delay=0) as mem:
        mem.add_message(
            [
                {"role": "user", "content": "Where did you buy the red bicycle?", "name": "Ana"},
                {"role": "assistant", "content": "The red bicycle came from a shop in Porto", "name": "Rui"},
                {"role": "user", "content": "A red bicycle is what I want", "name": "Ana"},
            ],
            user_id="ana",
        )
        mem.add_memory("The team meets every Tuesday at nine", user_id="ana")
        mem.add_memory("The team meets every Tuesday at nine", user_id="ana")
        monkeypatch.setattr(mem.store, "get_embeddings", lambda ids: pytest.fail("keyword read vectors"))
        embedder.texts.clear()
        scope = mem._scope(None)
        for query in ("What did Ana say about the red bicycle?", "team meets Tuesday"):
            ranked = mem.store.batch([TextSearch(["user:ana"], query, scope, 10)])[0]
            hits = mem.search_memory(query, user_id="ana", top_k=10, mode="keyword").data.memory_detail_list
            assert [(h.id, h.score) for h in hits] == [(r.id, r.score) for r in ranked] and len(hits) >= 2
            assert [h.score_details for h in hits] == [
                {"bm25": round(r.score, 6), "bm25_rank": float(rank)} for rank, r in enumerate(ranked, 1)
            ]
            lexical = mem.search_memory(
                query, user_id="ana", top_k=10, mode="lexical"
            ).data.memory_detail_list
            assert [h.id for h in lexical] != [h.id for h in hits]  # the nudges or de-duplication differ
        assert embedder.texts == []
        assert len({h.memory for h in hits}) == 1  # the repeated memory twice: no de-duplication
        assert all(mem.get_memory(h.id, user_id="ana").data.access_count >= 1 for h in hits)
        assert mem.search_memory("zzyzx qwrtp", user_id="ana", mode="keyword").data.memory_detail_list == []
        assert embedder.texts == []  # no fallback to the vector leg


def test_keyword_search_labels_shared_cubes(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as mem:
        mem.add_memory("Falcons nest on cliffs", user_id="ana")
        mem.add_memory("Falcons dive at great speed", user_id="bob")
        cube = "user:bob"
        mem.share_cube(cube, "ana", "read", user_id="bob")
        hits = mem.search_memory("falcons", user_id="ana", cube_ids=[cube], mode="keyword").data
        assert sorted((h.origin, h.cube_id) for h in hits.memory_detail_list) == [
            ("memory", "user:ana"),
            ("shared", cube),
        ]


# ----------------------------------------------------------------- de-duplication (MMR)


def _reference_diversify(
    scored: list[tuple[float, MemoryItem, dict[str, float]]],
    vectors: dict[str, np.ndarray],
    cfg: RetrievalConfig,
    top_k: int,
) -> list[MemoryHit]:
    """The pairwise loop _diversify replaced (one dot product per pair), kept as its oracle."""
    chosen: list[tuple[float, MemoryItem, dict[str, float]]] = []
    pool = list(scored)
    said: set[str] = set()

    def redundancy(item: MemoryItem) -> tuple[float, MemoryItem | None]:
        v = vectors.get(item.id)
        best: tuple[float, MemoryItem | None] = (0.0, None)
        for _, other, _ in chosen:
            w = vectors.get(other.id)
            if v is not None and w is not None and (sim := float(v @ w)) > best[0]:
                best = (sim, other)
        return best

    while pool and len(chosen) < top_k:
        if cfg.mmr_lambda >= 1.0:
            pick = 0
        else:
            values = [cfg.mmr_lambda * s - (1 - cfg.mmr_lambda) * redundancy(it)[0] for s, it, _ in pool]
            pick = int(np.argmax(values))
        score, item, details = pool.pop(pick)
        if item.id not in vectors:  # no vector: a repeat of a better vectorless hit's text goes
            text = " ".join(item.memory.lower().split())
            if text in said:
                continue
            said.add(text)
        sim, twin = redundancy(item)
        if (
            twin is not None
            and sim >= cfg.dedup_threshold
            and lexical_overlap(content_of(twin.memory), content_of(item.memory)) >= cfg.dedup_overlap
        ):
            continue
        chosen.append((score, item, {**details, "redundancy": round(sim, 6), "final": round(score, 6)}))
    return [MemoryHit.from_item(item, score, details) for score, item, details in chosen]


@pytest.mark.parametrize("seed", range(12))
def test_diversify_matches_the_pairwise_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = ["bees", "goats", "honey", "milk", "cheese", "wax", "field", "barn"]
    base = rng.normal(size=(6, 16)).astype(np.float32)
    scored = []
    vectors: dict[str, np.ndarray] = {}
    for i in range(int(rng.integers(1, 40))):
        text = " ".join(rng.choice(words, size=4))
        item = MemoryItem(id=f"m{i}", cube_id="c", memory=text)
        # Near-copies of a few base vectors, so some pairs cross the de-duplication threshold.
        v = base[int(rng.integers(0, 6))] + rng.normal(scale=float(rng.choice([0.0, 0.01, 0.5])), size=16)
        if rng.random() > 0.1:  # a few items have no vector
            vectors[item.id] = (v / np.linalg.norm(v)).astype(np.float32)
        scored.append((float(rng.random()), item, {"bm25": 1.0}))
    scored.sort(key=lambda s: -s[0])
    for lam in (1.0, 0.7, 0.3):
        cfg = RetrievalConfig(mmr_lambda=lam, dedup_threshold=0.97, dedup_overlap=0.5)
        top_k = int(rng.integers(1, 30))
        got = _diversify(scored, vectors, cfg, top_k)
        want = _reference_diversify(scored, vectors, cfg, top_k)
        assert [h.id for h in got] == [h.id for h in want]
        for g, w in zip(got, want, strict=True):
            assert g.score_details["redundancy"] == pytest.approx(w.score_details["redundancy"], abs=2e-6)


def test_without_vectors_only_the_same_text_is_a_repeat() -> None:
    texts = ["I keep bees", "i  keep BEES", "I keep goats", "I keep bees and goats", "I KEEP bees "]
    scored = [
        (1.0 - i / 10, MemoryItem(id=f"m{i}", cube_id="c", memory=t), {"bm25": 1.0})
        for i, t in enumerate(texts)
    ]
    hits = _diversify(scored, {}, RetrievalConfig(), top_k=10)
    assert [h.id for h in hits] == ["m0", "m2", "m3"]
    assert all(h.score_details["redundancy"] == 0.0 for h in hits)
    # Two people saying the same words, or one on two days, are two memories.
    said = [
        "Ana (1:00 pm on 8 May, 2023): I am allergic to peanuts",
        "Rui (1:00 pm on 8 May, 2023): I am allergic to peanuts",
        "Ana (3:00 pm on 9 June, 2023): I am allergic to peanuts",
        "ana (1:00 pm on 8 May, 2023):  I am allergic to PEANUTS",
    ]
    scored = [(1.0 - i / 10, MemoryItem(id=f"s{i}", cube_id="c", memory=t), {}) for i, t in enumerate(said)]
    assert [h.id for h in _diversify(scored, {}, RetrievalConfig(), top_k=10)] == ["s0", "s1", "s2"]


def test_a_lexical_search_reads_no_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vectors are a third of a lexical search's time; it needs none unless BM25 finds nothing
    (then it falls back to the vector leg, which reads the cube's matrix, not these)."""
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as mem:
        for i, text in enumerate(FACTS):
            mem.add_message([{"role": "user", "content": text, "id": f"m{i}"}], user_id="ana")
        assert mem.search_memory("Lisbon", user_id="ana", mode="hybrid").data.memory_detail_list

        def refuse(ids: Sequence[str]) -> dict[str, np.ndarray]:
            raise AssertionError("a lexical search read vectors")

        monkeypatch.setattr(mem.store, "get_embeddings", refuse)
        hits = mem.search_memory("Lisbon", user_id="ana", mode="lexical").data.memory_detail_list
        assert [content_of(h.memory) for h in hits] == [FACTS[1]]
        with pytest.raises(AssertionError, match="read vectors"):
            mem.search_memory("Lisbon", user_id="ana", mode="hybrid")


def test_a_hit_is_built_as_model_construct_builds_it() -> None:
    """MemoryHit.from_item skips model_construct's per-field loop; the hit must not differ."""
    item = MemoryItem(id="m1", cube_id="c", memory="hello", tags=["t"], info={"a": [1]})
    hit = MemoryHit.from_item(item, 0.5, {"bm25": 1, "final": 0.5}, origin="shared")
    fields = {name: getattr(hit, name) for name in MemoryHit.model_fields}
    reference = MemoryHit.model_construct(**fields)
    assert hit == reference and hit.model_fields_set == reference.model_fields_set
    assert hit.model_dump_json() == reference.model_dump_json()
    assert MemoryHit.model_validate(hit.model_dump()) == hit
    assert hit.score_details == {"bm25": 1.0, "final": 0.5} and type(hit.score_details["bm25"]) is float
    copied = hit.model_copy(update={"origin": "memory"})
    assert (copied.origin, hit.origin) == ("memory", "shared")
    assert copied.model_fields_set is not hit.model_fields_set
    hit.info["a"].append(2)
    assert item.info == {"a": [1]}  # never aliases the (possibly shared) item
    with pytest.raises(ValueError):
        hit.score = 1.0  # frozen, as a validated hit is


def test_search_drops_a_repeated_memory(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as mem:
        for _ in range(2):
            mem.add_memory("The team meets every Tuesday at nine", user_id="ana")
        for mode in ("hybrid", "lexical"):  # "keyword" keeps the store's ranking as it is
            hits = mem.search_memory(
                "when does the team meet", user_id="ana", mode=mode
            ).data.memory_detail_list
            assert len(hits) == 1, mode


# ----------------------------------------------------------------- access statistics


def _one(mem: MemOS, text: str = "I play the cello") -> str:
    return mem.add_message([{"role": "user", "content": text}], user_id="ana").data.memory_ids[0]


def test_reads_are_exact_within_the_process(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=3600) as mem:
        mid = _one(mem)
        for mode in ("hybrid", "lexical", "hybrid"):
            mem.search_memory("cello", user_id="ana", mode=mode)
        assert mem.get_memory(mid).data.access_count == 3  # written before the item is shown
        mem.search_memory("cello", user_id="ana")
        assert mem.list_memories("ana").data.items[0].access_count == 4
        mem.search_memory("cello", user_id="ana")
        hot = mem.search_memory("cello", user_id="ana", filter={"access_count": {"gte": 5}}).data
        assert [h.id for h in hot.memory_detail_list] == [mid]


def test_reads_reach_other_processes_within_the_delay_and_at_close(tmp_path: Path) -> None:
    mem = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=0.2)
    other = SqliteStore.from_path(tmp_path / "d")  # another handle, as another process has
    try:
        mid = _one(mem)
        mem.search_memory("cello", user_id="ana")
        deadline = datetime.now(timezone.utc).timestamp() + 10
        while (got := other.get([mid])[0]) is not None and got.access_count < 1:
            assert datetime.now(timezone.utc).timestamp() < deadline, "not written within 10 s"
            threading.Event().wait(0.05)
        writer, conns = mem._reads._thread, len(mem.store._conns)  # type: ignore[attr-defined]
        for _ in range(4):  # reads spaced past the delay: the one writer sleeps between them
            threading.Event().wait(0.3)
            mem.search_memory("cello", user_id="ana")
        assert mem._reads._thread is writer and len(mem.store._conns) == conns  # type: ignore[attr-defined]
        mem.close()
        mem2 = MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=3600)
        mem2.search_memory("cello", user_id="ana")
        mem2.close()  # the pending read is written by close
        got = other.get([mid])[0]
        assert got is not None and got.access_count == 6 and got.last_accessed_at is not None
    finally:
        mem.close()
        other.close()


def test_read_delay_zero_writes_in_the_search(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=0) as mem:
        mid = _one(mem)
        mem.search_memory("cello", user_id="ana")
        assert mem.store.get([mid])[0].access_count == 1  # type: ignore[union-attr]
        assert mem._reads.pending() == 0


class FlakyStore:
    """A real store whose next ``fail`` batches of touches raise."""

    def __init__(self, inner: SqliteStore, fail: int) -> None:
        self.inner, self.fail = inner, fail

    def batch(self, ops: Sequence[Op]) -> list[Any]:
        if self.fail and all(isinstance(op, TouchItems) for op in ops):
            self.fail -= 1
            raise OSError("disk went away")
        return self.inner.batch(ops)


def test_reads_that_fail_to_write_are_kept_for_the_next_flush(tmp_path: Path) -> None:
    store = SqliteStore.from_path(tmp_path / "d")
    store.setup()
    item = MemoryItem(cube_id="c", memory="x")
    store.put([item])
    log = ReadLog(FlakyStore(store, fail=1), delay=3600)  # type: ignore[arg-type]
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    log.add([item.id, item.id], at)  # one read: duplicates in one search count once
    log.add([item.id], at.replace(day=2))
    with pytest.raises(OSError):
        log.flush()
    assert log.pending() == 1
    log.close()
    got = store.get([item.id])[0]
    assert got is not None and got.access_count == 2 and got.last_accessed_at == at.replace(day=2)
    store.close()


def test_concurrent_searches_lose_no_read(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=0.01) as mem:
        mid = _one(mem)

        def search() -> None:
            for _ in range(25):
                mem.search_memory("cello", user_id="ana", mode="lexical")

        threads = [threading.Thread(target=search) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert mem.get_memory(mid).data.access_count == 100


def test_filters_and_deletes_on_read_statistics_see_pending_reads(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=3600) as mem:
        read = _one(mem, "I play the cello")
        unread = _one(mem, "My bike is blue")
        mem.search_memory("cello", user_id="ana", mode="lexical")
        recent = mem.search_memory("cello bike", user_id="ana", filter={"last_accessed_at": {"exists": True}})
        assert [h.id for h in recent.data.memory_detail_list] == [read]
        assert mem.delete_memory(user_id="ana", filter={"access_count": 0}).data["deleted"] == 1
        assert mem.get_memory(read).data.status == "activated"
        assert mem.get_memory(unread).data.status == "deleted"


def test_hits_are_the_callers_own(tmp_path: Path) -> None:
    """Search loads shared (cached) items; what it hands out must not alias them."""
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline") as mem:
        mem.add_memory(
            "The team meets on Tuesdays", user_id="ana", info={"room": {"floor": 2}}, tags=["work"]
        )
        for _ in range(2):
            hit = mem.search_memory("team meets", user_id="ana").data.memory_detail_list[0]
            assert hit.info == {"room": {"floor": 2}} and hit.tags == ["work"]
            hit.info["room"]["floor"] = 9
            hit.tags.append("poison")
        assert mem.get_memory(hit.id).data.info == {"room": {"floor": 2}}


def test_lexical_mode_needs_the_bm25_leg(tmp_path: Path) -> None:
    cfg = RetrievalConfig(bm25_weight=0.0, vector_weight=1.0)
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", retrieval=cfg) as mem:
        _one(mem)
        assert mem.search_memory("cello", user_id="ana").data.memory_detail_list
        with pytest.raises(InvalidInputError, match="bm25_weight"):
            mem.search_memory("cello", user_id="ana", mode="lexical")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_drops_its_parents_pending_reads(tmp_path: Path) -> None:
    with MemOS(tmp_path / "d", embedder=HashEmbedder(), scheduler="inline", read_delay=3600) as mem:
        mid = _one(mem)
        mem.search_memory("cello", user_id="ana", mode="lexical")
        assert mem._reads.pending() == 1
        pid = os.fork()
        if pid == 0:  # the child: the parent's read is not its own to write; its own reads count
            code = 1
            try:
                mem._reads.add([mid], datetime.now(timezone.utc))
                code = 0 if mem._reads.pending() == 1 and mem._reads._thread is not None else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert mem.get_memory(mid).data.access_count == 1  # the parent's read, written once
