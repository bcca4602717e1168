"""Shared fixtures. The real packaged MiniLM loads once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from memos_core import MemOS, SentenceTransformerEmbedder
from memos_core.testing import HashEmbedder


@pytest.fixture(scope="session")
def real_embedder() -> SentenceTransformerEmbedder:
    emb = SentenceTransformerEmbedder()
    emb.embed(["warm up"])
    return emb


@pytest.fixture
def mem(tmp_path: Path, real_embedder: SentenceTransformerEmbedder) -> Iterator[MemOS]:
    """A MemOS on a fresh folder with the real embedder and an inline scheduler."""
    m = MemOS(tmp_path / "data", embedder=real_embedder, scheduler="inline")
    yield m
    m.close()


@pytest.fixture
def fast_mem(tmp_path: Path) -> Iterator[MemOS]:
    """A MemOS with the hash embedder, for logic that does not depend on the model."""
    m = MemOS(tmp_path / "data", embedder=HashEmbedder(), scheduler="inline")
    yield m
    m.close()
