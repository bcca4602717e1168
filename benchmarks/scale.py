"""Store throughput, search latency, HNSW recall and memory at 10k / 100k / 1M memories in
one cube, through the public API.

    python benchmarks/scale.py --sizes 10000,100000,1000000 --out scale.json

For each size, in a fresh data folder:

1. fill: N synthetic chat memories (latency.py's vocabulary) written through the store's
   ``PutItems`` in batches of ``--batch``. Their vectors come from a pool of ``--pool``
   texts embedded for real with the packaged MiniLM: memory ``i`` says pool text ``i % pool``
   plus its own "(note i)", and past the pool its vector is the pool text's plus noise (cosine
   ~0.9 to it), so a 1M fill measures the store, not the embedder, in a realistic space;
2. warm: the cube's vectors read into memory and its HNSW index built (``SqliteStore.warm``);
3. recall@10 of the vector leg against exact cosine over every vector (computed here, apart
   from the store), for ``--recall-queries`` real query embeddings;
4. ``--adds`` single-message ``MemOS.add_message`` calls (embedding included) and
   ``--queries`` ``MemOS.search_memory`` calls (query embedding, BM25 + vector legs under
   the default scope, fusion, re-scoring), each timed, and each query also with
   ``mode="lexical"`` (BM25 alone, no query embedding) and ``mode="keyword"`` (the plain BM25
   ranking), the three modes' order rotating; the two store legs timed alone too;
5. reopen: a new process's view (a new store on the folder): vectors read, saved index loaded.

Peak RSS (``resource.getrusage``) is recorded after the searches, before the recall check.
Prints a JSON summary (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import NAMES, PLACES, THINGS, VERBS

NOISE = 0.025  # per dimension: a copy of a pool vector has cosine ~0.9 with it
USER = "bench"


def pool_text(rng: random.Random) -> str:
    return (
        f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)} "
        f"and talked about {rng.choice(THINGS)}"
    )


def query(rng: random.Random, size: int) -> str:
    """Three in four ask in common words only; one in four names a note (a rare word)."""
    if rng.random() < 0.25:
        return f"which note mentioned {rng.randrange(size)} and {rng.choice(THINGS)}?"
    return f"what did {rng.choice(NAMES)} do with {rng.choice(THINGS)} in {rng.choice(PLACES)}?"


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(pct(values, 50), 2), "p95": round(pct(values, 95), 2)}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


class Corpus:
    """Memory ``i``: its text and (reproducibly, batch by batch) its vector."""

    def __init__(self, texts: list[str], vectors: np.ndarray, seed: int = 11) -> None:
        self.texts, self.vectors, self.seed = texts, vectors, seed

    def text(self, i: int) -> str:
        return f"{self.texts[i % len(self.texts)]} (note {i})"

    def batch(self, lo: int, hi: int) -> np.ndarray:
        """Vectors of memories ``lo..hi-1`` (the same every time: seeded by ``lo``)."""
        idx = np.arange(lo, hi)
        out = self.vectors[idx % len(self.texts)].copy()
        copies = idx >= len(self.texts)
        if copies.any():
            noise = np.random.default_rng(self.seed + lo).standard_normal((int(copies.sum()), out.shape[1]))
            out[copies] += (NOISE * noise).astype(np.float32)
            out[copies] /= np.linalg.norm(out[copies], axis=1, keepdims=True)
        return out


def exact_top(corpus: Corpus, size: int, queries: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Indices of the exact top-``k`` memories per query, streaming over the corpus."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for lo in range(0, size, chunk):
        hi = min(lo + chunk, size)
        s = queries @ corpus.batch(lo, hi).T
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, hi), s.shape)], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    return best_i


#: search_memory's modes, and the key of each one's timings in the summary.
MODES = ("hybrid", "lexical", "keyword")
MODE_KEYS = {"hybrid": "search_ms", "lexical": "search_lexical_ms", "keyword": "search_keyword_ms"}


def rotated(i: int) -> tuple[str, ...]:
    """The modes in the order query ``i`` runs them: rotating, so that no mode always finds
    another's reads in the caches."""
    return MODES[i % len(MODES) :] + MODES[: i % len(MODES)]


def small_tenant(
    store: Any, mem: Any, corpus: Corpus, size: int, texts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Search latency of a small tenant beside the big one: ``--tenant`` memories of another
    user (the same vocabulary, so the query's words are common in the table but not in its
    cube), searched in both modes like the big one. This is what one user of a shared
    database pays for the others' memories."""
    from memos_core import MemoryItem, user_cube_id
    from memos_core.ports import PutItems

    user = "small-tenant"
    cube = user_cube_id(user)
    first = size + args.adds  # texts no memory of the big tenant has
    model = mem.embedder.model_id
    items = [
        MemoryItem(cube_id=cube, user_id=user, memory=corpus.text(first + i), embedding_model=model)
        for i in range(args.tenant)
    ]
    store.batch([PutItems(items, list(corpus.batch(first, first + args.tenant)))])
    mem.search_memory("warm up", user_id=user)
    timings: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i, q in enumerate(texts[: args.tenant_queries]):
        for mode in rotated(i):
            timings[mode].append(
                timed(lambda q=q, mode=mode: mem.search_memory(q, user_id=user, top_k=10, mode=mode))
            )
    return {"memories": args.tenant, **{MODE_KEYS[mode]: ms(timings[mode]) for mode in MODES}}


def run_size(
    size: int, corpus: Corpus, embedder: Any, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    from tqdm import tqdm

    from memos_core import MemoryItem, MemOS, SqliteStore, user_cube_id
    from memos_core.filters import parse_filter
    from memos_core.ports import PutItems
    from memos_core.stores.sqlite import AnnConfig

    ann = AnnConfig(threshold=args.ann_threshold, background=False)
    folder = Path(tempfile.mkdtemp(prefix=f"scale-{size}-", dir=workdir))
    out: dict[str, Any] = {"memories": size}
    try:
        store = SqliteStore.from_path(folder, ann=ann)
        store.setup()
        cube = user_cube_id(USER)
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        ids: list[str] = []
        model = embedder.model_id
        bar = tqdm(total=size, desc=f"fill {size:,}", unit="mem", disable=args.no_progress)
        t0 = time.perf_counter()
        for lo in range(0, size, args.batch):
            hi = min(lo + args.batch, size)
            items = [
                MemoryItem(cube_id=cube, user_id=USER, memory=corpus.text(i), embedding_model=model,
                           created_at=start + timedelta(seconds=i), event_time=start + timedelta(seconds=i))
                for i in range(lo, hi)
            ]  # fmt: skip
            store.batch([PutItems(items, list(corpus.batch(lo, hi)))])
            ids += [item.id for item in items]
            bar.update(hi - lo)
        bar.close()
        fill_s = time.perf_counter() - t0
        out["fill_seconds"] = round(fill_s, 1)
        out["fill_items_per_s"] = round(size / fill_s)

        warm = store.warm([cube])[cube]
        out["vectors_load_s"], out["index"], out["index_s"] = warm["load_s"], warm["index"], warm["index_s"]
        rng = random.Random(size)
        # Recall@10 of the vector leg (index or exact, whichever the store uses) against exact
        # cosine over the filled memories, before any add changes the cube.
        rq = embedder.embed([query(rng, size) for _ in range(args.recall_queries)])
        truth = exact_top(corpus, size, rq, 10, args.batch)
        found = 0
        for v, want in zip(rq, truth, strict=True):
            got = {h.id for h in store.search_vector([cube], v, limit=10)}
            found += len(got & {ids[i] for i in want})
        out["recall_at_10"] = round(found / (10 * len(rq)), 4)
        out["recall_queries"] = len(rq)
        mem = MemOS(store=store, embedder=embedder, scheduler="off")
        mem.search_memory("warm up", user_id=USER)

        add_ms = [
            timed(
                lambda i=i: mem.add_message(
                    [{"role": "user", "content": corpus.text(size + i)}], user_id=USER
                )
            )
            for i in tqdm(range(args.adds), desc="add", disable=args.no_progress)
        ]
        texts = [query(rng, size) for _ in range(args.queries)]
        # Each query in every mode (lexical and keyword: BM25 alone, no query embedding).
        timings: dict[str, list[float]] = {mode: [] for mode in MODES}
        for i, q in enumerate(tqdm(texts, desc="search", disable=args.no_progress)):
            for mode in rotated(i):
                t = time.perf_counter()
                hits = mem.search_memory(q, user_id=USER, top_k=10, mode=mode)
                timings[mode].append((time.perf_counter() - t) * 1000)
                assert hits.data.memory_detail_list, f"{mode} search returned nothing for {q!r}"
        out["search_lexical_ms"], out["search_keyword_ms"] = ms(timings["lexical"]), ms(timings["keyword"])
        out["small_tenant"] = small_tenant(store, mem, corpus, size, texts, args)
        # The two store legs alone, as hybrid_search sends them (default scope, 100 each).
        scope = parse_filter({"status": "activated"})
        qvecs = embedder.embed(texts)
        text_ms = [timed(lambda q=q: store.search_text([cube], q, scope, limit=100)) for q in texts]
        vector_ms = [timed(lambda v=v: store.search_vector([cube], v, scope, limit=100)) for v in qvecs]
        out["add_ms"], out["search_ms"] = ms(add_ms), ms(timings["hybrid"])
        out["text_leg_ms"], out["vector_leg_ms"] = ms(text_ms), ms(vector_ms)
        out["rss_peak_mb"] = round(rss_mb())

        mem.close()

        again = SqliteStore.from_path(folder, ann=ann)
        reload = again.warm([cube])[cube]
        out["reopen"] = {k: reload[k] for k in ("load_s", "index", "index_s")}
        again.close()
        out["db_mb"] = round(sum(p.stat().st_size for p in folder.glob("memos.db*") if p.is_file()) / 2**20)
        out["index_mb"] = round(sum(p.stat().st_size for p in folder.glob("memos.db.ann/*")) / 2**20)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated memory counts")
    parser.add_argument("--ann-threshold", type=int, default=20_000, help="cube size that gets an HNSW index")
    parser.add_argument("--pool", type=int, default=50_000, help="texts embedded for real")
    parser.add_argument("--batch", type=int, default=5_000, help="memories per PutItems batch")
    parser.add_argument("--adds", type=int, default=100)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--tenant", type=int, default=500, help="memories of a second, small tenant")
    parser.add_argument("--tenant-queries", type=int, default=100, help="searches in the small tenant")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the data folders")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    from memos_core import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(batch_size=64)
    rng = random.Random(7)
    texts = [pool_text(rng) for _ in range(min(args.pool, max(sizes)))]
    t0 = time.perf_counter()
    # The pool's vectors are kept in the work folder: a rerun does not embed them again.
    cached = args.workdir / f"scale-pool-{len(texts)}-{embedder.model_id.replace('/', '-')}.npy"
    if cached.is_file():
        vectors = np.load(cached)
    else:
        vectors = embedder.embed(texts)
        np.save(cached, vectors)
    corpus = Corpus(texts, vectors)
    summary: dict[str, Any] = {
        "pool": len(texts),
        "pool_embed_seconds": round(time.perf_counter() - t0, 1),
        "embedder": f"{embedder.model_id} on {embedder.backend}",
        "ann_threshold": args.ann_threshold,
        "sizes": {},
    }
    for size in sizes:
        load_before = os.getloadavg()[0]
        result = run_size(size, corpus, embedder, args, args.workdir)
        # Other work on the machine skews latency: the 1-minute load average before and after.
        result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        summary["sizes"][str(size)] = result
        print(json.dumps({str(size): result}), flush=True)
    summary["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    summary["date"] = datetime.now(timezone.utc).date().isoformat()
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
