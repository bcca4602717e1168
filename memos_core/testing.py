"""Test doubles that ship with the library, for your own tests as well as ours.

- :class:`HashEmbedder`: a deterministic, dependency-free embedder (bag of hashed tokens).
  Similar texts get similar vectors, so search still behaves sensibly; no model to load.
- :func:`inline_memos`: a :class:`~memos_core.MemOS` whose fine stage runs only when asked
  (``async_mode=False`` or ``run_pending()``), so tests are deterministic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .memos import MemOS
from .text import tokenize

__all__ = ["HashEmbedder", "inline_memos"]


class HashEmbedder:
    """Deterministic embedder for unit tests of logic that does not depend on the model."""

    def __init__(self, dim: int = 64) -> None:
        self._dim = dim

    @property
    def model_id(self) -> str:
        return f"hash/{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in tokenize(text) or [text]:
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) else -1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm else 1.0 / np.sqrt(self._dim)
        return out


def inline_memos(path: str | Path, **kwargs: Any) -> MemOS:
    """A MemOS on ``path`` with the hash embedder and an inline scheduler (overridable)."""
    kwargs.setdefault("embedder", HashEmbedder())
    kwargs.setdefault("scheduler", "inline")
    return MemOS(path, **kwargs)
