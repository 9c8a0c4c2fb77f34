"""Step 05's embeddings, matched to exported rows and streamed shard by shard.

Step 05 writes `embeddings-NNNNN.npy` (float16, one row per image) beside `index-NNNNN.parquet`
(every row, with `status`; the rows with status "success", in order, are the npy's rows). The
npy files are memory-mapped and read in chunks, so memory is bounded by the chunk and by one
mean vector per grid cell, never by the collection.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm import tqdm

from common.cli import UserError
from common.embedding_shards import success_index, vector_shards
from common.paths import DataTree

CHUNK_ROWS = 32_768


@dataclass
class EmbeddingIndex:
    """Where each exported row's vector lives: shard number and row in that shard's npy (-1: none)."""

    files: dict[int, Path]
    shard: np.ndarray   # int32 per exported row
    offset: np.ndarray  # int64 per exported row
    dim: int

    @property
    def has(self) -> np.ndarray:
        return self.shard >= 0

    def chunks(self, desc: str):
        """(row positions, float32 vectors) for every row that has one, a chunk at a time."""
        for n, path in tqdm(sorted(self.files.items()), desc=desc, unit="shard", leave=False):
            rows = np.flatnonzero(self.shard == n)
            if not len(rows):
                continue
            rows = rows[np.argsort(self.offset[rows], kind="stable")]  # sequential reads
            arr = np.load(path, mmap_mode="r")
            for start in range(0, len(rows), CHUNK_ROWS):
                part = rows[start:start + CHUNK_ROWS]
                off = self.offset[part]
                # a run of consecutive rows is read as a slice (no gather); the float16 -> float32
                # cast happens on the in-memory copy (casting straight off the memmap is ~5x slower)
                block = arr[off[0]:off[-1] + 1] if off[-1] - off[0] == len(off) - 1 else arr[off]
                yield part, np.array(block).astype(np.float32)


def load_index(tree: DataTree, ids: np.ndarray) -> EmbeddingIndex | None:
    """Match step 05's embedding rows to the exported ids; None when there are no embeddings."""
    files = {n: tree.embeddings_file(n) for n in vector_shards(tree)}
    if not files:
        return None
    lookup = pd.Index(ids)
    shard = np.full(len(ids), -1, np.int32)
    offset = np.zeros(len(ids), np.int64)
    dim = 0
    for n, path in files.items():
        arr = np.load(path, mmap_mode="r")
        if arr.ndim != 2:
            raise UserError(f"{path.name} is not a 2D array: re-run step 05 with --overwrite")
        ok_ids = np.asarray(success_index(tree, n, arr.shape[0], ["id"]).column("id").to_pylist(), dtype=object)
        dim = arr.shape[1]
        where = lookup.get_indexer(ok_ids)
        hit = where >= 0
        shard[where[hit]] = n
        offset[where[hit]] = np.flatnonzero(hit)
    if not (shard >= 0).any():
        return None
    return EmbeddingIndex(files, shard, offset, dim)


def group_sums(group: np.ndarray, values: np.ndarray, n_groups: int, dtype=np.float64) -> np.ndarray:
    """Sum of the value rows per group id, as one sparse (groups x rows) product: a single C pass
    (numpy's reduceat is slow with tens of thousands of short segments)."""
    if not len(group):
        return np.zeros((n_groups,) + values.shape[1:], dtype)
    onehot = sparse.csr_matrix((np.ones(len(group), values.dtype), (group, np.arange(len(group)))),
                               shape=(n_groups, len(group)))
    return np.asarray(onehot @ values, dtype=dtype)


def cell_means(index: EmbeddingIndex, cell: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding per cell (float32) and how many vectors went into it."""
    sums = np.zeros((n_cells, index.dim), np.float64)
    counts = np.bincount(cell[index.has], minlength=n_cells)
    for rows, vectors in index.chunks("cell means"):
        sums += group_sums(cell[rows], vectors, n_cells)
    means = sums / np.maximum(counts, 1)[:, None]
    return means.astype(np.float32), counts


def distances(index: EmbeddingIndex, cell: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Squared distance of each row's vector to its cell's mean (inf for rows with no vector).

    |e - m|^2 = |e|^2 - 2 e.m + |m|^2; the last term is the same for every member of a cell, so
    it is left out: only the order within a cell matters.
    """
    out = np.full(len(cell), np.inf, np.float64)
    for rows, vectors in index.chunks("distances"):
        m = means[cell[rows]]
        out[rows] = np.einsum("ij,ij->i", vectors, vectors) - 2.0 * np.einsum("ij,ij->i", vectors, m)
    return out


def gather(index: EmbeddingIndex, rows: np.ndarray) -> np.ndarray:
    """The float32 vectors of a few rows (zeros where a row has none), in the order given."""
    out = np.zeros((len(rows), index.dim), np.float32)
    sub = EmbeddingIndex(index.files, np.full(len(index.shard), -1, np.int32), index.offset, index.dim)
    sub.shard[rows] = index.shard[rows]
    position = {r: k for k, r in enumerate(rows.tolist())}
    for part, vectors in sub.chunks("representatives"):
        out[[position[r] for r in part.tolist()]] = vectors
    return out
