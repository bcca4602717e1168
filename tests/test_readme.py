"""The README's example runs as written (docs that match the code)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text("utf-8"), re.S)
    assert block is not None
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 16
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "queued" in out or "completed" in out or "running" in out
    lines = [x for x in out.splitlines() if x.endswith("']")]
    assert [x.rsplit(" ", 1)[-1] for x in lines] == ["['m1']", "['m2']"]  # one memory a turn, m1 first
