"""Hierarchical grid levels over the map, and one representative image per cell chosen for a reason.

A cell at level L is `(i, j) = (min(floor(x*L), L-1), min(floor(sy*L), L-1))` in screen
coordinates (`sy` grows downward). Levels are powers of two, so every cell of a finer level lies
in exactly one cell of each coarser level.

Representatives: at the finest level, the member closest to the cell's mean embedding among the
members that have a thumbnail. At each coarser level, among the representatives of its child
cells, the one closest to the coarse cell's mean embedding: a coarse cell always shows an image
that its children show too, so zooming in does not swap the picture under the cursor. Ties (and
rows without an embedding) fall back to the distance to the cell's mean position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common import embedding_means as em
from common.cli import UserError

MIN_LEVEL = 16      # the row tiles are 16x16: a cell must lie inside one tile
MAX_LEVEL = 4096
BASE_LEVEL = 64     # the level whose cells measure local density for Gephi and lay out a Miro board
ROW_TILES = 16


@dataclass
class Level:
    size: int
    row_cell: np.ndarray   # compact cell number of each row
    keys: np.ndarray       # j * size + i of each compact cell, ascending
    count: np.ndarray      # rows per cell
    rep: np.ndarray        # row index of each cell's representative
    cluster: np.ndarray    # the most common cluster among the cell's rows
    sprite: np.ndarray     # index of the representative in this level's sprite sheets, -1: no thumbnail

    @property
    def i(self) -> np.ndarray:
        return self.keys % self.size

    @property
    def j(self) -> np.ndarray:
        return self.keys // self.size


def check_levels(levels) -> list[int]:
    """Distinct levels, coarse to fine; powers of two from 16 to 4096 so that cells nest."""
    out = sorted(set(int(v) for v in levels))
    bad = [v for v in out if v < MIN_LEVEL or v > MAX_LEVEL or v & (v - 1)]
    if not out or bad:
        raise UserError(f"--levels {' '.join(map(str, bad or levels))}: use powers of two from {MIN_LEVEL} to "
                        f"{MAX_LEVEL} (e.g. --levels 64 128 256) so that each cell lies inside one coarser cell")
    return out


def base_level(levels) -> int:
    """BASE_LEVEL when the export has it, else its coarsest level."""
    return BASE_LEVEL if BASE_LEVEL in levels else min(levels)


def cell_index(coord: np.ndarray, size: int) -> np.ndarray:
    return np.minimum(np.floor(coord * size).astype(np.int64), size - 1)


def first_per_group(group: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, position of its best element): sorted by group, then by each key in turn (smallest wins)."""
    order = np.lexsort(tuple(reversed(keys)) + (group,))
    g = group[order]
    first = np.r_[True, g[1:] != g[:-1]]
    return g[first], order[first]


def mode_per_group(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Most common value per group; ties go to a non-noise (!= -1) value, then the smallest."""
    uniq, code = np.unique(values, return_inverse=True)
    pairs, counts = np.unique(group * len(uniq) + code, return_counts=True)
    g, v = pairs // len(uniq), pairs % len(uniq)
    cells, best = first_per_group(g, -counts, uniq[v] == -1, v)
    out = np.full(n_groups, -1, np.int64)
    out[cells] = uniq[v[best]]
    return out


def morton(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Z-order key: consecutive keys are spatial neighbours, so one sprite sheet covers one block."""
    def spread(v):
        v = v.astype(np.uint64) & np.uint64(0xFFFF)
        for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v
    return spread(i) | (spread(j) << np.uint64(1))


def _cells(x: np.ndarray, sy: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys_row = cell_index(sy, size) * size + cell_index(x, size)
    keys, row_cell, count = np.unique(keys_row, return_inverse=True, return_counts=True)
    return keys, row_cell, count


def _mean_positions(x, sy, group, n_groups) -> tuple[np.ndarray, np.ndarray]:
    weights = np.bincount(group, minlength=n_groups).clip(1)
    return np.bincount(group, x, n_groups) / weights, np.bincount(group, sy, n_groups) / weights


@dataclass
class _Vectors:
    """What the coarser levels need from the embeddings: per-cell sums and the finest reps' vectors."""
    index: em.EmbeddingIndex
    sums: np.ndarray
    counts: np.ndarray
    rep_vectors: np.ndarray
    row_of: dict


def _finest(x, sy, has_thumb, cluster, index, size) -> tuple[Level, _Vectors | None]:
    keys, row_cell, count = _cells(x, sy, size)
    n = len(keys)
    vectors = None
    dist = np.full(len(x), np.inf)
    if index is not None:
        means, vec_count = em.cell_means(index, row_cell, n)
        dist = em.distances(index, row_cell, means)
    mx, my = _mean_positions(x, sy, row_cell, n)
    pos = (x - mx[row_cell]) ** 2 + (sy - my[row_cell]) ** 2
    _, rep = first_per_group(row_cell, ~has_thumb, dist, pos)
    if index is not None:
        vectors = _Vectors(index, means * vec_count[:, None].astype(np.float32), vec_count,
                           em.gather(index, rep), dict(zip(rep.tolist(), range(n))))
    level = Level(size, row_cell, keys, count, rep, mode_per_group(row_cell, cluster, n), np.full(n, -1))
    return level, vectors


def _coarser(x, sy, has_thumb, cluster, vectors, child: Level, size) -> Level:
    keys, row_cell, count = _cells(x, sy, size)
    n = len(keys)
    parent = row_cell[child.rep]  # the coarse cell of each child cell
    assert np.array_equal(parent[child.row_cell], row_cell), "grid levels do not nest"
    cand = child.rep
    d = np.full(len(cand), np.inf)
    if vectors is not None:
        vectors.sums = em.group_sums(parent, vectors.sums, n, np.float32)
        vectors.counts = np.bincount(parent, vectors.counts, n)
        means = vectors.sums / np.maximum(vectors.counts, 1).astype(np.float32)[:, None]
        e = vectors.rep_vectors[[vectors.row_of[r] for r in cand.tolist()]]
        d = np.einsum("ij,ij->i", e, e) - 2.0 * np.einsum("ij,ij->i", e, means[parent])
        d[vectors.index.shard[cand] < 0] = np.inf
    mx, my = _mean_positions(x, sy, row_cell, n)
    pos = (x[cand] - mx[parent]) ** 2 + (sy[cand] - my[parent]) ** 2
    cells, best = first_per_group(parent, ~has_thumb[cand], d, pos)
    assert len(cells) == n, "a coarse cell has no child cell"
    return Level(size, row_cell, keys, count, cand[best], mode_per_group(row_cell, cluster, n), np.full(n, -1))


def build_levels(x: np.ndarray, sy: np.ndarray, has_thumb: np.ndarray, cluster: np.ndarray,
                 index: em.EmbeddingIndex | None, levels: list[int]) -> dict[int, Level]:
    """Every level's non-empty cells, counts, clusters and representatives (see the module doc)."""
    sizes = sorted(levels, reverse=True)
    child, vectors = _finest(x, sy, has_thumb, cluster, index, sizes[0])
    out = {child.size: child}
    for size in sizes[1:]:
        child = out[size] = _coarser(x, sy, has_thumb, cluster, vectors, child, size)
    return dict(sorted(out.items()))


def assign_sprites(levels: dict[int, Level], has_thumb: np.ndarray) -> None:
    """Number each level's representatives that have a thumbnail, in Z-order of their cells."""
    for level in levels.values():
        with_thumb = np.flatnonzero(has_thumb[level.rep])
        order = with_thumb[np.argsort(morton(level.i[with_thumb], level.j[with_thumb]), kind="stable")]
        level.sprite = np.full(len(level.keys), -1, np.int64)
        level.sprite[order] = np.arange(len(order))


def row_tile(x: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Row tile number ty * 16 + tx of each row."""
    return cell_index(sy, ROW_TILES) * ROW_TILES + cell_index(x, ROW_TILES)
