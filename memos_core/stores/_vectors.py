"""One cube's vectors in memory: the exact float32 matrix (the reference every search result
is scored with) and, above a size threshold, an HNSW index kept in step with it."""

from __future__ import annotations

import numpy as np

from ..errors import StoreError
from ._ann import AnnIndex

__all__ = ["CubeVectors"]


class CubeVectors:
    """The vectors of one cube as a dense matrix (rows appended, removed by swap), the
    position in the change log this view is current to, and the cube's HNSW index if any.

    Every change to the matrix is applied to the index in the same call, so the two never
    disagree. While an index is being prepared elsewhere (a background build), the keys of
    every changed row are noted in ``journal`` and replayed onto it before it is attached.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.row: dict[str, int] = {}
        #: Item ``seq`` (the index key) per row, and the row of each seq.
        self.seqs = np.zeros(0, dtype=np.int64)
        self.by_seq: dict[int, int] = {}
        self.mat = np.zeros((0, 0), dtype=np.float32)
        self.seen = 0
        self.ann: AnnIndex | None = None
        self.journal: set[int] | None = None
        self.preparing = False
        #: When the last attempt to prepare an index failed (``time.monotonic()``), if it did.
        self.ann_failed_at: float | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.mat.shape[1])

    def _grow(self, need: int) -> None:
        if need <= self.mat.shape[0]:
            return
        size = max(64, 2 * self.mat.shape[0], need)
        grown = np.zeros((size, self.dim), dtype=np.float32)
        grown[: len(self.ids)] = self.mat[: len(self.ids)]
        self.mat = grown
        seqs = np.zeros(size, dtype=np.int64)
        seqs[: len(self.ids)] = self.seqs[: len(self.ids)]
        self.seqs = seqs

    def _changed(self, seq: int, vec: np.ndarray | None) -> None:
        """Keep the index in step with one row: ``vec`` is its new vector, None if gone."""
        if self.journal is not None:
            self.journal.add(seq)
        if self.ann is not None:
            if vec is None:
                self.ann.remove(seq)
            else:
                self.ann.upsert(seq, vec)

    def load(self, seqs: np.ndarray, ids: list[str], mat: np.ndarray) -> None:
        """Replace the contents of an empty view with whole arrays (the initial load)."""
        if self.ids:
            raise StoreError("a loaded cube view cannot be bulk-loaded again")
        self.mat = np.ascontiguousarray(mat, dtype=np.float32)
        self.seqs = np.asarray(seqs, dtype=np.int64).copy()
        self.ids = list(ids)
        self.row = {item_id: i for i, item_id in enumerate(self.ids)}
        self.by_seq = {int(s): i for i, s in enumerate(self.seqs.tolist())}

    def upsert(self, item_id: str, seq: int, vec: np.ndarray) -> None:
        if not self.ids and vec.shape[0] != self.dim:
            self.mat = np.zeros((0, vec.shape[0]), dtype=np.float32)
            self.seqs = np.zeros(0, dtype=np.int64)
        if vec.shape[0] != self.dim:
            raise StoreError(f"vector of dimension {vec.shape[0]} does not match the cube's {self.dim}")
        i = self.row.get(item_id)
        if i is None:
            i = len(self.ids)
            self._grow(i + 1)
            self.ids.append(item_id)
            self.row[item_id] = i
        else:
            old = int(self.seqs[i])
            if old == seq and np.array_equal(self.mat[i], vec):
                return  # rewritten with the same vector (status or text changes): nothing to do
            if old != seq:  # the id was erased and written again: a new row, a new key
                self.by_seq.pop(old, None)
                self._changed(old, None)
        self.seqs[i] = seq
        self.by_seq[seq] = i
        self.mat[i] = vec
        self._changed(seq, vec)

    def remove(self, item_id: str) -> None:
        i = self.row.pop(item_id, None)
        if i is None:
            return
        seq = int(self.seqs[i])
        self.by_seq.pop(seq, None)
        last = len(self.ids) - 1
        if i != last:
            moved = self.ids[last]
            self.ids[i] = moved
            self.mat[i] = self.mat[last]
            self.seqs[i] = self.seqs[last]
            self.row[moved] = i
            self.by_seq[int(self.seqs[i])] = i
            if self.journal is not None:  # its row changed under a copy being indexed
                self.journal.add(int(self.seqs[i]))
        self.ids.pop()
        self._changed(seq, None)

    def scores(self, vec: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Dot products with every row (or ``rows``). einsum's own loop, not BLAS: OpenBLAS
        spreads a matrix-vector product over its threads, and on a busy 2-core machine that
        took a 20k-row product from ~1 ms to 8-15 ms (p95)."""
        if not self.ids:
            return np.zeros(0, dtype=np.float32)
        mat = self.mat[: len(self.ids)] if rows is None else self.mat[rows]
        result: np.ndarray = np.einsum("ij,j->i", mat, vec)
        return result

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Rows of the given seqs that are present (in order)."""
        get = self.by_seq.get
        return np.fromiter((r for k in keys.tolist() if (r := get(k)) is not None), dtype=np.int64)

    def replay(self, ann: AnnIndex, keys: set[int]) -> None:
        """Bring ``ann`` (not yet attached) up to date for the rows of ``keys``."""
        for key in keys:
            ann.remove(key)
            row = self.by_seq.get(key)
            if row is not None:
                ann.index.add(key, self.mat[row])

    def reconcile(self, ann: AnnIndex, *, max_fix: int) -> bool:
        """Make ``ann``'s key set equal to this view's: drop keys it should not have, add
        the rows it lacks. False (and ``ann`` left as is) when more than ``max_fix`` rows
        would have to change: the index is too stale to be worth repairing."""
        have = ann.keys()
        want = self.seqs[: len(self.ids)]
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra) + len(missing) > max_fix:
            return False
        for key in extra.tolist():
            ann.remove(key)
        if len(missing):
            rows = self.rows_of(missing)
            ann.add_many(self.seqs[rows], self.mat[rows])
        return True
