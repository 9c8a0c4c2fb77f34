"""The second recipe, automatic: the bipartite image-tag network from step 05's tags.csv
(Source = image id, Target = tag, Weight = confidence), spatialised with ForceAtlas2.

The `fa2` package runs ForceAtlas2 in Cython with the Barnes-Hut approximation, O(n log n) per
iteration; networkx's `forceatlas2_layout` computes all pairs and is out of reach past ~10k nodes.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from common.cli import UserError
from common.columns import row_ids

TAG_COLUMNS = ("Source", "Target", "Weight")


@dataclass(frozen=True)
class Fa2Params:
    iterations: int = 200
    linlog: bool = False
    gravity: float = 1.0
    scaling: float = 2.0
    strong_gravity: bool = False
    dissuade_hubs: bool = False
    edge_weight_influence: float = 1.0
    theta: float = 1.2
    seed: int | None = 42


@dataclass
class Network:
    """Image nodes 0..n-1 (in the projection's row order), then tag nodes n..n+m-1."""

    adjacency: sp.csr_matrix
    tags: list[str]
    image_degree: np.ndarray
    tag_degree: np.ndarray
    tag_weight: np.ndarray
    dropped: Counter


def read_edges(path, image_ids: list[str]) -> tuple[pd.DataFrame, Counter]:
    """Edges (image row, tag, weight) whose image is on the map; the rest counted by reason.

    Source is the image's row id; a Source that is the image URL (a hand-made edge table, as in
    the spreadsheet recipe) is hashed to the row id. A missing Weight counts as 1 (as in step 07).
    """
    if not path.is_file():
        raise UserError(f"{path} not found: --layout network needs step 05's tags "
                        "(run 05_process_images.py with tagging on), or use --layout umap")
    edges = pd.read_csv(path, dtype={"Source": str, "Target": str}, keep_default_na=False)
    missing = [c for c in TAG_COLUMNS if c not in edges.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {', '.join(missing)}: it needs Source, Target, Weight")
    weight = pd.to_numeric(edges["Weight"], errors="coerce").fillna(1.0).to_numpy(np.float64)
    tag = edges["Target"].str.strip()
    lookup = pd.Index(image_ids)
    row = lookup.get_indexer(edges["Source"])
    unmatched = np.flatnonzero(row < 0)
    if len(unmatched):
        row[unmatched] = lookup.get_indexer(row_ids(edges["Source"].iloc[unmatched].tolist()))
    reasons = {"edge_no_tag": (tag == "").to_numpy(),
               "edge_weight_not_positive": ~(np.isfinite(weight) & (weight > 0)),
               "edge_image_not_on_map": row < 0}
    dropped, keep = Counter(), np.ones(len(edges), bool)
    for reason, bad in reasons.items():
        dropped[reason] = int((bad & keep).sum())  # each edge counted once, under its first reason
        keep &= ~bad
    out = pd.DataFrame({"row": row[keep], "tag": tag[keep].to_numpy(), "weight": weight[keep]})
    before = len(out)
    # a tag listed twice for one image is one edge, at its highest confidence
    out = out.groupby(["row", "tag"], as_index=False, sort=True)["weight"].max()
    dropped["edge_duplicate"] = before - len(out)
    return out, Counter({k: v for k, v in dropped.items() if v})


def build_network(edges: pd.DataFrame, n_images: int, dropped: Counter) -> Network:
    tags = sorted(edges["tag"].unique().tolist())
    tag_col = n_images + pd.Index(tags).get_indexer(edges["tag"])
    n = n_images + len(tags)
    upper = sp.coo_matrix((edges["weight"].to_numpy(np.float64), (edges["row"].to_numpy(), tag_col)), shape=(n, n))
    adjacency = (upper + upper.T).tocsr()
    image_degree = np.bincount(edges["row"].to_numpy(), minlength=n_images)
    tag_index = tag_col - n_images
    tag_degree = np.bincount(tag_index, minlength=len(tags))
    tag_weight = np.bincount(tag_index, weights=edges["weight"].to_numpy(np.float64), minlength=len(tags))
    return Network(adjacency, tags, image_degree, tag_degree, tag_weight, dropped)


def forceatlas2(network: Network, p: Fa2Params) -> np.ndarray:
    """(n_nodes, 2) positions after p.iterations of Barnes-Hut ForceAtlas2."""
    from fa2 import ForceAtlas2

    n = network.adjacency.shape[0]
    if n == 0:
        return np.zeros((0, 2))
    fa = ForceAtlas2(outboundAttractionDistribution=p.dissuade_hubs, linLogMode=p.linlog,
                     edgeWeightInfluence=p.edge_weight_influence, barnesHutOptimize=True,
                     barnesHutTheta=p.theta, scalingRatio=p.scaling, strongGravityMode=p.strong_gravity,
                     gravity=p.gravity, seed=p.seed, verbose=False)
    with tqdm(total=p.iterations, desc="ForceAtlas2", unit="iteration") as bar:
        positions = fa.forceatlas2(network.adjacency, iterations=p.iterations,
                                   callbacks=[lambda _i, _nodes: bar.update(1)])
    return np.asarray(positions, dtype=np.float64)
