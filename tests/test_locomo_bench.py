"""The LoCoMo benchmark (benchmarks/locomo.py) end to end on one conversation, as
`make bench-smoke` runs it: the hash embedder keeps it to seconds; the scoring path, the
rankings file score.py reads and the plot are the real ones. Skips without the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "bench" / "locomo" / "locomo_dev.json"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason=f"LoCoMo data not found at {DATA}"),
]


def test_locomo_smoke_scores_plots_and_writes_rankings(tmp_path: Path) -> None:
    out, results, png = tmp_path / "summary.json", tmp_path / "results.jsonl", tmp_path / "plot.png"
    script = str(ROOT / "benchmarks" / "locomo.py")
    run = subprocess.run(
        [sys.executable, script, "--data", str(DATA), "--conversations", "1", "--hash-embedder",
         "--no-progress", "--out", str(out), "--results", str(results), "--plot", str(png)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["conversations"] == 1 and summary["questions"] > 100
    assert summary["window"] == [1, 0, 3]
    overall = summary["table"]["overall (micro)"]
    assert all(0.0 <= overall[m] <= 1.0 for m in ("turn_R@1", "turn_R@10", "turn_NDCG@10", "session_R@10"))
    assert overall["turn_R@10"] >= overall["turn_R@1"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    turns = {t["dia_id"] for t in json.loads(DATA.read_text())[0]["conversation"].get("session_1", [])}
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(lines) == summary["questions"] and all(len(x["retrieved"]) <= 50 for x in lines)
    assert any(set(x["retrieved"]) & turns for x in lines)  # rankings are dia_ids of the data
    # score.py reads the rankings file: every line is one of its questions (the other four
    # conversations' questions, not run here, are the only ones it misses)
    check = subprocess.run(
        [sys.executable, str(DATA.parent / "score.py"), "--data", str(DATA), "--results", str(results)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr[-2000:]
    assert f"WARNING: {760 - summary['questions']} questions had no results line" in check.stdout
