"""Hybrid retrieval: BM25 and vector legs under one scope and filter, fused (by default on
standardised scores, see :class:`RetrievalConfig`), adjusted by recency and usage, then
de-duplicated (MMR). Every hit explains its score in ``score_details``.
"""

from __future__ import annotations

import functools
import math
import os
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from .errors import InvalidInputError
from .filters import Node, evaluate
from .ports import Embedder, MemoryStore, ScoredId, TextSearch, VectorSearch
from .schema import MemoryHit, MemoryItem, utcnow
from .text import STOPWORDS, content_of, lexical_overlap, tokenize

__all__ = ["SEARCH_MODES", "RetrievalConfig", "SearchMode", "check_mode", "hybrid_search"]

#: ``"hybrid"``: both legs, fused (the default: the best recall). ``"lexical"``: the BM25 leg
#: alone, with the same nudges, no query embedding and no vectors read (so repeats are found
#: by their text alone), so a search costs a few milliseconds instead of the embedder's ~10
#: (docs/BENCHMARKS.md); a query that shares no word with any memory falls back to the vector leg.
#: ``"keyword"``: the store's BM25 ranking as it is (no nudges, no de-duplication, no vectors):
#: the fastest, for exact-word lookups and for callers that rerank candidates themselves; a
#: query that shares no word with any memory finds nothing.
SearchMode = Literal["hybrid", "lexical", "keyword"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "lexical", "keyword")


@dataclass(frozen=True)
class RetrievalConfig:
    """Knobs of :func:`hybrid_search`. Defaults are the measured ones (docs/BENCHMARKS.md).

    Attributes:
        candidates: results taken from each leg before fusion (at least ``top_k``).
        fused_head: how many fused results beyond ``top_k`` are loaded and re-scored with
            the nudges and de-duplication (``top_k + fused_head`` in all): loading an item is
            most of a search's own time.
        fusion: ``"zscore"`` standardises each leg's scores over its candidates (a memory a
            leg did not return counts as that leg's last candidate; a vector score is computed
            exactly for it), adds them with the weights and maps the sum into (0, 1) with the
            logistic function; ``"rrf"`` is reciprocal rank
            fusion, ``1 / (rrf_k + rank)``. On LoCoMo z-score fusion finds more (turn R@10
            0.801 vs 0.750 with the same legs), because it keeps how far ahead a hit is.
        rrf_k: the constant of reciprocal rank fusion.
        bm25_weight / vector_weight: weight of each leg in the fusion.
        recency_weight: bonus for recent events, decaying with ``recency_half_life_days``.
        usage_weight: bonus for often-read memories (log of the access count).
        dedup_threshold / dedup_overlap: a hit whose cosine to a better hit reaches
            ``dedup_threshold`` and whose words overlap it by ``dedup_overlap`` is dropped.
        mmr_lambda: 1.0 keeps pure relevance order; lower values trade relevance for variety.
        fact_weight: bonus for refined facts (``mode="fine"`` items derived from a memory):
            one clean sentence beats the raw window it was read from on a tie.
        working_weight: bonus for memories in the conversation's working set.
        speaker_weight: bonus for chat memories said by someone the query names ("What did
            Caroline research?" prefers what Caroline said over what was said to her). On
            LoCoMo it lifts turn R@10 from 0.781 to 0.80 (docs/BENCHMARKS.md).
        question_weight: subtracted from a chat turn that only asks (its text ends with "?"):
            "Where do I live?" holds no fact, and would otherwise outrank the answer it asks
            for. Neutral on LoCoMo (+0.002), decisive in short chats.
    """

    candidates: int = 100
    fused_head: int = 30
    fusion: Literal["zscore", "rrf"] = "zscore"
    rrf_k: int = 60
    bm25_weight: float = 2.0
    vector_weight: float = 1.0
    recency_weight: float = 0.02
    recency_half_life_days: float = 30.0
    usage_weight: float = 0.01
    dedup_threshold: float = 0.97
    dedup_overlap: float = 0.9
    mmr_lambda: float = 1.0
    fact_weight: float = 0.03
    working_weight: float = 0.02
    speaker_weight: float = 0.2
    question_weight: float = 0.05

    def __post_init__(self) -> None:
        if self.fusion not in ("zscore", "rrf"):
            raise InvalidInputError(f"fusion must be 'zscore' or 'rrf', not {self.fusion!r}")
        if self.bm25_weight < 0 or self.vector_weight < 0 or self.bm25_weight + self.vector_weight <= 0:
            raise InvalidInputError("bm25_weight and vector_weight must be >= 0, and not both 0")


def _ranks(hits: Sequence[ScoredId]) -> dict[str, tuple[int, float]]:
    return {h.id: (rank, h.score) for rank, h in enumerate(hits, start=1)}


@dataclass(frozen=True)
class _Standard:
    """A leg's score standardised over its candidates: ``(score - mean) / std``, and the
    value of the leg's last candidate for memories it did not return."""

    mean: float
    std: float
    floor: float

    @classmethod
    def of(cls, hits: Sequence[ScoredId]) -> _Standard:
        if not hits:
            return cls(0.0, 1.0, 0.0)
        scores = np.array([h.score for h in hits], dtype=np.float64)
        std = float(scores.std())
        # One candidate, or all tied: present beats absent by one unit. Relative, since SQLite's
        # BM25 scores are ~1e-6 in a tiny cube and their differences still mean something.
        if std == 0.0 or std <= 1e-6 * abs(float(scores.mean())):
            return cls(float(scores[0]) - 1.0, 1.0, 0.0)
        mean = float(scores.mean())
        return cls(mean, std, (float(scores.min()) - mean) / std)

    def z(self, score: float | None) -> float:
        if score is None:
            return self.floor
        return min(max((score - self.mean) / self.std, self.floor - 3.0), 50.0)  # bounded either way


#: Titles skipped when a speaker's first name is looked for ("Dr Smith" is not named by "dr").
_TITLES = frozenset(["mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam", "mx"])


def _query_names(query: str) -> frozenset[str]:
    """The words of the query that may name a person: capitalised words (and CJK words),
    possessives also without their ``'s`` ("Caroline's" names Caroline); a stopword opening a
    sentence is not a name. A lower-case "will" or "may" names no one."""
    out: set[str] = set()
    for match in re.finditer(r"[^\W\d_][\w'’]*", query):
        word = match.group(0)
        if not (word[0].isupper() or not word[0].isascii()):
            continue
        # A capital at the start of a sentence says nothing: there "Will" is the verb.
        opens = not query[: match.start()].strip() or query[: match.start()].rstrip()[-1] in ".?!"
        for token in tokenize(word):
            base = token.split("'")[0]
            out |= {t for t in (token, base) if t and not (opens and t in STOPWORDS)}
    return frozenset(out)


def _only_asks(item: MemoryItem) -> bool:
    """A chat turn whose text is a question: it asks for a fact and holds none."""
    return item.context is not None and all(s.type == "chat" for s in item.sources) and _asks(item.memory)


@functools.lru_cache(maxsize=4096)
def _asks(memory: str) -> bool:
    return content_of(memory).rstrip().endswith(("?", "？"))


@functools.lru_cache(maxsize=4096)
def _said(memory: str) -> str:
    """A memory's whole text, case and spacing aside, for telling repeats apart without vectors:
    speaker and time included, so two people saying the same words are not one memory."""
    return " ".join(memory.casefold().split())


@functools.lru_cache(maxsize=4096)
def _name_parts(name: str) -> tuple[str, ...]:
    """A speaker's name as words, titles skipped unless nothing else is left."""
    words = tokenize(name)
    return tuple(t for t in words if t not in _TITLES) or tuple(words)


def _said_by(item: MemoryItem, names: frozenset[str]) -> bool:
    """Whether a chat source of ``item`` was said by someone ``names`` names: the speaker's
    whole name, or their first name (titles skipped). Roles ("user", "assistant") are not
    names: "where does the user live?" must not prefer raw turns over the facts read from them."""
    for source in item.sources:
        if source.type == "chat" and source.name:
            name = _name_parts(source.name)
            if name and (name[0] in names or all(part in names for part in name)):
                return True
    return False


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _embed_pool() -> ThreadPoolExecutor:
    """Threads that embed queries beside the text leg (made on first use, anew after a fork)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            # As many as concurrent searches can use: one each, like embedding inline.
            workers = min(32, (os.cpu_count() or 1) + 4)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memos-query-embed")
        return _pool


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has the parent's pool object but none of its threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def check_mode(mode: object) -> SearchMode:
    """``mode`` if it is one of :data:`SEARCH_MODES`, else InvalidInputError."""
    if mode not in SEARCH_MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(SEARCH_MODES)}, not {mode!r}")
    return mode


def hybrid_search(
    store: MemoryStore,
    embedder: Embedder,
    cube_ids: Sequence[str],
    query: str,
    where: Node | None,
    *,
    top_k: int,
    config: RetrievalConfig | None = None,
    now: datetime | None = None,
    boosts: Mapping[str, float] | None = None,
    mode: SearchMode = "hybrid",
) -> list[MemoryHit]:
    """Search ``cube_ids`` for ``query`` (already validated) and return explained hits.
    ``boosts``: extra score per id (the working set), shown as ``score_details["working"]``.
    ``mode``: see :data:`SearchMode`."""
    if check_mode(mode) == "keyword":
        return _keyword_search(store, cube_ids, query, where, top_k=top_k)
    cfg = config or RetrievalConfig()
    if mode == "lexical" and cfg.bm25_weight <= 0:
        raise InvalidInputError("mode='lexical' needs bm25_weight > 0 (it searches with BM25 alone)")
    now = now or utcnow()
    n = max(cfg.candidates, top_k)
    qvec: np.ndarray | None = None
    vec_hits: list[ScoredId] = []
    text_hits: list[ScoredId] = []
    lexical = mode == "lexical"
    if lexical:
        text_hits = store.batch([TextSearch(cube_ids, query, where, n)])[0]
    if lexical and not text_hits:  # a lexical query no memory shares a word with: vectors
        qvec = embedder.embed([query])[0]
        vec_hits = store.batch([VectorSearch(cube_ids, qvec, where, n, embedder.model_id)])[0]
    elif not lexical:
        # The query is embedded in another thread while this one runs the text leg: both wait
        # outside the GIL (ONNX Runtime, SQLite), so on two cores the legs overlap. The two legs
        # read in two transactions; an item changed in between is re-checked below.
        embedding = _embed_pool().submit(embedder.embed, [query])
        try:
            text_hits = store.batch([TextSearch(cube_ids, query, where, n)])[0]
        except BaseException:
            embedding.cancel()  # the text leg's error is the one to see
            raise
        qvec = embedding.result()[0]
        vec_hits = store.batch([VectorSearch(cube_ids, qvec, where, n, embedder.model_id)])[0]
    bm25, vec = _ranks(text_hits), _ranks(vec_hits)
    b_std, v_std = _Standard.of(text_hits), _Standard.of(vec_hits)
    # Lexical: the vector leg takes no part (its weight counts for nothing either way).
    vector_weight = cfg.vector_weight if qvec is not None else 0.0
    weights = cfg.bm25_weight + vector_weight
    best_rrf = weights / (cfg.rrf_k + 1)

    def fused_of(item_id: str, v_exact: float | None = None) -> float:
        b_rank, b_score = bm25.get(item_id, (0, 0.0))
        v_rank, v_score = vec.get(item_id, (0, 0.0))
        if cfg.fusion == "rrf":
            return (
                (cfg.bm25_weight / (cfg.rrf_k + b_rank) if b_rank else 0.0)
                + (vector_weight / (cfg.rrf_k + v_rank) if v_rank else 0.0)
            ) / best_rrf
        b = b_std.z(b_score if b_rank else None)
        v = v_std.z(v_score if v_rank else v_exact)
        # The logistic keeps scores in (0, 1) like RRF's, so the nudges below keep their scale.
        x = (cfg.bm25_weight * b + vector_weight * v) / weights
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))

    # Fuse first, then load only the head: recency and usage are small nudges that reorder
    # near-ties, so loading every candidate of both legs would be wasted work.
    relevance_of = {
        i: fused_of(i) for i in dict.fromkeys([h.id for h in vec_hits] + [h.id for h in text_hits])
    }
    fused = sorted(relevance_of, key=lambda i: -relevance_of[i])
    ids = fused[: top_k + cfg.fused_head]
    if not ids:
        return []
    # Shared with other searches (never mutated here; hits copy what they hand out).
    items = {i.id: i for i in store.get(ids, cached=True) if i is not None}
    # Vectors de-duplicate hits and give exact cosines; a lexical search reads none (~0.5 ms of
    # its 4.5 on LoCoMo, with the per-pick products) and drops repeated texts alone (_diversify).
    vectors = store.get_embeddings(ids) if qvec is not None else {}
    named = _query_names(query) if cfg.speaker_weight else frozenset()
    boosts = boosts or {}
    per_day = 1.0 / (86400.0 * cfg.recency_half_life_days)
    usage_unit = 1.0 / math.log1p(100.0)

    scored: list[tuple[float, MemoryItem, dict[str, float]]] = []
    for item_id in ids:
        item = items.get(item_id)
        if item is None or not evaluate(where, item):  # changed between the legs and the fetch
            continue
        b_rank, b_score = bm25.get(item_id, (0, 0.0))
        v_rank, v_score = vec.get(item_id, (0, 0.0))
        exact = qvec is not None and v_rank == 0 and item_id in vectors
        if exact:
            v_score = float(vectors[item_id] @ qvec)
        relevance = fused_of(item_id, v_score) if exact else relevance_of[item_id]
        half_lives = max((now - (item.event_time or item.created_at)).total_seconds(), 0.0) * per_day
        recency = cfg.recency_weight * 0.5**half_lives
        usage = cfg.usage_weight * min(math.log1p(item.access_count) * usage_unit, 1.0)
        fact = (
            cfg.fact_weight if item.mode == "fine" and any(s.type == "memory" for s in item.sources) else 0.0
        )
        working = boosts.get(item_id, 0.0)
        speaker = cfg.speaker_weight if named and _said_by(item, named) else 0.0
        question = -cfg.question_weight if cfg.question_weight and _only_asks(item) else 0.0
        final = relevance + recency + usage + fact + working + speaker + question
        details = {  # rounded for the hits that are kept (_diversify)
            "bm25": b_score,
            "bm25_rank": float(b_rank),
            "vector": v_score,
            "vector_rank": float(v_rank),
            "fused": relevance,
            "recency": recency,
            "usage": usage,
            "fact": fact,
            "working": working,
            "speaker": speaker,
            "question": question,
        }
        scored.append((final, item, details))
    scored.sort(key=lambda s: -s[0])
    return _diversify(scored, vectors, cfg, top_k)


def _keyword_search(
    store: MemoryStore, cube_ids: Sequence[str], query: str, where: Node | None, *, top_k: int
) -> list[MemoryHit]:
    """``mode="keyword"``: the store's best ``top_k`` BM25 matches in the scope and filter,
    in its order; a hit's score is its BM25 score (``score_details``: ``bm25``, ``bm25_rank``)."""
    # The items are shared (cached): the hits copy what they hand out.
    ranked = store.search_text_items(cube_ids, query, where, limit=top_k)
    return [
        MemoryHit.from_item(item, hit.score, {"bm25": round(hit.score, 6), "bm25_rank": rank})
        for rank, (hit, item) in enumerate(ranked, start=1)
    ]


def _diversify(
    scored: list[tuple[float, MemoryItem, dict[str, float]]],
    vectors: dict[str, np.ndarray],
    cfg: RetrievalConfig,
    top_k: int,
) -> list[MemoryHit]:
    """Maximal marginal relevance over the fused list, dropping near-duplicates: a hit whose
    cosine to a better one reaches ``dedup_threshold`` *and* that says the same words. A hit
    without a vector (every hit of a lexical search) is dropped when a better one without a
    vector has the very same text, speaker and time included (case and spacing aside)."""
    # Cosines with the hits chosen so far, one small product per pick: numpy's einsum (its own
    # single-threaded loop), since BLAS spreads even a product this size over threads, which
    # costs milliseconds whenever the other cores are busy.
    has_vector = [item.id in vectors for _, item, _ in scored]
    dim = next((v.shape[0] for v in vectors.values()), 0)
    chosen_mat = np.zeros((min(top_k, len(scored)), dim), dtype=np.float32)
    chosen_rows: list[int] = []  # which chosen hits have a row in chosen_mat, in order
    chosen: list[int] = []
    at_pick: list[float] = []  # each chosen hit's redundancy with the hits chosen before it
    pool = list(range(len(scored)))
    said: set[str] = set()  # the texts of the chosen hits without a vector

    def redundancy(i: int) -> tuple[float, int | None]:
        if not has_vector[i] or not chosen_rows:
            return (0.0, None)
        row = np.einsum("ij,j->i", chosen_mat[: len(chosen_rows)], vectors[scored[i][1].id])
        j = int(np.argmax(row))
        return (float(row[j]), chosen_rows[j]) if row[j] > 0.0 else (0.0, None)

    while pool and len(chosen) < top_k:
        if cfg.mmr_lambda >= 1.0:
            at = 0  # pure relevance: the head of the sorted pool
        else:
            values = [cfg.mmr_lambda * scored[i][0] - (1 - cfg.mmr_lambda) * redundancy(i)[0] for i in pool]
            at = int(np.argmax(values))
        i = pool.pop(at)
        if not has_vector[i]:
            text = _said(scored[i][1].memory)
            if text in said:
                continue
            said.add(text)
        sim, twin = redundancy(i)
        if (
            twin is not None
            and sim >= cfg.dedup_threshold
            and lexical_overlap(content_of(scored[twin][1].memory), content_of(scored[i][1].memory))
            >= cfg.dedup_overlap
        ):
            continue
        chosen.append(i)
        at_pick.append(sim)
        if has_vector[i]:
            chosen_mat[len(chosen_rows)] = vectors[scored[i][1].id]
            chosen_rows.append(i)
    out = []
    for i, sim in zip(chosen, at_pick, strict=True):
        score, item, details = scored[i]
        explained = {k: round(v, 6) if v else 0.0 for k, v in details.items()}  # most are 0
        explained["redundancy"], explained["final"] = round(sim, 6), round(score, 6)
        out.append(MemoryHit.from_item(item, score, explained))
    return out
