"""The scale benchmark (benchmarks/scale.py) end to end at a toy size.

Runs the script as a subprocess (the way `make bench-smoke` does) on 2,000 memories with the
HNSW threshold at 500, so every stage runs: fill, index build, adds, searches, recall against
exact search, and a reopen that loads the saved index instead of rebuilding it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_scale_smoke_runs_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "2000", "--ann-threshold", "500",
        "--pool", "300", "--queries", "20", "--recall-queries", "20", "--adds", "5", "--batch", "1000",
        "--tenant", "50", "--tenant-queries", "10", "--workdir", str(tmp_path), "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())

    result = summary["sizes"]["2000"]
    assert result["memories"] == 2000 and result["fill_items_per_s"] > 0
    assert result["index"] == "built"
    assert result["reopen"]["index"] == "loaded"  # saved next to the database, not rebuilt
    assert result["recall_at_10"] >= 0.9
    for key in (
        "add_ms",
        "search_ms",
        "search_lexical_ms",
        "search_keyword_ms",
        "text_leg_ms",
        "vector_leg_ms",
    ):
        assert 0 < result[key]["p50"] <= result[key]["p95"], key
    tenant = result["small_tenant"]
    assert tenant["memories"] == 50
    for key in ("search_ms", "search_lexical_ms", "search_keyword_ms"):
        assert 0 < tenant[key]["p50"] <= tenant[key]["p95"], key
    assert result["rss_peak_mb"] > 0 and result["index_mb"] >= 0
    assert not list(tmp_path.glob("scale-2000-*"))  # data folders are removed unless --keep
