"""Fast-add and search latency at N memories in one cube, through the public API.

    python benchmarks/latency.py --memories 10000 --adds 300 --queries 300

The cube is first filled with N synthetic chat memories (embedded in batches and written
through the store, so the fill is quick); then ``--adds`` single-message ``add_message`` calls
(embedding included) and ``--queries`` ``search_memory`` calls are timed one by one. The
real packaged MiniLM and the embedded SQLite store are used throughout. Prints a JSON
summary (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goro", "Hana", "Ivan", "Jo"]
VERBS = ["visited", "cooked", "bought", "painted", "fixed", "learned", "sold", "found", "planted", "wrote"]
THINGS = ["a red bicycle", "sourdough bread", "an old guitar", "a garden shed", "a python script",
          "a wool sweater", "a vintage camera", "tomato seedlings", "a poem", "a wooden table",
          "the marathon route", "a pottery bowl", "a travel blog", "a chess opening", "a kite"]  # fmt: skip
PLACES = ["Lisbon", "Osaka", "the market", "the lake house", "Berlin", "the office", "Nairobi", "the park"]


def synthetic(rng: random.Random, i: int) -> str:
    return (
        f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)} "
        f"and talked about {rng.choice(THINGS)} (note {i})"
    )


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--adds", type=int, default=300)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    from tqdm import tqdm

    from memos_core import MemoryItem, MemOS, SentenceTransformerEmbedder, user_cube_id
    from memos_core.ports import PutItems

    rng = random.Random(7)
    embedder = SentenceTransformerEmbedder()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="memos-bench-") as tmp:
        mem = MemOS(tmp, embedder=embedder, scheduler="off")
        cube = user_cube_id("bench")
        t0 = time.perf_counter()
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        bar = tqdm(total=args.memories, desc="fill", unit="mem", disable=args.no_progress)
        for lo in range(0, args.memories, 256):
            texts = [synthetic(rng, i) for i in range(lo, min(lo + 256, args.memories))]
            vecs = embedder.embed(texts)
            stamps = [start + timedelta(minutes=lo + j) for j in range(len(texts))]
            items = [
                MemoryItem(cube_id=cube, user_id="bench", memory=t, embedding_model=embedder.model_id,
                           created_at=when, event_time=when)
                for t, when in zip(texts, stamps, strict=True)
            ]  # fmt: skip
            mem.store.batch([PutItems(items, list(vecs))])
            bar.update(len(texts))
        bar.close()
        fill_s = time.perf_counter() - t0

        mem.search_memory("warm up the index", user_id="bench")  # loads the cube's matrix once
        add_ms = []
        for i in tqdm(range(args.adds), desc="add", disable=args.no_progress):
            msg = [{"role": "user", "content": synthetic(rng, args.memories + i)}]
            t = time.perf_counter()
            mem.add_message(msg, user_id="bench")
            add_ms.append((time.perf_counter() - t) * 1000)
        search_ms = []
        for _ in tqdm(range(args.queries), desc="search", disable=args.no_progress):
            q = f"what did {rng.choice(NAMES)} do with {rng.choice(THINGS)} in {rng.choice(PLACES)}?"
            t = time.perf_counter()
            hits = mem.search_memory(q, user_id="bench", top_k=10)
            search_ms.append((time.perf_counter() - t) * 1000)
            assert hits.data.memory_detail_list, "search returned nothing"
        total = mem.list_memories("bench", limit=1).data.total
        mem.close()

    result = {
        "memories": total,
        "fill_seconds": round(fill_s, 1),
        "add_ms_p50": round(pct(add_ms, 50), 2),
        "add_ms_p95": round(pct(add_ms, 95), 2),
        "search_ms_p50": round(pct(search_ms, 50), 2),
        "search_ms_p95": round(pct(search_ms, 95), 2),
        "adds": args.adds,
        "queries": args.queries,
        "embedder": f"{embedder.model_id} on {embedder.backend}",
        # Other work on the machine skews latency: the 1-minute load average before and after.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "date": datetime.now(timezone.utc).date().isoformat(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
