"""How far composed KV caches are from one joint prefill: mean KL over teacher-forced answers.

Two memory chunks are rendered through the chat template as the prompt's stable block ``A``
(system prompt + memories) and volatile block ``B`` (more memories + end of the system turn).
``A`` and ``B`` are cached alone and put together in several ways; each way is scored against
the joint prefill of ``A + B`` by the mean KL divergence of the next-token distributions over
the answer the memories support (teacher-forced; the question turn is fed but not scored),
for questions alternating between facts in ``A`` and facts in ``B``::

    .venv/bin/python benchmarks/kv_compose.py --out /tmp/kv_compose.json
    .venv/bin/python benchmarks/kv_compose.py --smoke          # seconds; checks it runs

Rows: ``joint`` (0 by definition), ``extended`` (``A`` cached, ``B`` prefilled on top: exact),
``naive`` (concatenated as built, MemOS's way), ``rerotated`` (``B``'s keys moved to their
true positions), ``recompute N%`` (re-rotated plus CacheBlend-style recompute of N % of ``B``),
``recompute 15% @L8`` (tokens selected at layer 8 instead of 1), ``drop B`` (``A`` only).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kv_accel.activation import KVCache, build_cache, extend_cache, render_prompt
from kv_accel.compose import answer_kl, compose
from kv_accel.model import LocalModel

SYSTEM = "You are a helpful assistant. Answer the user's question from the memories below."
NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena"]
CITIES = ["Paris", "Lima", "Osaka", "Cairo", "Oslo", "Quito", "Perth", "Dakar", "Riga", "Hanoi"]
CITIES += ["Tunis", "Porto"]
JOBS = ["nurse", "pilot", "baker", "teacher", "welder", "chemist", "lawyer", "farmer", "editor", "plumber"]
PETS = ["a cat", "a parrot", "two dogs", "a turtle", "a rabbit", "no pets", "a hamster", "three fish"]
FOODS = ["soup", "sushi", "tacos", "curry", "pasta", "salad"]
INSTRUMENTS = ["violin", "piano", "guitar", "drums", "flute", "cello"]


def statements(people: range) -> list[str]:
    """Six memory statements per person (~90 tokens per person)."""
    out = []
    for i in people:
        n = NAMES[i]
        out += [
            f"{n} lives in {CITIES[i]} and works as a {JOBS[i % len(JOBS)]}.",
            f"{n} has {PETS[i % len(PETS)]} at home.",
            f"{n}'s favourite food is {FOODS[i % 6]}, and {n} cooks it every Sunday.",
            f"{n} started learning the {INSTRUMENTS[i % 6]} in {2010 + i}.",
            f"{n} prefers meetings in the {['morning', 'evening'][i % 2]} and dislikes long calls.",
            f"{n}'s sister is called {NAMES[(i + 5) % 12]}a and visits twice a year.",
        ]
    return out


def qa_pairs(people_a: range, people_b: range) -> list[tuple[str, str]]:
    """Questions with the answers the memories support, alternating between A and B."""
    pairs = []
    for i, j in zip(people_a, people_b, strict=False):
        pairs += [
            (f"Where does {NAMES[i]} live?", f"{NAMES[i]} lives in {CITIES[i]}."),
            (f"What pet does {NAMES[j]} have?", f"{NAMES[j]} has {PETS[j % len(PETS)]} at home."),
            (f"What is {NAMES[j]}'s job?", f"{NAMES[j]} works as a {JOBS[j % len(JOBS)]}."),
            (
                f"Which instrument did {NAMES[i]} start learning?",
                f"{NAMES[i]} started learning the {INSTRUMENTS[i % 6]} in {2010 + i}.",
            ),
        ]
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=int, default=6, help="people per chunk (6 -> ~530 tokens)")
    ap.add_argument("--questions", type=int, default=12, help="question/answer pairs scored")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--smoke", action="store_true", help="2 people per chunk, 2 questions")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.people, args.questions = 2, 2

    lm = LocalModel.smollm2(num_threads=args.threads)
    people_a, people_b = range(args.people), range(args.people, 2 * args.people)
    stable, volatile = statements(people_a), statements(people_b)
    pairs = qa_pairs(people_a, people_b)[: args.questions]
    prompts = [render_prompt(lm.tokenizer, SYSTEM, stable, volatile, q) for q, _ in pairs]
    ids_a, ids_b = list(prompts[0].segment_ids[0]), list(prompts[0].segment_ids[1])

    started = time.perf_counter()
    a = build_cache(lm, ids_a)
    started_b = time.perf_counter()
    b = build_cache(lm, ids_b)
    prefill_b = time.perf_counter() - started_b
    joint = build_cache(lm, ids_a + ids_b)
    built = time.perf_counter() - started
    print(f"A {len(ids_a)} tokens, B {len(ids_b)} tokens; caches built in {built:.1f} s")

    variants: dict[str, tuple[KVCache, float]] = {}

    def timed(name: str, make: Any) -> None:
        t = time.perf_counter()
        cache = make()
        variants[name] = (cache, time.perf_counter() - t)

    timed("joint", lambda: joint)
    timed("extended", lambda: extend_cache(lm, a, ids_a + ids_b))
    timed("naive", lambda: compose(lm, [a, b], recompute=0.0, reposition=False))
    timed("rerotated", lambda: compose(lm, [a, b], recompute=0.0))
    for pct in (5, 15, 30):
        timed(f"recompute {pct}%", lambda pct=pct: compose(lm, [a, b], recompute=pct / 100))
    timed("recompute 15% @L8", lambda: compose(lm, [a, b], recompute=0.15, select_layer=8))
    timed("drop B", lambda: a)

    per_question: dict[str, list[float]] = {name: [] for name in variants}
    for (_, text), p in zip(pairs, prompts, strict=True):
        question = list(p.segment_ids[2])
        answer = lm.tokenizer.encode(text, add_special_tokens=False)
        for name, (cache, _) in variants.items():
            # drop B: the question follows A directly (B's memories and end of turn are gone)
            per_question[name].append(answer_kl(lm, cache, joint, answer, prompt_ids=question))

    rows = []
    for name, (_, seconds) in variants.items():
        kls = per_question[name]
        rows.append(
            {
                "method": name,
                "mean_kl": round(statistics.fmean(kls), 4),
                "min_kl": round(min(kls), 4),
                "max_kl": round(max(kls), 4),
                "seconds": round(seconds, 3) if name not in ("joint", "drop B") else None,
            }
        )
    print(f"\n{'method':<20} {'mean KL':>8} {'min':>8} {'max':>8} {'build s':>8}")
    for r in rows:
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.2f}"
        print(f"{r['method']:<20} {r['mean_kl']:>8.4f} {r['min_kl']:>8.4f} {r['max_kl']:>8.4f} {secs:>8}")
    print(f"(prefilling B alone took {prefill_b:.2f} s)")

    if args.out:
        result = {
            "benchmark": "kv_compose",
            "command": " ".join(["benchmarks/kv_compose.py", *(argv if argv is not None else sys.argv[1:])]),
            "model": lm.name,
            "tokens_a": len(ids_a),
            "tokens_b": len(ids_b),
            "qa_pairs": [list(p) for p in pairs],
            "threads": args.threads,
            "prefill_b_seconds": round(prefill_b, 3),
            "machine": platform.platform(),
            "rows": rows,
            "per_question": {k: [round(x, 4) for x in v] for k, v in per_question.items()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
