"""Generated inputs for step 07: a projection, embeddings, thumbnails and tags, as steps 05/06 write them.

Vectorised, so the benchmark can make a million rows in seconds. Thumbnails are a handful of tiny
JPEGs written under many names (a thumbnail's content does not matter to the export's logic).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
from PIL import Image

from common.columns import row_ids
from common.paths import DataTree

DOMAINS = ("https://img.news.example.co.uk/p/", "http://cdn.stockphotos.example.com/", "https://blog.example.org/")
LABELS = ("plaza mayor", "night skyline", "football stadium", "old town", "river bridge")


@dataclass
class Generated:
    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray
    cluster: np.ndarray
    with_thumb: np.ndarray
    with_vector: np.ndarray
    vectors: np.ndarray   # float32 as step 07 reads them back (float16 on disk)


def _jpegs(n: int = 8) -> list[bytes]:
    out = []
    for k in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (24 + 4 * k, 16), (30 * k % 256, 200 - 20 * k, 90)).save(buf, "JPEG", quality=70)
        out.append(buf.getvalue())
    return out


def make_inputs(tree: DataTree, n: int = 400, seed: int = 0, dim: int = 16, thumb_fraction: float = 0.85,
                shards: int = 2, tags: bool = True, thumbs: bool = True, urls: list[str] | None = None) -> Generated:
    rng = np.random.default_rng(seed)
    k = len(LABELS)
    cluster = rng.integers(-1, k, n)
    centres = rng.uniform(0.15, 0.85, (k + 1, 2))
    xy = np.clip(centres[cluster + 1] + rng.normal(0, 0.08, (n, 2)), 0, 1)
    if n > 2:
        xy[0], xy[1] = (1.0, 1.0), (0.0, 0.0)  # the edges of the map belong to the last / first cell
    urls = urls or [f"{DOMAINS[i % len(DOMAINS)]}{i}.jpg" for i in range(n)]
    ids = np.asarray(row_ids(urls), dtype=object)
    captions = [f"{LABELS[c] if c >= 0 else 'misc'} photo {i} <b>&amp;</b>" for i, c in enumerate(cluster.tolist())]
    labels = [LABELS[c] if c >= 0 else "" for c in cluster.tolist()]
    tree.projection.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids.tolist(), "url": urls, "caption": captions, "x": xy[:, 0], "y": xy[:, 1],
                             "cluster": cluster, "cluster_label": labels,
                             "label_score": rng.uniform(0, 1, n)}), tree.projection_file)
    with_vector = rng.uniform(0, 1, n) > 0.05
    vectors = _write_embeddings(tree, rng, ids, cluster, with_vector, dim, shards)
    with_thumb = (rng.uniform(0, 1, n) < thumb_fraction) if thumbs else np.zeros(n, bool)
    if thumbs:
        tree.images.mkdir(parents=True, exist_ok=True)
        bodies = _jpegs()
        for i, row in enumerate(np.flatnonzero(with_thumb).tolist()):
            tree.thumbnail(ids[row]).write_bytes(bodies[i % len(bodies)])
    if tags:
        _write_tags(tree, rng, ids, cluster)
    return Generated(ids, xy[:, 0], xy[:, 1], cluster, with_thumb, with_vector, vectors)


def _write_embeddings(tree: DataTree, rng, ids, cluster, with_vector, dim: int, shards: int) -> np.ndarray:
    """Shards in step 05's layout; each index also lists failed rows and one row not in the projection."""
    base = rng.normal(0, 1, (len(LABELS) + 1, dim))
    vectors = base[cluster + 1] + rng.normal(0, 0.7, (len(ids), dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tree.embeddings.mkdir(parents=True, exist_ok=True)
    for s, part in enumerate(np.array_split(rng.permutation(len(ids)), shards)):
        ok = part[with_vector[part]]
        failed = part[~with_vector[part]]
        stray = np.asarray(row_ids([f"https://gone.example/{s}.jpg"]), dtype=object)
        index_ids = np.concatenate([ids[ok], ids[failed], stray])
        status = ["success"] * len(ok) + ["http_404"] * len(failed) + ["success"]
        stray_vec = rng.normal(0, 1, (1, dim))
        stray_vec /= np.linalg.norm(stray_vec)
        pq.write_table(pa.table({"id": index_ids.tolist(), "status": status}), tree.index_file(s))
        np.save(tree.embeddings_file(s), np.concatenate([vectors[ok], stray_vec]).astype(np.float16))
    return vectors.astype(np.float16).astype(np.float32)


def _write_tags(tree: DataTree, rng, ids, cluster) -> None:
    words = np.asarray(["plaza", "tower", "river", "night", "crowd", "street"], dtype=object)
    src = np.repeat(np.arange(len(ids)), 2)
    tag = words[(np.repeat(np.maximum(cluster, 0), 2) + np.tile([0, 1], len(ids))) % len(words)]
    table = pa.table({"Source": ids[src].tolist(), "Target": tag.tolist(), "Weight": rng.uniform(0.2, 1, len(src))})
    pa.csv.write_csv(table, tree.tags_file)
