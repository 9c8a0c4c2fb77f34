"""Benchmark step 06's network layout (fa2, Barnes-Hut ForceAtlas2) against networkx's
`forceatlas2_layout` (all pairs) on the same bipartite image-tag graph.

One generated input per size: n images (step 05's layout, small random embeddings) and a tags.csv
where each image carries 3-6 of 400 tags, mostly from its own topic's 20. Each repetition runs,
in fresh processes and alternating order:
  ours     06_reduce_dimensionality.py --layout network --no-concepts --iterations N
           (read, build the graph, ForceAtlas2, HDBSCAN, parquet + stats)
  anchor   pandas read of tags.csv, networkx.Graph, nx.forceatlas2_layout(max_iter=N, weight="weight")
The anchor is O(n^2) per iteration, so it only runs up to --anchor-max images; beyond that ours
runs alone and the figures show how it grows. Wall seconds include imports; peak RSS is the
process's ru_maxrss.

  python bench/bench_06_network.py --rows 2000 10000 100000 --iterations 100
Scratch data goes to bench/out/ (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from common.columns import row_id  # noqa: E402
from bench.child_step import print_peak_rss, run_step, timed  # noqa: E402
from common.paths import DataTree, stats_file  # noqa: E402

OUT = ROOT / "bench" / "out"
TAGS, TOPICS, DIM = 400, 20, 16


def generate(root: Path, n: int, seed: int = 0) -> None:
    tree = DataTree.at(root)
    if stats_file(tree.embeddings).is_file():
        return
    tree.embeddings.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    urls = [f"http://img.test/{i}.jpg" for i in range(n)]
    ids = [row_id(u) for u in urls]
    topic = rng.integers(0, TOPICS, n)
    pq.write_table(pa.table({"id": ids, "url": urls, "caption": [f"Madrid topic{t} photo" for t in topic],
                             "status": ["success"] * n, "error": [None] * n}), tree.index_file(0))
    x = rng.normal(size=(n, DIM))
    np.save(tree.embeddings_file(0), (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    lines = ["Source,Target,Weight"]
    per_topic = TAGS // TOPICS
    for i, t in zip(ids, topic):
        k = rng.integers(3, 7)
        own = rng.random(k) < 0.8  # mostly the topic's own tags, some from anywhere
        tags = np.where(own, t * per_topic + rng.integers(0, per_topic, k), rng.integers(0, TAGS, k))
        lines += [f"{i},tag{g},{w:.3f}" for g, w in zip(set(tags.tolist()), rng.uniform(0.2, 1.0, k))]
    tree.tags_file.write_text("\n".join(lines) + "\n")
    stats_file(tree.embeddings).write_text(json.dumps({"model": "ViT-B-32", "pretrained": "none"}))


def anchor(root: Path, iterations: int) -> None:
    import networkx as nx
    import pandas as pd

    edges = pd.read_csv(DataTree.at(root).tags_file)
    g = nx.Graph()
    g.add_weighted_edges_from(zip(edges["Source"], "tag:" + edges["Target"], edges["Weight"]))
    pos = nx.forceatlas2_layout(g, max_iter=iterations, weight="weight", seed=42)
    out = root / "anchor"
    out.mkdir(exist_ok=True)
    xy = np.array(list(pos.values()))
    pq.write_table(pa.table({"node": [str(k) for k in pos], "x": xy[:, 0], "y": xy[:, 1]}), out / "xy.parquet")


def run_ours(root: Path, iterations: int) -> tuple[float, float]:
    return run_step("06_reduce_dimensionality", ["--data-dir", str(root), "--layout", "network", "--no-concepts",
                                                 "--overwrite", "--iterations", str(iterations)])


def run_anchor(root: Path, iterations: int) -> tuple[float, float]:
    return timed([sys.executable, __file__, "--worker", "anchor", "--data", str(root), "--iterations", str(iterations)])


def bench_size(n: int, a) -> dict:
    root = OUT / f"06_network_{n}"
    generate(root, n)
    contenders = {"ours": lambda: run_ours(root, a.iterations)}
    if n <= a.anchor_max:
        contenders["anchor"] = lambda: run_anchor(root, a.iterations)
    results = {name: [] for name in contenders}
    for rep in range(a.repeats):
        for name in (list(contenders) if rep % 2 == 0 else list(reversed(contenders))):
            seconds, peak = contenders[name]()
            results[name].append((seconds, peak))
            print(f"  {n:,} rep {rep + 1} {name:<7} {seconds:9,.1f} s  peak RSS {peak:8,.0f} MB", flush=True)
    summary = {name: {"median_s": statistics.median(s for s, _ in r), "peak_rss_mb": max(p for _, p in r)}
               for name, r in results.items()}
    ratio = (f"ratio ours/anchor {summary['ours']['median_s'] / summary['anchor']['median_s']:.3f}"
             if "anchor" in summary else "anchor not run (too slow at this size)")
    print(f"{n:>9,} images: " + ", ".join(f"{k} {v['median_s']:,.1f} s / {v['peak_rss_mb']:,.0f} MB"
                                           for k, v in summary.items()) + f"; {ratio}")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[2_000, 10_000], help="image counts (default: 2,000 10,000)")
    p.add_argument("--iterations", type=int, default=100, help="ForceAtlas2 iterations for both (default: 100)")
    p.add_argument("--repeats", type=int, default=1, help="repetitions per contender (default: 1)")
    p.add_argument("--anchor-max", type=int, default=2_000, help="largest size the networkx anchor runs at (default: 2,000)")
    p.add_argument("--worker", choices=["anchor"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        anchor(Path(a.data), a.iterations)
        print_peak_rss()
        return 0
    results = {n: bench_size(n, a) for n in a.rows}
    (OUT / "bench_06_network.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
