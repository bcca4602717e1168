"""MemOS beside its peers on LoCoMo: same data, same embedder, same depth, same scorer.

    python benchmarks/peers.py --data ../shared/bench/locomo/locomo_dev.json [--out peers.json]

Runs the development split of ``../shared/bench/locomo`` through

* **memos** — ``locomo.run_memos``, the exact recipe of ``benchmarks/locomo.py``;
* **memos-lexical** — the same ingest, searched with ``mode="lexical"`` (BM25 alone, no query
  embedding) on its own copy of the data folder;
* **memos-keyword** — the same, with ``mode="keyword"`` (the plain BM25 ranking: no nudges,
  no de-duplication);
* **langgraph** — LangGraph's ``InMemoryStore`` with a vector ``index`` (384 dims, MemOS's
  default embedder as its ``embed`` function): one namespace per conversation, one item per
  turn keyed by its ``dia_id`` (each session written with one ``store.batch`` of ``PutOp``s),
  searched with ``store.search(namespace, query=question, limit=depth)``;
* **mem0** — ``mem0.Memory`` (open-source, local) with ``infer=False``, its embedded Qdrant in
  a temporary folder, telemetry off: every turn added on its own (``user_id`` = the
  conversation, ``dia_id`` in its metadata), searched with ``search(question,
  filters={"user_id": ...}, top_k=depth, threshold=0.0)`` (threshold 0 so that it fills the
  depth like the others). Its embedder is built from mem0's ``huggingface`` provider pointed at
  the packaged MiniLM folder, then (``--mem0-embedder shared``, the default) swapped for MemOS's
  default embedder so that all three embed with the same code; ``huggingface`` keeps mem0's own
  (sentence-transformers on torch: the same vectors, a slower runtime than MemOS's ONNX).

All three embed with the packaged all-MiniLM-L6-v2. Each peer stores a turn as the benchmark's
own turn text (``score.py``'s ``doc``: ``Speaker said, "text"`` and the image caption), the text
behind the README's single-turn MiniLM baseline, which the peers therefore reproduce.
Every system is warmed up before anything is timed (MemOS as ``run_memos`` does it, by
embedding once; each peer loads its model and makes one untimed search); only the search call
is timed, and the 1-minute load average around each system's run is recorded. Rankings map
back to ``dia_id``s (exact provenance for the peers; MemOS's windows expand to their turns) and
are scored by the benchmark's ``score.py`` (``evaluate`` then ``aggregate``) exactly as
locomo.py does. A peer that cannot be imported
or run is recorded with the exact error, and the others still run.

During each system's run outbound network connections are refused and counted
(``network_attempts``); mem0's LLM is replaced by a stub that counts calls (``llm_calls``),
so ``infer=False`` is checked to make none. The script prints a markdown table for
docs/BENCHMARKS.md ("Peers").
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from locomo import Run, load_scorer, pct, questions, run_memos_modes, session_messages

SYSTEMS = ("memos", "memos-lexical", "memos-keyword", "langgraph", "mem0")
#: MemOS's systems and the search mode of each (one ingest serves them all).
MEMOS_MODES = {"memos": "hybrid", "memos-lexical": "lexical", "memos-keyword": "keyword"}
#: Each system's latency is compared with these MemOS systems' (the ratio's key suffix).
RATIO_BASES = {"": "memos", "_lexical": "memos-lexical", "_keyword": "memos-keyword"}
METRICS = ("turn_R@1", "turn_R@5", "turn_R@10", "turn_NDCG@10", "session_R@10")
PACKAGES = (
    "memos-suite", "langgraph", "mem0ai", "qdrant-client", "sentence-transformers", "torch", "onnxruntime",
)  # fmt: skip


def turn_documents(conv: dict[str, Any]) -> dict[str, str]:
    """What a peer stores for each turn, by ``dia_id``: ``score.py``'s turn text (the format of
    the official LoCoMo RAG code), the text of the README's single-turn baselines."""
    return {t["dia_id"]: t["doc"] for t in conv["turns"]}


def subset(
    convs: list[dict[str, Any]], scorer: ModuleType, *, sessions: int | None, max_questions: int | None
) -> list[dict[str, Any]]:
    """Smoke-run subsets: the first ``sessions`` sessions of each conversation (keeping only the
    questions whose evidence lies in them) and the first ``max_questions`` scored questions."""
    out = []
    for conv in convs:
        turns, qas = conv["turns"], conv["qas"]
        if sessions is not None:
            kept = sorted({t["session"] for t in turns})[:sessions]
            turns = [t for t in turns if t["session"] in kept]
            qas = [qa for qa in qas if set(qa["evidence_sessions"]) <= set(kept)]
        if max_questions is not None:
            scored = [qa for qa in qas if qa["category"] in scorer.EVAL_CATEGORIES and qa["evidence"]]
            qas = scored[:max_questions]
        out.append({**conv, "turns": turns, "qas": qas})
    return out


@contextlib.contextmanager
def refuse_network(attempts: list[str]) -> Iterator[None]:
    """Refuse (and record) every outbound IP connection made inside the block."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(repr(address))
            raise OSError(f"peers.py: network refused ({address!r})")
        original(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]


def run_langgraph(convs: list[dict[str, Any]], scorer: ModuleType, *, depth: int, progress: bool) -> Run:
    from langgraph.store.base import PutOp
    from langgraph.store.memory import InMemoryStore
    from tqdm import tqdm

    from memos_core.embedders import default_embedder

    embedder = default_embedder()  # MemOS's: the packaged all-MiniLM-L6-v2, one thread

    def embed(texts: Any) -> list[list[float]]:
        return embedder.embed(list(texts)).tolist()  # type: ignore[no-any-return]

    store = InMemoryStore(index={"dims": embedder.dim, "embed": embed, "fields": ["text"]})
    store.put(("warmup",), "w", {"text": "warm up"})
    store.search(("warmup",), query="warm up", limit=depth)

    run = Run()
    for conv in tqdm(convs, desc="LangGraph", disable=not progress):
        namespace = ("locomo", conv["sample_id"])
        sessions, docs = session_messages(conv), turn_documents(conv)
        t0 = time.perf_counter()
        for n in sorted(sessions):
            store.batch(
                [
                    PutOp(
                        namespace,
                        m["id"],
                        {"text": docs[m["id"]], "speaker": m["name"], "time": m["chat_time"]},
                    )
                    for m in sessions[n]
                ]
            )
        run.ingest_s += time.perf_counter() - t0
        for qa in questions(conv, scorer):
            t0 = time.perf_counter()
            hits = store.search(namespace, query=qa["question"], limit=depth)
            run.latencies_ms.append((time.perf_counter() - t0) * 1000)
            run.rankings[(conv["sample_id"], qa["question"])] = scorer.dedupe([h.key for h in hits])
    return run


def run_mem0(
    convs: list[dict[str, Any]],
    scorer: ModuleType,
    *,
    depth: int,
    progress: bool,
    notes: list[str],
    embedder: str = "shared",
) -> tuple[Run, int]:
    """mem0 with ``infer=False``; returns the run and how many times its LLM was called."""
    with tempfile.TemporaryDirectory(prefix="peers-mem0-") as tmp:
        os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is imported
        os.environ["MEM0_DIR"] = str(Path(tmp) / "home")  # instead of ~/.mem0
        # mem0 builds its (default OpenAI) LLM client eagerly, and the client wants a key;
        # infer=False never calls it (the stub below counts any call).
        os.environ.setdefault("OPENAI_API_KEY", "sk-unused-infer-false")
        from mem0 import Memory
        from mem0.embeddings.base import EmbeddingBase
        from tqdm import tqdm

        from memos_core.embedders import default_embedder, packaged_minilm_path

        missing = [
            why
            for module, why in (
                ("spacy", "spaCy (mem0ai[nlp], and its en_core_web_sm model is a run-time download): "
                 "no BM25 lemmas, no entity boosts"),
                ("fastembed", "fastembed (mem0ai[extras], and its Qdrant/bm25 model is a run-time download "
                 "from the model hub): no BM25 keyword leg"),
            )
            if importlib.util.find_spec(module) is None
        ]  # fmt: skip
        if missing:
            notes.append("not installed: " + "; ".join(missing) + ". mem0 ranks by vector similarity only")

        memory = Memory.from_config(
            {
                "vector_store": {
                    "provider": "qdrant",
                    "config": {
                        "collection_name": "locomo",
                        "embedding_model_dims": 384,
                        "path": str(Path(tmp) / "qdrant"),
                    },
                },
                "embedder": {
                    "provider": "huggingface",
                    "config": {
                        "model": str(packaged_minilm_path()),
                        "embedding_dims": 384,
                        "model_kwargs": {"device": "cpu"},
                    },
                },
                "history_db_path": str(Path(tmp) / "history.db"),
            }
        )
        if embedder == "shared":
            shared = default_embedder()

            class SharedEmbedding(EmbeddingBase):  # type: ignore[misc]
                """MemOS's default embedder behind mem0's embedder interface."""

                def embed(self, text: str, memory_action: str | None = None) -> list[float]:
                    return shared.embed([text])[0].tolist()  # type: ignore[no-any-return]

                def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
                    return shared.embed(texts).tolist() if texts else []  # type: ignore[no-any-return]

            memory.embedding_model = SharedEmbedding(memory.embedding_model.config)
        llm_calls = 0

        def no_llm(*args: Any, **kwargs: Any) -> str:
            nonlocal llm_calls
            llm_calls += 1
            raise RuntimeError("mem0 called its LLM although infer=False")

        memory.llm.generate_response = no_llm

        def search(query: str, user: str) -> list[dict[str, Any]]:
            found = memory.search(query, filters={"user_id": user}, top_k=depth, threshold=0.0)
            return found["results"]  # type: ignore[no-any-return]

        memory.add([{"role": "user", "content": "warm up"}], user_id="warmup", infer=False)
        search("warm up", "warmup")

        run = Run()
        for conv in tqdm(convs, desc="mem0", disable=not progress):
            user = conv["sample_id"]
            sessions, docs = session_messages(conv), turn_documents(conv)
            t0 = time.perf_counter()
            for n in sorted(sessions):
                for m in sessions[n]:
                    memory.add(
                        [{"role": "user", "name": m["name"], "content": docs[m["id"]]}],
                        user_id=user,
                        metadata={"dia_id": m["id"], "session": n, "chat_time": m["chat_time"]},
                        infer=False,
                    )
            run.ingest_s += time.perf_counter() - t0
            for qa in questions(conv, scorer):
                t0 = time.perf_counter()
                hits = search(qa["question"], user)
                run.latencies_ms.append((time.perf_counter() - t0) * 1000)
                ranked = [(h.get("metadata") or {}).get("dia_id") for h in hits]
                run.rankings[(user, qa["question"])] = scorer.dedupe([d for d in ranked if d])
        memory.close()
    return run, llm_calls


def score_run(convs: list[dict[str, Any]], scorer: ModuleType, run: Run, depth: int) -> dict[str, Any]:
    """``score.py``'s ``evaluate`` then ``aggregate``, as locomo.py does."""
    records = scorer.evaluate(
        convs, lambda conv, q: run.rankings.get((conv["sample_id"], q), []), depth=depth
    )
    table = scorer.aggregate(records)
    overall = table["overall (micro)"]
    return {
        "questions": len(records),
        "metrics": {m: round(overall[m], 4) for m in METRICS},
        "by_category": {
            name: {"n": row["n"], **{m: round(row[m], 4) for m in METRICS}} for name, row in table.items()
        },
        "ingest_seconds": round(run.ingest_s, 2),
        "search_ms_p50": round(pct(run.latencies_ms, 50), 2) if run.latencies_ms else None,
        "search_ms_p95": round(pct(run.latencies_ms, 95), 2) if run.latencies_ms else None,
    }


def run_system(
    name: str,
    convs: list[dict[str, Any]],
    scorer: ModuleType,
    *,
    depth: int,
    progress: bool,
    mem0_embedder: str = "shared",
    memos_runs: dict[str, Run] | None = None,
) -> dict[str, Any]:
    """Run one system. ``memos_runs``: MemOS's runs per mode, made once for every MemOS system."""
    attempts: list[str] = []
    notes: list[str] = []
    extra: dict[str, Any] = {}
    runners: dict[str, Callable[[], Run]] = {
        **{n: (lambda m=m: (memos_runs or {})[m]) for n, m in MEMOS_MODES.items()},
        "langgraph": lambda: run_langgraph(convs, scorer, depth=depth, progress=progress),
    }
    load_before = os.getloadavg()[0]
    try:
        with refuse_network(attempts):
            if name == "mem0":
                run, extra["llm_calls"] = run_mem0(
                    convs, scorer, depth=depth, progress=progress, notes=notes, embedder=mem0_embedder
                )
                extra["embedder"] = mem0_embedder
            else:
                run = runners[name]()
    except Exception as exc:
        return {
            "status": "unavailable" if isinstance(exc, ImportError) else "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
            "notes": notes,
            "network_attempts": attempts,
        }
    if name in MEMOS_MODES:
        extra["fine_stage_seconds"] = round(run.fine_s, 2)
    # Other work on the machine skews latency: the 1-minute load average before and after.
    extra["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return {"status": "ok", **score_run(convs, scorer, run, depth), **extra, "notes": notes,
            "network_attempts": attempts}  # fmt: skip


def memos_source() -> dict[str, Any]:
    """Which MemOS was measured: the checkout ``memos_core`` was imported from, its commit, and
    whether ``memos_core`` had uncommitted changes (numbers from a dirty tree do not reproduce)."""
    import subprocess

    import memos_core

    root = Path(memos_core.__file__).resolve().parent.parent
    info: dict[str, Any] = {"path": str(root)}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git = ["git", "-C", str(root)]
        info["commit"] = subprocess.check_output([*git, "rev-parse", "--short", "HEAD"], text=True).strip()
        changed = subprocess.check_output([*git, "status", "--porcelain", "memos_core"], text=True)
        info["memos_core_uncommitted_changes"] = bool(changed.strip())
    return info


def add_ratios(systems: dict[str, dict[str, Any]]) -> None:
    """Each system's latency over MemOS's (``latency_ratio_p50``: hybrid, the default), MemOS
    lexical's (``latency_ratio_lexical_p50``) and MemOS keyword's (``latency_ratio_keyword_p50``)."""
    for suffix, base_name in RATIO_BASES.items():
        base = systems.get(base_name, {})
        for result in systems.values():
            for q in ("p50", "p95"):
                mine, theirs = result.get(f"search_ms_{q}"), base.get(f"search_ms_{q}")
                result[f"latency_ratio{suffix}_{q}"] = round(mine / theirs, 2) if mine and theirs else None


LABELS_SHORT = {"memos": "MemOS", "memos-lexical": "MemOS lexical", "memos-keyword": "MemOS keyword"}
LABELS = {
    "memos": "MemOS (`locomo.run_memos`)",
    "memos-lexical": 'MemOS, `mode="lexical"`',
    "memos-keyword": 'MemOS, `mode="keyword"`',
    "langgraph": "LangGraph `InMemoryStore` + index",
    "mem0": "mem0 `Memory`, `infer=False`, embedded Qdrant",
}


def markdown(summary: dict[str, Any]) -> str:
    def num(value: Any, fmt: str, unit: str) -> str:
        return "—" if value is None else format(value, fmt) + unit

    bases = [s for s, base in RATIO_BASES.items() if base in summary["systems"]]
    lines = [
        "| system | turn R@1 | R@5 | R@10 | NDCG@10 | session R@10 | ingest | search p50 | p95 | "
        + " | ".join(f"{q} / {LABELS_SHORT[RATIO_BASES[s]]}" for s in bases for q in ("p50", "p95"))
        + " |",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * (2 * len(bases)),
    ]
    failed = []
    for name, r in summary["systems"].items():
        if r["status"] != "ok":
            failed.append(f"- {name}: {r['status']} — `{r['error']}`")
            continue
        m = r["metrics"]
        cells = [LABELS.get(name, name)] + [f"{m[k]:.3f}" for k in METRICS]
        cells += [f"{r['ingest_seconds']:.1f} s", num(r["search_ms_p50"], ".1f", " ms"),
                  num(r["search_ms_p95"], ".1f", " ms")]  # fmt: skip
        cells += [num(r[f"latency_ratio{s}_{q}"], ".2f", "×") for s in bases for q in ("p50", "p95")]
        lines.append("| " + " | ".join(cells) + " |")
    ok = [n for n, r in summary["systems"].items() if r["status"] == "ok"]
    if ok:
        categories = list(summary["systems"][ok[0]]["by_category"])
        lines += ["", "turn R@10 by category:", "",
                  "| category | n | " + " | ".join(ok) + " |", "|---|---|" + "---|" * len(ok)]  # fmt: skip
        for cat in categories:
            n = summary["systems"][ok[0]]["by_category"][cat]["n"]
            row = [f"{summary['systems'][s]['by_category'][cat]['turn_R@10']:.3f}" for s in ok]
            lines.append(f"| {cat} | {n} | " + " | ".join(row) + " |")
    if failed:
        lines += ["", "Not run:", *failed]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="locomo_dev.json")
    parser.add_argument("--scorer", type=Path, help="score.py (default: next to --data)")
    parser.add_argument(
        "--peers", default=",".join(SYSTEMS), help="comma-separated, of: " + ", ".join(SYSTEMS)
    )
    parser.add_argument("--conversations", type=int, help="only the first N conversations (smoke runs)")
    parser.add_argument("--sessions", type=int, help="only the first N sessions of each (smoke runs)")
    parser.add_argument("--questions", type=int, help="only the first N questions of each (smoke runs)")
    parser.add_argument("--depth", type=int, default=50, help="hits per question (score.py reads 50)")
    parser.add_argument(
        "--mem0-embedder", choices=("shared", "huggingface"), default="shared",
        help="mem0's embedder: MemOS's default (shared) or mem0's own sentence-transformers one",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.peers.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)  # process-wide; MemOS's embedder sets the same when it loads

    scorer = load_scorer(args.scorer or args.data.parent / "score.py")
    convs = scorer.load_locomo(str(args.data))[: args.conversations]
    convs = subset(convs, scorer, sessions=args.sessions, max_questions=args.questions)

    systems: dict[str, dict[str, Any]] = {}
    memos_runs: dict[str, Run] | None = None
    memos_failure: dict[str, Any] | None = None
    memos_attempts: list[str] = []
    memos_load: list[float] = []
    modes = tuple(MEMOS_MODES[n] for n in SYSTEMS if n in chosen and n in MEMOS_MODES)
    for name in SYSTEMS:
        if name not in chosen:
            continue
        if name in MEMOS_MODES and memos_runs is None and memos_failure is None:
            memos_load.append(round(os.getloadavg()[0], 2))
            try:  # one ingest for every MemOS mode, under the same network guard as the peers
                with refuse_network(memos_attempts):
                    memos_runs = run_memos_modes(
                        convs, scorer, depth=args.depth, progress=not args.no_progress, modes=modes
                    )
            except Exception as exc:
                memos_failure = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc(limit=8), "notes": [],
                                 "network_attempts": memos_attempts}  # fmt: skip
            memos_load.append(round(os.getloadavg()[0], 2))
        if name in MEMOS_MODES and memos_failure is not None:
            systems[name] = memos_failure
            continue
        systems[name] = run_system(
            name, convs, scorer, depth=args.depth, progress=not args.no_progress,
            mem0_embedder=args.mem0_embedder, memos_runs=memos_runs,
        )  # fmt: skip
        if name in MEMOS_MODES:  # ingest and searches ran above: their guard and load
            systems[name]["network_attempts"] = memos_attempts
            systems[name]["load_average"] = memos_load
    add_ratios(systems)

    from memos_core.embedders import default_embedder

    try:
        backend = default_embedder().backend
    except Exception as exc:  # reported, not fatal: the systems above already ran or failed
        backend = f"unknown ({type(exc).__name__}: {exc})"
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    summary: dict[str, Any] = {
        "data": str(args.data),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "conversations": len(convs),
        "turns": sum(len(c["turns"]) for c in convs),
        "questions": sum(len(questions(c, scorer)) for c in convs),
        "depth": args.depth,
        "embedder": f"all-MiniLM-L6-v2 (packaged), MemOS's default embedder on {backend}",
        "versions": versions,
        "memos_source": memos_source(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "systems": systems,
    }
    summary["markdown"] = markdown(summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "markdown"}, indent=2))
    print()
    print(summary["markdown"])
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
