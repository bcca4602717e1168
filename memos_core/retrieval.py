"""Hybrid retrieval: BM25 and vector legs under one scope and filter, fused with reciprocal
rank fusion, adjusted by recency and usage, then de-duplicated (MMR). Every hit explains its
score in ``score_details``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .filters import Node, evaluate
from .ports import Embedder, MemoryStore, ScoredId, TextSearch, VectorSearch
from .schema import MemoryHit, MemoryItem, utcnow
from .text import content_of, lexical_overlap

__all__ = ["RetrievalConfig", "hybrid_search"]


@dataclass(frozen=True)
class RetrievalConfig:
    """Knobs of :func:`hybrid_search`. Defaults are the measured ones (docs/BENCHMARKS.md).

    Attributes:
        candidates: results taken from each leg before fusion (at least ``top_k``).
        fused_head: how many fused results (at least ``3 * top_k``) are loaded and re-scored
            with recency, usage and de-duplication.
        rrf_k: the constant of reciprocal rank fusion, ``1 / (rrf_k + rank)``.
        bm25_weight / vector_weight: weight of each leg in the fusion.
        recency_weight: bonus for recent events, decaying with ``recency_half_life_days``.
        usage_weight: bonus for often-read memories (log of the access count).
        dedup_threshold / dedup_overlap: a hit whose cosine to a better hit reaches
            ``dedup_threshold`` and whose words overlap it by ``dedup_overlap`` is dropped.
        mmr_lambda: 1.0 keeps pure relevance order; lower values trade relevance for variety.
        fact_weight: bonus for refined facts (``mode="fine"`` items derived from a memory):
            one clean sentence beats the raw window it was read from on a tie.
        working_weight: bonus for memories in the conversation's working set.
    """

    candidates: int = 50
    fused_head: int = 30
    rrf_k: int = 60
    bm25_weight: float = 1.0
    vector_weight: float = 1.0
    recency_weight: float = 0.02
    recency_half_life_days: float = 30.0
    usage_weight: float = 0.01
    dedup_threshold: float = 0.97
    dedup_overlap: float = 0.9
    mmr_lambda: float = 1.0
    fact_weight: float = 0.03
    working_weight: float = 0.02


def _ranks(hits: Sequence[ScoredId]) -> dict[str, tuple[int, float]]:
    return {h.id: (rank, h.score) for rank, h in enumerate(hits, start=1)}


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
) -> list[MemoryHit]:
    """Search ``cube_ids`` for ``query`` (already validated) and return explained hits.
    ``boosts``: extra score per id (the working set), shown as ``score_details["working"]``."""
    cfg = config or RetrievalConfig()
    now = now or utcnow()
    n = max(cfg.candidates, top_k)
    qvec = embedder.embed([query])[0]
    text_hits, vec_hits = store.batch(
        [TextSearch(cube_ids, query, where, n), VectorSearch(cube_ids, qvec, where, n, embedder.model_id)]
    )
    bm25, vec = _ranks(text_hits), _ranks(vec_hits)

    def rrf_of(item_id: str) -> float:
        b_rank, v_rank = bm25.get(item_id, (0, 0.0))[0], vec.get(item_id, (0, 0.0))[0]
        return (cfg.bm25_weight / (cfg.rrf_k + b_rank) if b_rank else 0.0) + (
            cfg.vector_weight / (cfg.rrf_k + v_rank) if v_rank else 0.0
        )

    # Fuse first, then load only the head: recency and usage are small nudges that reorder
    # near-ties, so loading every candidate of both legs would be wasted work.
    fused = sorted(
        dict.fromkeys([h.id for h in vec_hits] + [h.id for h in text_hits]), key=lambda i: -rrf_of(i)
    )
    ids = fused[: max(3 * top_k, cfg.fused_head)]
    if not ids:
        return []
    items = {i.id: i for i in store.get(ids) if i is not None}
    vectors = store.get_embeddings(ids)
    best_rrf = (cfg.bm25_weight + cfg.vector_weight) / (cfg.rrf_k + 1)

    scored: list[tuple[float, MemoryItem, dict[str, float]]] = []
    for item_id in ids:
        item = items.get(item_id)
        if item is None or not evaluate(where, item):  # changed between the legs and the fetch
            continue
        b_rank, b_score = bm25.get(item_id, (0, 0.0))
        v_rank, v_score = vec.get(item_id, (0, 0.0))
        if v_rank == 0 and item_id in vectors:
            v_score = float(vectors[item_id] @ qvec)
        rrf = rrf_of(item_id)
        when = item.event_time or item.created_at
        age_days = max((now - when).total_seconds() / 86400.0, 0.0)
        recency = math.pow(0.5, age_days / cfg.recency_half_life_days)
        usage = math.log1p(item.access_count) / math.log1p(100.0)
        fact = (
            cfg.fact_weight if item.mode == "fine" and any(s.type == "memory" for s in item.sources) else 0.0
        )
        working = (boosts or {}).get(item_id, 0.0)
        final = (
            rrf / best_rrf
            + cfg.recency_weight * recency
            + cfg.usage_weight * min(usage, 1.0)
            + fact
            + working
        )
        details = {
            "bm25": round(b_score, 6),
            "bm25_rank": float(b_rank),
            "vector": round(v_score, 6),
            "vector_rank": float(v_rank),
            "rrf": round(rrf / best_rrf, 6),
            "recency": round(cfg.recency_weight * recency, 6),
            "usage": round(cfg.usage_weight * min(usage, 1.0), 6),
            "fact": fact,
            "working": round(working, 6),
        }
        scored.append((final, item, details))
    scored.sort(key=lambda s: -s[0])
    return _diversify(scored, vectors, cfg, top_k)


def _diversify(
    scored: list[tuple[float, MemoryItem, dict[str, float]]],
    vectors: dict[str, np.ndarray],
    cfg: RetrievalConfig,
    top_k: int,
) -> list[MemoryHit]:
    """Maximal marginal relevance over the fused list, dropping near-duplicates: a hit whose
    cosine to a better one reaches ``dedup_threshold`` *and* that says the same words."""
    chosen: list[tuple[float, MemoryItem, dict[str, float]]] = []
    pool = list(scored)

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
            pick = 0  # pure relevance: the head of the sorted pool
        else:
            values = [cfg.mmr_lambda * s - (1 - cfg.mmr_lambda) * redundancy(it)[0] for s, it, _ in pool]
            pick = int(np.argmax(values))
        score, item, details = pool.pop(pick)
        sim, twin = redundancy(item)
        if (
            twin is not None
            and sim >= cfg.dedup_threshold
            and lexical_overlap(content_of(twin.memory), content_of(item.memory)) >= cfg.dedup_overlap
        ):
            continue
        chosen.append((score, item, {**details, "redundancy": round(sim, 6), "final": round(score, 6)}))
    return [MemoryHit.from_item(item, score, details) for score, item, details in chosen]
