"""LoCoMo retrieval through the public API, scored exactly as the benchmark's ``score.py``.

    python benchmarks/locomo.py --data ../shared/bench/locomo/locomo_dev.json \
        [--out summary.json] [--plot docs/img/locomo_dev.png]

The recipe of ``../shared/bench/locomo/README.md``: one user per conversation; every session
added in order with ``add_message`` (each turn a message with the speaker as its name, the
``dia_id`` as its id and the session's date-time as its time; an image's caption is part of
its text); the fine stage run; every question of categories 1-4 searched with its raw text;
the ranked memories mapped back to ``dia_id``s through their chat sources (a memory of
several turns expands to them, in order) and scored by ``score.py`` from the data folder
(loaded from there, never copied). Reports turn and session Recall@k and NDCG@10 per
category, ingest time and search p50/p95; writes the per-question rankings as ``score.py``'s
results JSONL with ``--results`` and a bar chart per category with ``--plot``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any


def load_scorer(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("locomo_score", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the scorer {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["locomo_score"] = module
    spec.loader.exec_module(module)
    return module


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def session_messages(conv: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """A conversation's turns as ``add_message`` messages, per session number, in order."""
    sessions: dict[int, list[dict[str, Any]]] = {}
    for t in conv["turns"]:
        text = t["text"] + (f" [shares {t['caption']}]" if t.get("caption") else "")
        sessions.setdefault(t["session"], []).append(
            {"role": "user", "name": t["speaker"], "content": text, "id": t["dia_id"],
             "chat_time": t["session_time"]}
        )  # fmt: skip
    return sessions


def questions(conv: dict[str, Any], scorer: ModuleType) -> list[dict[str, Any]]:
    """The scored questions of a conversation (categories 1-4 with evidence)."""
    return [qa for qa in conv["qas"] if qa["category"] in scorer.EVAL_CATEGORIES and qa["evidence"]]


@dataclass
class Run:
    rankings: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    ingest_s: float = 0.0
    fine_s: float = 0.0


def run_memos(convs: list[dict[str, Any]], scorer: ModuleType, *, mode: str = "hybrid", **kwargs: Any) -> Run:
    """Ingest every conversation through the public API and search every question; rankings
    are keyed by ``(sample_id, question)`` as ``dia_id`` lists, best first. ``kwargs``: those of
    :func:`run_memos_modes`."""
    return run_memos_modes(convs, scorer, modes=(mode,), **kwargs)[mode]


def run_memos_modes(
    convs: list[dict[str, Any]],
    scorer: ModuleType,
    *,
    embedder: Any = None,
    window: tuple[int, int, int] = (1, 0, 3),
    depth: int = 50,
    progress: bool = True,
    retrieval: dict[str, Any] | None = None,
    modes: tuple[str, ...] = ("hybrid",),
) -> dict[str, Run]:
    """:func:`run_memos` for several search modes on one ingest: the data folder is copied
    after the fine stage, and each mode searches its own copy with a fresh MemOS (so no mode
    sees another's access counts or warm caches)."""
    from tqdm import tqdm

    from memos_core import MemOS, RetrievalConfig, WindowConfig

    runs = {mode: Run() for mode in modes}
    ingest_s = fine_s = 0.0
    with tempfile.TemporaryDirectory(prefix="memos-locomo-") as tmp:
        kwargs: dict[str, Any] = {"scheduler": "inline", "window": WindowConfig(*window)}
        if retrieval:
            kwargs["retrieval"] = RetrievalConfig(**retrieval)
        if embedder is not None:
            kwargs["embedder"] = embedder
        ingested = Path(tmp) / "data"
        with MemOS(ingested, **kwargs) as mem:
            mem.embedder.embed(["warm up"])
            for conv in tqdm(convs, desc="MemOS ingest", disable=not progress):
                user = conv["sample_id"]
                sessions = session_messages(conv)
                t0 = time.perf_counter()
                for n in sorted(sessions):
                    mem.add_message(sessions[n], user_id=user, conversation_id=f"{user}/session_{n}")
                ingest_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                mem.run_pending(timeout=3600)
                fine_s += time.perf_counter() - t0
        for mode, run in runs.items():
            run.ingest_s, run.fine_s = ingest_s, fine_s
            folder = Path(tmp) / f"search-{mode}"
            shutil.copytree(ingested, folder)
            with MemOS(folder, **kwargs) as mem:
                mem.embedder.embed(["warm up"])
                for conv in tqdm(convs, desc=f"MemOS search ({mode})", disable=not progress):
                    user = conv["sample_id"]
                    for qa in questions(conv, scorer):
                        t0 = time.perf_counter()
                        hits = mem.search_memory(
                            qa["question"], user_id=user, top_k=depth, mode=mode
                        ).data.memory_detail_list
                        run.latencies_ms.append((time.perf_counter() - t0) * 1000)
                        ranked = [
                            s.message_id for h in hits for s in h.sources if s.type == "chat" and s.message_id
                        ]
                        run.rankings[(user, qa["question"])] = scorer.dedupe(ranked)
            shutil.rmtree(folder)
    return runs


#: The README's single-turn baselines on the development split (turn R@10, categories 1-4).
BASELINES = {"BM25 over single turns": 0.578, "MiniLM cosine over single turns": 0.552}


def plot(table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """Turn R@1/5/10 and NDCG@10 per category (and overall) as grouped bars, with the README's
    baselines for overall R@10 as dashed lines, in ``path``; and beside it one plot per
    category (``<stem>_<category>.png``): turn and session recall at 1, 5 and 10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["turn_R@1", "turn_R@5", "turn_R@10", "turn_NDCG@10"]
    groups = list(table)
    fig, ax = plt.subplots(figsize=(10, 5.4), dpi=110)
    width = 0.8 / len(metrics)
    for n, metric in enumerate(metrics):
        xs = [g + (n - (len(metrics) - 1) / 2) * width for g in range(len(groups))]
        values = [table[g][metric] for g in groups]
        bars = ax.bar(xs, values, width, label=metric.replace("turn_", ""))
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    for (name, value), style in zip(BASELINES.items(), (":", "--"), strict=True):
        ax.axhline(value, color="grey", linestyle=style, linewidth=1, label=f"{name}, R@10 {value}")
    ax.set_xticks(range(len(groups)), [f"{g}\n(n={int(table[g]['n'])})" for g in groups], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("turn level")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    for group in groups:  # and one small plot per category: recall at k, turns and sessions
        fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=110)
        for level, style in (("turn", "o-"), ("session", "s--")):
            ks = [1, 5, 10]
            ax.plot(ks, [table[group][f"{level}_R@{k}"] for k in ks], style, label=f"{level} recall")
        ax.set_xticks([1, 5, 10])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("k")
        ax.set_title(f"{group} (n={int(table[group]['n'])})", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        slug = "".join(c if c.isalnum() else "_" for c in group.split(" (")[0]).strip("_")
        fig.savefig(path.with_name(f"{path.stem}_{slug}{path.suffix}"))
        plt.close(fig)


def knobs(pairs: list[str]) -> dict[str, Any]:
    """``["fusion=rrf", "bm25_weight=1"]`` as RetrievalConfig keyword arguments, each value
    converted to the type of the knob's default."""
    from dataclasses import fields

    from memos_core import RetrievalConfig

    types = {f.name: type(f.default) for f in fields(RetrievalConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in types or not value:
            raise SystemExit(f"--retrieval {pair!r}: expected KNOB=VALUE with KNOB one of {sorted(types)}")
        out[name] = types[name](value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="locomo_dev.json")
    parser.add_argument("--scorer", type=Path, help="score.py (default: next to --data)")
    parser.add_argument("--conversations", type=int, help="only the first N conversations (smoke runs)")
    parser.add_argument("--window", type=int, default=1, help="turns per fast-stage memory")
    parser.add_argument("--overlap", type=int, default=0)
    parser.add_argument("--context", type=int, default=3, help="turns of context each side")
    parser.add_argument("--depth", type=int, default=50, help="hits per question (score.py reads 50)")
    parser.add_argument("--hash-embedder", action="store_true", help="the test embedder (smoke runs only)")
    parser.add_argument("--results", type=Path, help="write score.py's results JSONL here")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    parser.add_argument("--plot", type=Path, help="write a PNG bar chart per category here")
    parser.add_argument(
        "--retrieval", action="append", default=[], metavar="KNOB=VALUE",
        help="a RetrievalConfig knob for ablations, e.g. fusion=rrf or bm25_weight=1 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--mode", choices=("hybrid", "lexical", "keyword"), default="hybrid",
        help="search_memory's mode: both legs fused (default), BM25 alone with the nudges and no "
        "query embedding, or the plain BM25 ranking",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    retrieval = knobs(args.retrieval)  # a typo fails before minutes of ingest
    from memos_core.testing import HashEmbedder

    scorer = load_scorer(args.scorer or args.data.parent / "score.py")
    convs = scorer.load_locomo(str(args.data))[: args.conversations]
    embedder = HashEmbedder() if args.hash_embedder else None
    run = run_memos(
        convs, scorer, embedder=embedder, window=(args.window, args.overlap, args.context), depth=args.depth,
        progress=not args.no_progress, retrieval=retrieval, mode=args.mode,
    )  # fmt: skip
    rankings, latencies, ingest_s, fine_s = run.rankings, run.latencies_ms, run.ingest_s, run.fine_s

    records = scorer.evaluate(
        convs, lambda conv, q: rankings.get((conv["sample_id"], q), []), depth=args.depth
    )
    title = f"MemOS (window {args.window}/{args.overlap}, context {args.context}) on {args.data.name}"
    table = scorer.print_report(records, title)
    turns = sum(len(c["turns"]) for c in convs)
    summary = {
        "data": str(args.data),
        "conversations": len(convs),
        "turns": turns,
        "questions": len(records),
        "embedder": "hash (smoke)" if embedder is not None else "all-MiniLM-L6-v2 (packaged)",
        "window": [args.window, args.overlap, args.context],
        "retrieval": retrieval,
        "mode": args.mode,
        "ingest_seconds": round(ingest_s, 2),
        "ingest_ms_per_turn": round(1000 * ingest_s / max(1, turns), 3),
        "fine_stage_seconds": round(fine_s, 2),
        "search_ms_p50": round(pct(latencies, 50), 2) if latencies else None,
        "search_ms_p95": round(pct(latencies, 95), 2) if latencies else None,
        "table": table,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "table"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.plot:
        plot(table, args.plot, f"LoCoMo {args.data.name}: {len(records)} questions, {summary['date']}")
    if args.results:
        with args.results.open("w") as fh:
            for r in records:
                got = rankings.get((r["sample_id"], r["question"]), [])
                line = {"sample_id": r["sample_id"], "qa_index": r["qa_index"], "retrieved": got}
                fh.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
