"""Time to first token with and without an activation (KV) cache of the memory prefix.

    python benchmarks/kv_ttft.py --sizes 256,1024,2048 --runs 5 --out kv_ttft.json

For each prefix size a memory prefix (system prompt + synthetic memory statements rendered as
kv_accel renders them) of about that many tokens is built, then a short question is appended:

- **uncached**: prefill the whole prompt and take the first token's logits;
- **cached**: the prefix's KV cache (built once, stored as safetensors, loaded back) is made
  into a fresh live cache (a copy, as every use does) and only the question is prefilled.

Medians of ``--runs`` runs of each, after one warm-up. Also: cache size on disk (fp32 and
bf16), load time from disk, build time, and whether the greedy answer (``--check-tokens``
tokens) is identical with and without the cache. The model is the packaged
SmolLM2-135M-Instruct on the CPU with ``--threads`` torch threads.
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
from pathlib import Path

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Goro", "Hana", "Ivan", "Jo"]
FACTS = [
    "lives in {place}", "works as a {job}", "has a {pet} named {pet_name}", "is allergic to {food}",
    "learned to play the {instrument} last year", "visits {place} every summer", "dislikes {food}",
    "drives a {color} car", "is saving money for a trip to {place}", "collects {color} {thing}s",
]  # fmt: skip
FILL = {
    "place": ["Lisbon", "Osaka", "Nairobi", "Berlin", "Lima", "Oslo", "Hanoi", "Quebec"],
    "job": ["nurse", "carpenter", "pilot", "teacher", "chemist", "baker", "lawyer", "tailor"],
    "pet": ["dog", "cat", "parrot", "rabbit", "tortoise"],
    "pet_name": ["Rex", "Miso", "Kiwi", "Luna", "Pepper", "Taro"],
    "food": ["peanuts", "shellfish", "gluten", "strawberries", "sesame"],
    "instrument": ["cello", "banjo", "violin", "piano", "oboe"],
    "color": ["green", "red", "silver", "blue", "yellow"],
    "thing": ["stamp", "teapot", "marble", "postcard", "coin"],
}
SYSTEM = "You are a helpful assistant. Use the memories below when they are relevant."


def memories(rng: random.Random, n: int) -> list[str]:
    out = []
    for i in range(n):
        fact = rng.choice(FACTS)
        fill = {k: rng.choice(v) for k, v in FILL.items()}
        out.append(f"{NAMES[i % len(NAMES)]} {fact.format(**fill)}.")
    return out


def prefix_of(lm: object, size: int, rng: random.Random) -> tuple[list[str], int]:
    """Memories whose rendered prefix is the largest not above ``size`` tokens."""
    from kv_accel import render_prompt

    pool = memories(rng, 400)
    lo, hi = 1, len(pool)
    while lo < hi:  # binary search on the number of memories
        mid = (lo + hi + 1) // 2
        n = len(render_prompt(lm.tokenizer, SYSTEM, pool[:mid], [], "?").prefix_ids(1))  # type: ignore[attr-defined]
        lo, hi = (mid, hi) if n <= size else (lo, mid - 1)
    chosen = pool[:lo]
    return chosen, len(render_prompt(lm.tokenizer, SYSTEM, chosen, [], "?").prefix_ids(1))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,1024,2048", help="prefix sizes in tokens, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 16 or args.runs < 1:
        parser.error("sizes must be >= 16 tokens and runs >= 1")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tqdm import tqdm

    from kv_accel import KVCache, LocalModel, build_cache, first_token_time, greedy, render_prompt

    started = time.perf_counter()
    lm = LocalModel.smollm2(num_threads=args.threads)
    load_model_s = time.perf_counter() - started
    rng = random.Random(11)
    question = "Which of these people is allergic to peanuts, and where do they live?"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in tqdm(sizes, desc="prefix sizes", disable=args.no_progress):
            chosen, tokens = prefix_of(lm, size, rng)
            prompt = render_prompt(lm.tokenizer, SYSTEM, chosen, [], question)
            t0 = time.perf_counter()
            cache = build_cache(lm, prompt.prefix_ids(1))
            build_s = time.perf_counter() - t0
            path = cache.save(Path(tmp) / f"{size}.safetensors")
            half = cache.astype("bfloat16").save(Path(tmp) / f"{size}.bf16.safetensors")
            loads = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                loaded = KVCache.load(path)
                loads.append(time.perf_counter() - t0)
            first_token_time(lm, prompt.ids)  # warm-up
            first_token_time(lm, prompt.ids, cache=loaded)
            plain, cached = [], []
            for _ in tqdm(range(args.runs), desc=f"{tokens} tokens", leave=False, disable=args.no_progress):
                plain.append(first_token_time(lm, prompt.ids))
                cached.append(first_token_time(lm, prompt.ids, cache=loaded))
            same = greedy(lm, prompt.ids, max_new_tokens=args.check_tokens) == greedy(
                lm, prompt.ids, cache=loaded, max_new_tokens=args.check_tokens
            )
            p, c = statistics.median(plain), statistics.median(cached)
            rows.append(
                {
                    "target_tokens": size,
                    "prefix_tokens": tokens,
                    "question_tokens": len(prompt.ids) - tokens,
                    "memories": len(chosen),
                    "ttft_uncached_ms": round(p * 1000, 1),
                    "ttft_cached_ms": round(c * 1000, 1),
                    "speedup": round(p / c, 1),
                    "reduction_pct": round(100 * (1 - c / p), 1),
                    "cache_mib_fp32": round(path.stat().st_size / 2**20, 2),
                    "cache_mib_bf16": round(half.stat().st_size / 2**20, 2),
                    "cache_load_ms": round(statistics.median(loads) * 1000, 1),
                    "cache_build_ms": round(build_s * 1000, 1),
                    "greedy_identical": same,
                }
            )
    result = {
        "benchmark": "kv_ttft",
        "date": time.strftime("%Y-%m-%d"),
        "model": lm.name,
        "threads": args.threads,
        "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "model_load_s": round(load_model_s, 2),
        "rows": rows,
    }
    cols = ("prefix", "uncached ms", "cached ms", "speedup", "fp32 MiB", "load ms", "same")
    print(" ".join(f"{c:>12}" for c in cols))
    for r in rows:
        keys = ("prefix_tokens", "ttft_uncached_ms", "ttft_cached_ms", "speedup", "cache_mib_fp32")
        print(" ".join(f"{r[k]!s:>12}" for k in (*keys, "cache_load_ms", "greedy_identical")))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if not all(r["greedy_identical"] for r in rows):
        raise SystemExit("greedy output differed with the cache")


if __name__ == "__main__":
    main()
