"""Step 06: lay the embedded images out on a 2D map, find clusters on it and name them.

Reads step 05's embeddings (data/embeddings/embeddings-NNNNN.npy + index-NNNNN.parquet; tags.csv
for --layout network). Writes data/projection/umap_projection.parquet: the index metadata of every
embedded image plus x, y (0..1), cluster (-1 = noise), cluster_label and label_score; with
--layout network also data/projection/tag_nodes.parquet (tag, x, y, degree, weight); then
_stats.json (backend, parameters, seed, counts, per-cluster names and scores, seconds, peak memory).

Layouts: UMAP on the CLIP embeddings (cuML on an NVIDIA GPU, umap-learn otherwise), or
ForceAtlas2 on the bipartite image-tag network (the Gephi recipe, done automatically). Clusters:
HDBSCAN on the map. Names: the vocabulary concepts closest to what sets a cluster apart from the
whole collection, plus its most distinctive caption words (c-TF-IDF).

Example:
    python 06_reduce_dimensionality.py --neighbors 25 --dist 0.1
    python 06_reduce_dimensionality.py --layout network --linlog --iterations 300
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import pyarrow as pa

from common import clusters, concept_vectors, layout, network_layout
from common.cli import UserError, add_overwrite, entrypoint, parser
from common.embedding_matrix import load_embedded, model_of
from common.embedding_shards import vector_shards
from common.files import read_json, write_parquet
from common.paths import DataTree, stats_file
from common.stats import StepStats, public_params

STEP = "06_reduce_dimensionality"
DEFAULT_SEED = 42
# measured peak memory of the whole step: ~14 KB per 768-wide image without PCA (umap-learn's float32
# copy and random-projection forest): 2.0 GB at 100k, ~14 GB at 1M; with PCA to 64 (and the PCA start
# past layout.SPECTRAL_MAX_ROWS) 1.3 GB at 100k and 6.0 GB at 1M
AUTO_PCA, AUTO_PCA_ROWS = 64, 200_000
RANDOM_WEIGHTS = "none"  # step 05's pretrained tag for random weights
# with random weights an image's nearest concept is chance: "homeless person" would be invented meaning
RANDOM_NOTE = ("CLIP ran with random weights (--pretrained none): the layout means nothing and cluster names "
               "come from caption words alone")
# flags that do not change the map: a re-run with other values still counts as "already done"
NOT_MAP_PARAMS = {"data_dir", "overwrite", "device"}


# ---------------------------------------------------------------------------- command line
def add(p, name: str, **kw) -> None:
    """A flag in both spellings, --min-cluster-size and --min_cluster_size."""
    names = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    p.add_argument(*names, dest=name.replace("-", "_"), **kw)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    add(p, "layout", choices=("umap", "network"), default="umap",
        help="umap: UMAP on the CLIP embeddings; network: ForceAtlas2 on the image-tag network (default: umap)")
    add(p, "neighbors", type=int, default=25, help="UMAP n_neighbors: larger keeps more global structure (default: 25)")
    add(p, "dist", type=float, default=0.1, help="UMAP min_dist: smaller packs clusters tighter (default: 0.1)")
    add(p, "metric", default="cosine", help="UMAP distance between embeddings (default: cosine)")
    add(p, "seed", type=int, default=DEFAULT_SEED,
        help=f"random seed: the same input and seed give the same map; -1 = unseeded, multi-threaded (default: {DEFAULT_SEED})")
    add(p, "backend", choices=layout.BACKENDS, default="auto",
        help="UMAP implementation: auto = cuML when cuML and a CUDA GPU are there, else umap-learn (default: auto)")
    add(p, "pca", type=int, default=None,
        help=f"project the embeddings onto their top N principal axes before UMAP; 0 = off (default: "
             f"{AUTO_PCA} past {AUTO_PCA_ROWS:,} images, to bound memory, else off)")
    add(p, "init", choices=layout.INITS, default="auto",
        help=f"umap-learn's starting layout: spectral, pca or random (default: auto = spectral up to "
             f"{layout.SPECTRAL_MAX_ROWS:,} images, pca past that, where the spectral start alone needs gigabytes)")
    add(p, "min-cluster-size", type=int, default=None,
        help="HDBSCAN: the smallest group of images that counts as a cluster (default: max(5, images / 200))")
    add(p, "min-samples", type=int, default=None, help="HDBSCAN: larger = more points called noise (default: min-cluster-size)")
    add(p, "cluster-epsilon", type=float, default=0.0,
        help="HDBSCAN cluster_selection_epsilon, in map units (0..1): merge clusters closer than this (default: 0)")
    add(p, "cluster-method", choices=("eom", "leaf"), default="eom",
        help="HDBSCAN cluster selection: eom = fewer, larger clusters; leaf = many small ones (default: eom)")
    add(p, "cluster-sample", type=int, default=50_000,
        help="cluster a random sample of this many points, then give each other point its nearest sampled "
             "neighbour's cluster (scikit-learn's HDBSCAN is quadratic) (default: 50,000)")
    add(p, "vocab", default=None,
        help="concepts for cluster names, one per line (default: the vocabulary step 05 tagged with)")
    add(p, "label-concepts", type=int, default=3, help="concepts kept per cluster, with scores (default: 3)")
    add(p, "label-terms", type=int, default=3, help="distinctive caption words kept per cluster, with scores (default: 3)")
    add(p, "no-concepts", action="store_true", help="name clusters by caption words only (no CLIP text model is loaded)")
    add(p, "device", default="auto", help="device for the CLIP text model: auto, cpu or cuda (default: auto)")
    g = p.add_argument_group("network layout (ForceAtlas2, --layout network)")
    add(g, "iterations", type=int, default=200, help="ForceAtlas2 iterations (default: 200)")
    add(g, "linlog", action=argparse.BooleanOptionalAction, default=False,
        help="LinLog mode: tighter, more separated clusters (default: off, as in Gephi)")
    add(g, "gravity", type=float, default=1.0, help="pull towards the centre; keeps loose parts near (default: 1.0)")
    add(g, "scaling", type=float, default=2.0, help="repulsion strength: larger spreads the map (default: 2.0)")
    add(g, "strong-gravity", action="store_true", help="gravity that does not weaken with distance")
    add(g, "dissuade-hubs", action="store_true", help="push hub tags (on many images) to the borders")
    add(g, "edge-weight-influence", type=float, default=1.0, help="0 = ignore tag confidence, 1 = use it (default: 1.0)")
    add(g, "theta", type=float, default=1.2, help="Barnes-Hut accuracy: smaller is more exact and slower (default: 1.2)")
    add_overwrite(p)
    return p


def check_args(a) -> None:
    if a.neighbors < 2:
        raise UserError(f"--neighbors must be 2 or more (got {a.neighbors}); 15 to 50 is usual")
    if not 0.0 <= a.dist <= 1.0:
        raise UserError(f"--dist must be between 0 and 1 (got {a.dist}); 0.0 to 0.5 is usual")
    if a.pca is not None and (a.pca < 0 or a.pca == 1):
        raise UserError(f"--pca must be 0 (off) or 2 or more (got {a.pca}); 50 to 100 is usual")
    if a.min_cluster_size is not None and a.min_cluster_size < 2:
        raise UserError(f"--min-cluster-size must be 2 or more (got {a.min_cluster_size})")
    if a.min_samples is not None and a.min_samples < 1:
        raise UserError(f"--min-samples must be 1 or more (got {a.min_samples})")
    if a.cluster_sample < 100:
        raise UserError(f"--cluster-sample must be 100 or more (got {a.cluster_sample})")
    if a.iterations < 1 or a.scaling <= 0 or a.gravity < 0 or a.theta <= 0 or a.edge_weight_influence < 0:
        raise UserError("--iterations must be 1 or more, --scaling and --theta above 0, "
                        "--gravity and --edge-weight-influence 0 or more")


# ---------------------------------------------------------------------------- steps
def already_done(tree: DataTree, params: dict) -> bool:
    """True when the same map from the same input exists; a different one needs --overwrite."""
    path = stats_file(tree.projection)
    if not (path.is_file() and tree.projection_file.is_file()):
        return False
    old = read_json(path)
    changed = sorted(k for k in params if k not in NOT_MAP_PARAMS
                     and old.get("parameters", {}).get(k) != params[k])
    inputs = [[tree.embeddings_file(n).name, int(np.load(tree.embeddings_file(n), mmap_mode="r").shape[0])]
              for n in vector_shards(tree)]
    if changed or old.get("input_shards") != inputs:
        what = f"other parameters ({', '.join('--' + k.replace('_', '-') for k in changed)})" if changed \
            else "other step-05 embeddings"
        raise UserError(f"{tree.projection_file} was made with {what}: pass --overwrite to replace it")
    print(f"{tree.projection_file} already exists with these parameters, skipping (--overwrite redoes it)")
    return True


def encode_concepts(model: str, pretrained: str, concepts: list[str], device: str) -> np.ndarray:
    """CLIP text embeddings of the concepts, with the model step 05 embedded the images with. The
    model is freed before returning: on a GPU, cuML's UMAP needs the memory it held."""
    from common.clip import free_clip, load_clip

    clip = load_clip(model, pretrained, device)
    try:
        return clip.encode_concepts(concepts)
    finally:
        free_clip(clip)


def random_weights_model(tree: DataTree) -> str | None:
    """The model step 05 ran with random weights (--pretrained none), else None."""
    path = stats_file(tree.embeddings)
    stats = read_json(path) if path.is_file() else {}
    return str(stats.get("model")) if stats.get("pretrained") == RANDOM_WEIGHTS else None


def label_source(tree: DataTree, a) -> dict:
    """Where cluster names come from: concepts and caption words, or caption words alone (and why)."""
    random_model = random_weights_model(tree)
    if random_model:
        return {"from": "caption words", "note": RANDOM_NOTE,
                "why": f"step 05 embedded with random weights ({random_model}, --pretrained none)"}
    if a.no_concepts or a.label_concepts <= 0:
        return {"from": "caption words", "note": None,
                "why": "asked for with --no-concepts" if a.no_concepts else "--label-concepts 0"}
    model, pretrained = model_of(tree)
    return {"from": "concepts and caption words", "why": f"{model} ({pretrained})", "note": None}


def concept_table(tree: DataTree, a, dim: int, source: dict) -> tuple[list[str] | None, np.ndarray | None]:
    if source["from"] == "caption words":
        print(f"naming clusters from caption words alone: {source['why']}")
        return None, None
    from common.clip import TEMPLATES, read_vocab

    concepts = read_vocab(a.vocab or concept_vectors.default_vocab(tree))
    model, pretrained = model_of(tree)
    vectors, cached = concept_vectors.concept_vectors(
        tree, model, pretrained, concepts, lambda: encode_concepts(model, pretrained, concepts, a.device), TEMPLATES)
    print(f"naming clusters with {len(concepts):,} concepts embedded by {model} ({pretrained})"
          + (", read from the cache" if cached else ""))
    if vectors.shape != (len(concepts), dim):
        raise UserError(f"the text model gives {vectors.shape[1]}-wide vectors but the images are {dim}-wide: "
                        "step 05's _stats.json names another model; re-run step 05, or pass --no-concepts")
    return concepts, vectors


def umap_xy(a, data, backend: str) -> tuple[np.ndarray, dict]:
    x, info = data.vectors, {}
    pca = a.pca if a.pca is not None else (AUTO_PCA if x.shape[0] > AUTO_PCA_ROWS else 0)
    info["pca"] = pca
    if pca and pca < x.shape[1]:
        x, kept = layout.pca_reduce(x, pca)
        info["pca_variance_kept"] = round(kept, 4)
        print(f"PCA {data.vectors.shape[1]} -> {pca} dimensions keeps {kept:.1%} of the variance")
    params = layout.UmapParams(a.neighbors, a.dist, a.metric, None if a.seed < 0 else a.seed, a.init)
    info["init"] = layout.choose_init(a.init, x.shape[0], backend)
    print(f"UMAP on {x.shape[0]:,} x {x.shape[1]} with {backend}, {info['init']} start ...")
    xy, ran = layout.umap_layout(x, params, backend)
    if ran != backend:  # cuML failed during the fit and umap-learn made the map
        info.update(backend=ran, backend_reason="cuML failed during the fit, so umap-learn made the map",
                    init=layout.choose_init(a.init, x.shape[0], ran))
    return xy, info


def network_xy(tree: DataTree, a, data) -> tuple[np.ndarray, dict, pa.Table, np.ndarray]:
    edges, dropped = network_layout.read_edges(tree.tags_file, data.ids)
    net = network_layout.build_network(edges, len(data.ids), dropped)
    params = network_layout.Fa2Params(a.iterations, a.linlog, a.gravity, a.scaling, a.strong_gravity,
                                      a.dissuade_hubs, a.edge_weight_influence, a.theta,
                                      None if a.seed < 0 else a.seed)
    print(f"ForceAtlas2 on {len(data.ids):,} images + {len(net.tags):,} tags, {len(edges):,} edges ...")
    xy = layout.to_unit_square(network_layout.forceatlas2(net, params))
    n = len(data.ids)
    tags = pa.table({"tag": net.tags, "x": xy[n:, 0], "y": xy[n:, 1],
                     "degree": net.tag_degree.astype(np.int64), "weight": net.tag_weight})
    info = {"tags": len(net.tags), "edges": len(edges), "images_without_tags": int((net.image_degree == 0).sum()),
            "edges_dropped": dict(net.dropped)}
    return xy[:n], info, tags, net.image_degree


def output_table(data, xy: np.ndarray, labels: np.ndarray, names, degree) -> pa.Table:
    label = np.array([None] + [n.label for n in names], dtype=object)[labels + 1]
    score = np.array([np.nan] + [n.score for n in names])[labels + 1]
    table = data.meta.append_column("x", pa.array(xy[:, 0])).append_column("y", pa.array(xy[:, 1]))
    table = table.append_column("cluster", pa.array(labels, pa.int64()))
    table = table.append_column("cluster_label", pa.array(label.tolist(), pa.string()))
    table = table.append_column("label_score", pa.array(score, from_pandas=True))
    if degree is not None:
        table = table.append_column("degree", pa.array(degree.astype(np.int64)))
    return table


def cluster_and_name(a, data, xy: np.ndarray, concepts, concept_vectors):
    hp = clusters.HdbscanParams(a.min_cluster_size, a.min_samples, a.cluster_epsilon, a.cluster_method,
                                a.cluster_sample, None if a.seed < 0 else a.seed)
    labels = clusters.hdbscan_clusters(xy, hp)
    captions = (data.meta.column("caption").to_pylist() if "caption" in data.meta.column_names
                else [None] * len(labels))
    names = clusters.name_clusters(labels, data.vectors, captions, concepts, concept_vectors,
                                   a.label_concepts, a.label_terms)
    return labels, names, hp.min_cluster_size or clusters.default_min_cluster_size(len(labels))


def write_outputs(tree: DataTree, data, xy, labels, names, degree, tag_nodes) -> None:
    if tag_nodes is not None:
        write_parquet(tag_nodes, tree.tag_nodes_file)
    elif tree.tag_nodes_file.exists():
        tree.tag_nodes_file.unlink()  # left from an earlier network map: it would not match this one
    write_parquet(output_table(data, xy, labels, names, degree), tree.projection_file)


# ---------------------------------------------------------------------------- main
@entrypoint
def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    check_args(a)
    tree = DataTree.at(a.data_dir)
    params = public_params(a)
    if not a.overwrite and already_done(tree, params):
        return 0
    stats = StepStats(STEP)
    backend, why = (("fa2", "ForceAtlas2 (fa2, Barnes-Hut)") if a.layout == "network"
                    else layout.choose_backend(a.backend, metric=a.metric))
    print(f"backend: {backend} ({why})")
    # float16 as step 05 wrote them (1.5 GB at 1M x 768): PCA reads them a chunk at a time; without
    # PCA, UMAP gets a float32 copy, which the automatic PCA keeps to collections of modest size
    data = load_embedded(tree, np.float16)
    stats.rows_in = len(data.ids) + sum(data.dropped.values())
    for reason, n in data.dropped.items():
        stats.drop(reason, n)
    if not len(data.ids):
        raise UserError(f"no usable embeddings in {tree.embeddings} (see the dropped counts): re-run step 05")
    labels_from = label_source(tree, a)
    concepts, concept_vectors = concept_table(tree, a, data.vectors.shape[1], labels_from)
    stats_file(tree.projection).unlink(missing_ok=True)  # the old map's record goes first: never a mismatched pair
    timings, t0, degree, tag_nodes = {}, time.time(), None, None
    if a.layout == "network":
        xy, info, tag_nodes, degree = network_xy(tree, a, data)
    else:
        raw, info = umap_xy(a, data, backend)
        backend, why = info.pop("backend", backend), info.pop("backend_reason", why)
        info["not_placed"] = int((~np.isfinite(raw).all(axis=1)).sum())
        xy = layout.to_unit_square(raw)
    timings["layout"], t0 = round(time.time() - t0, 3), time.time()
    labels, names, min_cluster_size = cluster_and_name(a, data, xy, concepts, concept_vectors)
    timings["clusters"] = round(time.time() - t0, 3)
    write_outputs(tree, data, xy, labels, names, degree, tag_nodes)
    stats.rows_out = len(labels)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats.write(tree.projection, params, packages=("numpy", "umap-learn", "scikit-learn", "fa2", "cuml"),
                layout=a.layout, backend=backend, backend_reason=why, seed=None if a.seed < 0 else a.seed,
                images=len(labels), dims=int(data.vectors.shape[1]), clusters=len(names),
                noise=int((labels < 0).sum()), min_cluster_size=min_cluster_size,
                input_shards=[list(s) for s in data.shards], phase_seconds=timings,
                peak_memory_mb=round(peak_mb, 1), cluster_names=[n.as_dict() for n in names],
                labels=labels_from, **info)
    print(f"{len(names):,} clusters, {int((labels < 0).sum()):,} images in none; "
          f"peak memory {peak_mb:,.0f} MB -> {tree.projection_file}")
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
