"""All of step 05's embeddings in one preallocated matrix, with the metadata of their rows.

Step 05 writes `embeddings-NNNNN.npy` (float16, one row per image) beside `index-NNNNN.parquet`
(every row, with `status`; the rows with status "success", in order, are the npy's rows). Step 06
needs every vector at once (UMAP sees the whole collection), so the shards are copied into one
array allocated up front: no list of per-shard arrays, no concatenate, no second copy. At 1M x 768
that array is 1.5 GB as float16 or 3 GB as float32.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from common.cli import UserError
from common.embedding_shards import success_index, vector_shards
from common.paths import DataTree


@dataclass
class Embedded:
    """The vectors of every mapped image and, row for row, their metadata."""

    vectors: np.ndarray                 # (n, dim), float16 or float32
    meta: pa.Table                      # the index columns of those rows, same order
    shards: list[tuple[str, int]]       # (npy name, vectors in it): the input's fingerprint
    dropped: Counter = field(default_factory=Counter)

    @property
    def ids(self) -> list[str]:
        return self.meta.column("id").to_pylist()


def _open_shards(tree: DataTree) -> list[tuple[int, np.ndarray]]:
    numbers = vector_shards(tree)
    if not numbers:
        raise UserError(f"no embeddings in {tree.embeddings}: run step 05 (05_process_images.py) first")
    shards, dims = [], set()
    for n in numbers:
        arr = np.load(tree.embeddings_file(n), mmap_mode="r")
        if arr.ndim != 2:
            raise UserError(f"{tree.embeddings_file(n).name} is not a 2D array: re-run step 05 with --overwrite")
        shards.append((n, arr))
        dims.add(arr.shape[1])
    if len(dims) > 1:
        raise UserError(f"embedding shards in {tree.embeddings} differ in width {sorted(dims)} (two models?): "
                        "re-run step 05 with --overwrite and one --model")
    return shards


def _keep_mask(vectors: np.ndarray, ids: list[str], seen: set[str], dropped: Counter) -> np.ndarray:
    """Rows a map can use: finite vectors, each id once (the first shard that has it wins)."""
    keep = np.isfinite(vectors).all(axis=1)
    dropped["non_finite_embedding"] += int((~keep).sum())
    for i, row_id in enumerate(ids):
        if keep[i] and row_id in seen:
            keep[i] = False
            dropped["duplicate_id"] += 1
        elif keep[i]:
            seen.add(row_id)
    return keep


def load_embedded(tree: DataTree, dtype=np.float32) -> Embedded:
    """Every successful row of step 05, vectors in one array of `dtype` allocated once."""
    shards = _open_shards(tree)
    total = sum(arr.shape[0] for _, arr in shards)
    if total == 0:
        raise UserError(f"step 05 embedded no images in {tree.embeddings}: check its _stats.json for why")
    vectors = np.empty((total, shards[0][1].shape[1]), dtype=dtype)
    metas, fingerprint, dropped, seen, filled = [], [], Counter(), set(), 0
    for n, arr in tqdm(shards, desc="reading embeddings", unit="shard", leave=False):
        meta = success_index(tree, n, arr.shape[0])
        chunk = np.asarray(arr, dtype=dtype)
        keep = _keep_mask(chunk, meta.column("id").to_pylist(), seen, dropped)
        kept = int(keep.sum())
        vectors[filled:filled + kept] = chunk[keep]
        metas.append(meta.filter(pa.array(keep)))
        fingerprint.append((tree.embeddings_file(n).name, int(arr.shape[0])))
        filled += kept
        del chunk
    meta = pa.concat_tables(metas, promote_options="permissive")  # shards may differ in string widths
    # a view, not a copy: dropped rows only shorten the array
    return Embedded(vectors[:filled], meta, fingerprint, Counter({k: v for k, v in dropped.items() if v}))


def model_of(tree: DataTree) -> tuple[str, str | None]:
    """The CLIP model and pretrained tag step 05 used, from its _stats.json."""
    from common.files import read_json
    from common.paths import stats_file

    path = stats_file(tree.embeddings)
    if not path.is_file():
        raise UserError(f"{path} is missing, so step 05 did not finish: run 05_process_images.py again")
    stats = read_json(path)
    if not stats.get("model"):
        raise UserError(f"{path} does not name the CLIP model: re-run step 05, or pass --no-concepts")
    model, pretrained = str(stats["model"]), stats.get("pretrained")
    if pretrained in (None, "") and not model.startswith(("hf-hub:", "local-dir:")):
        pretrained = "none"  # step 05 records its seeded random weights as None or "none"
    return model, (None if pretrained in (None, "") else str(pretrained))
