"""The approximate vector index of the SQLite store: HNSW (usearch) over one cube's vectors.

The exact per-cube matrix stays the reference: the index only proposes candidates, which
the store rescores exactly from the matrix, and every filter or shortfall falls back to the
exact path. Keys are the items' ``seq`` (the row's integer primary key, stable for the life
of a row), so a filter can check candidates by primary key.

An index is saved next to the database, one file per cube
(``memos.db.ann/<hash of the cube id>.usearch``): usearch's own serialisation followed by a
trailer that records which cube, model and dimension it holds and the position in the change
log it reflects. A loaded index is brought forward from that position and then verified
against the matrix (same keys, sampled vectors equal); anything else means a rebuild.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = ["AnnConfig", "AnnIndex", "ann_file"]

_MAGIC = b"MEMOSANN"
_TRAILER = struct.Struct("<Q8s")  # JSON length, magic
_FORMAT = 1


@dataclass(frozen=True)
class AnnConfig:
    """When and how the SQLite store indexes a cube's vectors with HNSW.

    Attributes:
        threshold: cubes with at least this many vectors get an HNSW index; smaller ones are
            searched exactly (a 20k x 384 matrix product is ~2 ms). ``None`` turns the index off.
        dtype: how the index stores vectors: ``"i8"`` (default; a quarter of the memory of
            float32, recall measured in docs/BENCHMARKS.md), ``"f16"`` or ``"f32"``. Candidates
            are rescored from the exact float32 matrix either way.
        connectivity / expansion_add / expansion_search: HNSW's M, efConstruction, efSearch.
            On 100k MiniLM vectors of template chat (docs/BENCHMARKS.md), M=16 left the graph
            poorly navigable (recall@10 0.44, searches returning fewer candidates than asked);
            M=32 gave 0.975-0.996 at about the same build time.
        oversample: the index is asked for ``oversample * limit`` candidates (at least
            ``min_candidates``), which then pass the filter and are rescored exactly.
        max_candidates: past this many candidates without enough hits passing the filter, the
            filter is selective: search exactly among the items it allows.
        persist: save indexes next to the database and load them on the next start.
        background: build a missing index in a background thread and search exactly until it
            is ready; ``False`` builds it in the first search (tests, benchmarks).
        build_threads: threads for a build (0: all cores; a background build uses one).
    """

    threshold: int | None = 20_000
    dtype: Literal["i8", "f16", "f32"] = "i8"
    connectivity: int = 32
    expansion_add: int = 128
    expansion_search: int = 128
    oversample: int = 4
    min_candidates: int = 64
    max_candidates: int = 4096
    persist: bool = True
    background: bool = True
    build_threads: int = 0


def _usearch() -> Any:
    """usearch's ``Index``, imported on first use (most stores never need it).

    usearch's extension carries its own static copy of libstdc++: once it is loaded, importing
    onnxruntime (the embedder's runtime) crashes the process in ``std::codecvt`` (usearch
    2.26.6, onnxruntime 1.32). Loaded the other way round, both work, so onnxruntime goes
    first where it is installed.
    """
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime  # noqa: F401

    from usearch.index import Index

    return Index


def ann_file(folder: Path, cube_id: str) -> Path:
    """The index file of ``cube_id`` (the name is a hash: cube ids may hold any character)."""
    return folder / f"{hashlib.blake2b(cube_id.encode(), digest_size=12).hexdigest()}.usearch"


class AnnIndex:
    """HNSW over one cube's vectors, keyed by item ``seq``. Not thread-safe: the store calls
    it under its vector lock (a background build works on its own instance)."""

    def __init__(self, dim: int, config: AnnConfig, *, index: Any = None) -> None:
        self.dim = dim
        self.config = config
        self.index = index or _usearch()(
            ndim=dim,
            metric="cos",
            dtype=config.dtype,
            connectivity=config.connectivity,
            expansion_add=config.expansion_add,
            expansion_search=config.expansion_search,
        )
        #: The change-log position the index reflects when saved; set by the store.
        self.position = 0
        #: Vector changes since the last save (a clean index is not saved again).
        self.dirty = 0

    def __len__(self) -> int:
        return len(self.index)

    def add_many(self, keys: np.ndarray, vectors: np.ndarray, *, threads: int = 0) -> None:
        if len(keys):
            self.index.add(np.asarray(keys, dtype=np.uint64), vectors, threads=threads)
            self.dirty += len(keys)

    def upsert(self, key: int, vector: np.ndarray) -> None:
        if key in self.index:
            self.index.remove(key)
        self.index.add(key, vector)
        self.dirty += 1

    def remove(self, key: int) -> None:
        if key in self.index:
            self.index.remove(key)
            self.dirty += 1

    def keys(self) -> np.ndarray:
        return np.asarray(self.index.keys, dtype=np.int64)

    def vectors(self, keys: np.ndarray) -> np.ndarray:
        """Stored (dequantised) vectors of ``keys``, which must all be present."""
        found = self.index.get(np.asarray(keys, dtype=np.uint64), dtype=np.float32)
        rows = found if isinstance(found, tuple) else [found]
        return np.stack([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows])

    def search(self, vector: np.ndarray, count: int) -> np.ndarray:
        """Keys of about the ``count`` nearest vectors (fewer when the index is smaller)."""
        count = min(count, len(self))
        if count <= 0:
            return np.zeros(0, dtype=np.int64)
        matches = self.index.search(vector, count, threads=1)
        return np.asarray(matches.keys, dtype=np.int64)

    # ------------------------------------------------------------------ persistence

    def save(self, path: Path, *, cube_id: str, model: str | None) -> None:
        """Write the index and its trailer to ``path`` atomically (a temporary file renamed
        over it), so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps(
            {
                "format": _FORMAT,
                "cube_id": cube_id,
                "model": model,
                "dim": self.dim,
                "dtype": self.config.dtype,
                "connectivity": self.config.connectivity,
                "count": len(self),
                "position": self.position,
            }
        ).encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            self.index.save(tmp)
            with open(tmp, "ab") as f:
                f.write(header + _TRAILER.pack(len(header), _MAGIC))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dirty = 0

    @classmethod
    def load(cls, path: Path, config: AnnConfig, *, cube_id: str, dim: int) -> AnnIndex | None:
        """The index saved at ``path`` if it is for this cube, dimension and configuration;
        ``None`` when there is none or it does not fit. Raises on a damaged file."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below; reading the trailer first
        except FileNotFoundError:
            return None
        with f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < _TRAILER.size:
                raise ValueError("index file is truncated")
            f.seek(size - _TRAILER.size)
            length, magic = _TRAILER.unpack(f.read(_TRAILER.size))
            if magic != _MAGIC or length > size - _TRAILER.size:
                raise ValueError("index file has no trailer")
            f.seek(size - _TRAILER.size - length)
            header = json.loads(f.read(length))
        wanted = {
            "format": _FORMAT,
            "cube_id": cube_id,
            "dim": dim,
            "dtype": config.dtype,
            "connectivity": config.connectivity,
        }
        if any(header.get(k) != v for k, v in wanted.items()):
            return None
        index = _usearch().restore(str(path))
        if index is None or int(index.ndim) != dim or len(index) != header["count"]:
            raise ValueError("index file does not match its trailer")
        index.expansion_search = config.expansion_search
        index.expansion_add = config.expansion_add  # not part of the file
        ann = cls(dim, config, index=index)
        ann.position = int(header["position"])
        return ann
