"""Embeddings: the packaged MiniLM, and the text-hash cache in front of it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memos_core import CachingEmbedder, MemOS, SentenceTransformerEmbedder


class Counting:
    """Wraps an embedder and counts the texts it really embeds."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner, self.texts = inner, 0
        self.model_id, self.dim = inner.model_id, inner.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_packaged_minilm_gives_unit_vectors_that_rank_sensibly(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    v = real_embedder.embed(["I adopted a puppy", "We got a new dog", "Quarterly tax filing deadline"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    assert real_embedder.model_id == "all-MiniLM-L6-v2/384"


def test_embeddings_are_cached_by_text_hash_across_instances(
    tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    msg = [{"role": "user", "content": "I keep bees on the roof", "chat_time": "2024-01-01T00:00:00Z"}]
    first = Counting(real_embedder)
    with MemOS(tmp_path / "d", embedder=first, scheduler="inline") as m:
        m.add_message(msg, user_id="u")
    assert first.texts == 1
    # A new process-level cache (new MemOS, new LRU) still finds the vector in the store.
    second = Counting(real_embedder)
    with MemOS(tmp_path / "d", scheduler="inline") as m2:
        m2.embedder = CachingEmbedder(second, persistent=m2.store)  # type: ignore[arg-type]
        m2.add_message(msg, user_id="u2")
        assert second.texts == 0
        m2.search_memory("bees", user_id="u2")
        m2.search_memory("bees", user_id="u2")
        assert second.texts == 1  # the query, once: the LRU serves the repeat
