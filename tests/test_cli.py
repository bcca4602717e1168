"""The memos command, run as a user would (a subprocess, the real model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def memos(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MEMOS_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "memos_core.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    r = memos("--path", str(tmp_path / "demo"), "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "5/5 completed" in out
    assert "Berlin" in out.split("Where does Alice live now?")[1].split("search user=")[0]
    assert "花生" in out.split("小王对什么过敏")[1]
    assert "why: bm25 rank" in out
    again = memos("--path", str(tmp_path / "demo"), "demo", cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_add_search_stats(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    r = memos(
        "--path",
        data,
        *["add", "--user", "u1", "--tag", "home", "--wait", "I", "live", "in", "Lisbon"],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["status"] == "completed" and len(added["memory_ids"]) == 1
    search = ["search", "--user", "u1", "--json", "--filter"]
    r = memos("--path", data, *search, '{"tags": "home"}', *["where", "do", "I", "live"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    # The refined fact ("The user lives in Lisbon.") comes first, then the window it was read from.
    assert hits[0]["memory"] == "The user lives in Lisbon." and hits[0]["mode"] == "fine"
    assert hits[0]["sources"][-1]["memory_id"] == added["memory_ids"][0]
    assert hits[1]["id"] == added["memory_ids"][0] and "Lisbon" in hits[1]["memory"]
    r = memos("--path", data, "stats", cwd=tmp_path)
    assert json.loads(r.stdout)["cubes"] == {"user:u1": {"activated": 2}}
    bad = memos(
        "--path", data, "search", "--user", "u1", "--filter", '{"tags": {"nope": 1}}', "x", cwd=tmp_path
    )
    assert bad.returncode == 2 and "nope" in bad.stderr
