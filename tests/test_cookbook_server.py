"""The HTTP cookbook (``cookbook/client_*.py``) run as users run it: one real ``memos serve``
for the module (the packaged MiniLM), each script a subprocess with ``MEMOS_BASE_URL`` and
``MEMOS_API_KEY`` set. A failure here means the walkthrough in the cookbook README no longer
works over HTTP: read the script's stderr in the assertion message, then the server log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memos_core.testing import MemosServer

pytestmark = pytest.mark.slow

COOKBOOK = Path(__file__).resolve().parents[1] / "cookbook"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemosServer]:
    with MemosServer(tmp_path_factory.mktemp("cookbook-server"), tenants=("acme",), embedder=None) as srv:
        yield srv


def run(server: MemosServer, name: str) -> str:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MEMOS_BASE_URL": server.base_url,
        "MEMOS_API_KEY": server.keys["acme"],
    }
    proc = subprocess.run(
        [sys.executable, str(COOKBOOK / name)], capture_output=True, text=True, timeout=120, env=env
    )
    log = server.log.read_text()[-2000:] if server.log.exists() else ""
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}\nserver:\n{log}"
    )
    return proc.stdout


def test_add_and_search(server: MemosServer) -> None:
    """An add answers with its fast-stage memories and the search finds the turn at once."""
    out = run(server, "client_add_and_search.py")
    assert "added: 2 memories" in out
    assert "from ['m1']" in out and "found the Python turn" in out


def test_async_add_and_task_polling(server: MemosServer) -> None:
    """The task goes to completed; the same ids read as mode=fine; async_mode=False waits."""
    out = run(server, "client_async_tasks.py")
    assert "task queued" in out and "completed" in out
    assert out.count("mode=fine") == 3
    assert "async_mode=False returned with the task completed" in out


def test_tags_info_and_filters(server: MemosServer) -> None:
    """The README's English filter and the Chinese one each keep only the matching memory."""
    out = run(server, "client_filters.py")
    assert "tags=['study'] info={'scene': 'chat'}" in out
    assert "tags=['工作'] info={'custom_status': '待准备'}" in out
    assert "filters ok" in out


def test_image_message(server: MemosServer) -> None:
    """An image part becomes a memory; with tesseract on the server its text is in it."""
    out = run(server, "client_image.py")
    assert "shared an image: data:image/png;base64,…" in out and "found the image memory" in out
    if shutil.which("tesseract"):
        assert "OCR text found" in out and "INVOICE 4711" in out
    else:
        assert "no OCR text" in out


def test_knowledgebase_search(server: MemosServer) -> None:
    """A document uploaded as bytes is chunked, and its chunk ranks in a search of the KB."""
    out = run(server, "client_knowledgebase.py")
    assert "added handbook.md: 3 chunks, status ready" in out
    assert "origin=knowledgebase (Employee handbook #1)" in out
    assert "found the vacation policy in the knowledge base" in out
