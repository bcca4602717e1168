"""The peers benchmark (benchmarks/peers.py) end to end on a tiny slice of the LoCoMo split.

Runs the script as a subprocess (the way `make bench-smoke` does): MemOS (both search modes),
LangGraph's InMemoryStore and mem0 on the first two sessions of one conversation, five
questions, and checks that every system ran and scored in [0, 1]. Skips where the benchmark data
(../shared/bench/locomo) is not beside the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "bench" / "locomo" / "locomo_dev.json"
METRICS = ("turn_R@1", "turn_R@5", "turn_R@10", "turn_NDCG@10", "session_R@10")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason=f"LoCoMo data not found at {DATA}"),
]


def test_peers_smoke_runs_every_system(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--data", str(DATA),
        "--conversations", "1", "--sessions", "2", "--questions", "5", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())

    assert summary["conversations"] == 1
    assert summary["questions"] == 5
    assert set(summary["systems"]) == {"memos", "memos-lexical", "memos-keyword", "langgraph", "mem0"}
    for name, result in summary["systems"].items():
        assert result["status"] == "ok", (name, result.get("error"))
        assert result["questions"] == 5
        for metric in METRICS:
            assert 0.0 <= result["metrics"][metric] <= 1.0, (name, metric)
        assert result["ingest_seconds"] >= 0
        assert 0 < result["search_ms_p50"] <= result["search_ms_p95"]
        assert result["latency_ratio_p50"] > 0 and result["latency_ratio_p95"] > 0
        assert result["latency_ratio_lexical_p50"] > 0 and result["latency_ratio_lexical_p95"] > 0
        assert result["latency_ratio_keyword_p50"] > 0 and result["latency_ratio_keyword_p95"] > 0
        assert result["network_attempts"] == []
    assert summary["systems"]["memos"]["latency_ratio_p50"] == 1.0
    assert summary["systems"]["memos-lexical"]["latency_ratio_lexical_p50"] == 1.0
    assert summary["systems"]["memos-keyword"]["latency_ratio_keyword_p50"] == 1.0
    # One ingest serves every MemOS mode; each searched its own copy of it.
    for mode in ("memos-lexical", "memos-keyword"):
        assert summary["systems"][mode]["ingest_seconds"] == summary["systems"]["memos"]["ingest_seconds"]
    assert "p50 / MemOS keyword |" in summary["markdown"]
    assert summary["systems"]["mem0"]["llm_calls"] == 0  # infer=False never reaches the LLM
    assert "| LangGraph" in summary["markdown"] and "| mem0" in summary["markdown"]
