"""The packaged MiniLM on ONNX Runtime: the same vectors as torch, exported once into the
model cache, and a quiet fall back to torch where the export does not apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from memos_core import EmbeddingError, SentenceTransformerEmbedder
from memos_core.embedders import packaged_minilm_path

TEXTS = [
    "hello",
    "User (2024-05-08T13:56:00Z): Caroline: I went to a LGBTQ support group yesterday.",
    "用户喜欢 Python 和周末爬山",
    "emoji 🎉 and accents: café, naïve",
    " ".join(["a text longer than the model's 256 tokens"] * 60),
]


@pytest.mark.slow
def test_onnx_gives_torchs_vectors_alone_and_in_batches(
    real_embedder: SentenceTransformerEmbedder,
) -> None:
    """The default embedder runs on ONNX Runtime and agrees with sentence-transformers on
    torch to 1e-5, one text at a time (the add path) and in padded batches."""
    assert real_embedder.backend == "onnx"
    torch_emb = SentenceTransformerEmbedder(backend="torch")
    want = torch_emb.embed(TEXTS)
    assert np.abs(real_embedder.embed(TEXTS) - want).max() < 1e-5
    single = np.concatenate([real_embedder.embed([t]) for t in TEXTS])
    assert np.abs(single - want).max() < 1e-5
    assert real_embedder.model_id == torch_emb.model_id == "all-MiniLM-L6-v2/384"


@pytest.mark.slow
def test_export_goes_to_the_cache_and_a_damaged_file_is_redone(tmp_path: Path) -> None:
    """The export is written once under the cache folder; a damaged file is exported again."""
    emb = SentenceTransformerEmbedder(cache_dir=tmp_path, num_threads=2)  # its own session
    first = emb.embed(["the cache"])
    (exported,) = (tmp_path / "onnx").glob("*.onnx")
    exported.write_bytes(b"not a model")
    again = SentenceTransformerEmbedder(cache_dir=tmp_path, num_threads=3)
    assert again.backend == "onnx"
    assert np.allclose(again.embed(["the cache"]), first, atol=1e-6)
    assert exported.stat().st_size > 1000


@pytest.mark.slow
def test_models_other_than_mean_pooling_stay_on_torch(tmp_path: Path) -> None:
    """A folder whose pooling the export does not reproduce (CLS) runs on torch, with no
    export attempted; asking for ONNX explicitly is then an error."""
    folder = tmp_path / "cls-model"
    shutil.copytree(packaged_minilm_path(), folder)
    config = folder / "1_Pooling" / "config.json"
    pooling = json.loads(config.read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    config.write_text(json.dumps(pooling))
    emb = SentenceTransformerEmbedder(folder, cache_dir=tmp_path / "cache")
    assert emb.backend == "torch"
    assert emb.embed(["hi"]).shape == (1, 384)
    assert not (tmp_path / "cache").exists()
    with pytest.raises(EmbeddingError):
        SentenceTransformerEmbedder(folder, backend="onnx").embed(["hi"])
