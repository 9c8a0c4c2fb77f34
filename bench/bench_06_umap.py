"""Benchmark step 06's UMAP map against the plain umap-learn script a researcher would write.

One generated input per size: synthetic clustered CLIP-like embeddings (unit vectors around 50
centres, float16) written as step 05 writes them (embeddings-NNNNN.npy + index-NNNNN.parquet,
10% failed rows in the index) with captions. Each repetition runs, in fresh processes and
alternating order:
  ours      06_reduce_dimensionality.py --no-concepts (read shards, UMAP, HDBSCAN, c-TF-IDF terms,
            parquet + stats); optionally also with --pca N
  anchor    read every shard's npy with np.load, np.concatenate, astype(float32), then
            umap.UMAP(n_neighbors=25, min_dist=0.1, metric="cosine", random_state=42).fit_transform
            and a parquet of x, y (no clusters, no names)
Both report wall seconds (imports included) and peak RSS (ru_maxrss of the process).
The ratio is ours / anchor on median seconds.

  python bench/bench_06_umap.py --rows 20000 100000 --repeats 1 --pca 64
  python bench/bench_06_umap.py --rows 1000000 --only 'ours default'
Scratch data goes to bench/out/ (git-ignored); it is reused between runs of the same size.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
SHARD_ROWS = 10_000
CENTRES = 50
WORDS = ["harbour", "cathedral", "market", "park", "skyline", "bridge", "metro", "beach", "museum", "night",
         "snow", "street", "plaza", "tower", "river", "garden", "palace", "station", "festival", "food"]


# ---------------------------------------------------------------------------- generated input
def generate(root: Path, n: int, dim: int, seed: int = 0) -> None:
    """n embedded rows (+10% failed ones) in step 05's layout; skipped when already there."""
    tree = DataTree.at(root)
    if stats_file(tree.embeddings).is_file():
        return
    tree.embeddings.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CENTRES, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    for s, start in enumerate(range(0, n, SHARD_ROWS)):
        m = min(SHARD_ROWS, n - start)
        c = rng.integers(0, CENTRES, m)
        x = centres[c] + rng.normal(scale=0.9 / np.sqrt(dim) * 4, size=(m, dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        urls = [f"http://img.test/{start + i}.jpg" for i in range(m)] + [f"http://img.test/dead-{s}-{j}.jpg"
                                                                        for j in range(m // 10)]
        caps = [f"Madrid {WORDS[ci % len(WORDS)]} {WORDS[(ci * 7) % len(WORDS)]} photo" for ci in c]
        status = ["success"] * m + ["error"] * (m // 10)
        pq.write_table(pa.table({"id": [row_id(u) for u in urls], "url": urls,
                                 "caption": caps + [None] * (m // 10), "status": status,
                                 "error": [None] * m + ["http_404"] * (m // 10)}), tree.index_file(s))
        np.save(tree.embeddings_file(s), x.astype(np.float16))
    stats_file(tree.embeddings).write_text(json.dumps({"model": "ViT-L-14-336", "pretrained": "openai"}))


# ---------------------------------------------------------------------------- workers
def anchor(root: Path, neighbors: int, dist: float) -> None:
    import umap

    tree = DataTree.at(root)
    files = sorted(tree.embeddings.glob("embeddings-*.npy"))
    x = np.concatenate([np.load(f) for f in files]).astype(np.float32)
    xy = umap.UMAP(n_neighbors=neighbors, min_dist=dist, metric="cosine", random_state=42).fit_transform(x)
    out = root / "anchor"
    out.mkdir(exist_ok=True)
    pq.write_table(pa.table({"x": xy[:, 0], "y": xy[:, 1]}), out / "xy.parquet")


def run_ours(root: Path, a, pca: int | None) -> tuple[float, float]:
    """Step 06 in a fresh process; pca None leaves --pca at the step's default (automatic past 200k rows)."""
    argv = ["--data-dir", str(root), "--no-concepts", "--overwrite", "--neighbors", str(a.neighbors),
            "--dist", str(a.dist)] + ([] if pca is None else ["--pca", str(pca)])
    return run_step("06_reduce_dimensionality", argv)


def run_anchor(root: Path, a) -> tuple[float, float]:
    return timed([sys.executable, __file__, "--worker", "anchor", "--data", str(root),
                  "--neighbors", str(a.neighbors), "--dist", str(a.dist)])


# ---------------------------------------------------------------------------- main
def bench_size(n: int, a) -> dict:
    root = OUT / f"06_umap_{n}_{a.dim}"
    t = time.perf_counter()
    generate(root, n, a.dim)
    print(f"input: {n:,} x {a.dim} float16 in {root} ({time.perf_counter() - t:,.1f}s to generate or find)")
    contenders = {"ours": lambda: run_ours(root, a, 0), "anchor": lambda: run_anchor(root, a),
                  "ours default": lambda: run_ours(root, a, None)}
    if a.pca:
        contenders[f"ours --pca {a.pca}"] = lambda: run_ours(root, a, a.pca)
    if a.only:
        unknown = set(a.only) - set(contenders)
        if unknown:
            raise SystemExit(f"--only: unknown contender(s) {sorted(unknown)}; known: {sorted(contenders)}")
        contenders = {name: run for name, run in contenders.items() if name in a.only}
    else:
        del contenders["ours default"]
    results = {name: [] for name in contenders}
    for rep in range(a.repeats):
        names = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
        for name in names:
            seconds, peak = contenders[name]()
            results[name].append((seconds, peak))
            print(f"  rep {rep + 1} {name:<14} {seconds:9,.1f} s  peak RSS {peak:9,.0f} MB", flush=True)
    summary = {name: {"median_s": statistics.median(s for s, _ in r), "peak_rss_mb": max(p for _, p in r)}
               for name, r in results.items()}
    for name, s in summary.items():
        ratio = (f"  ratio to anchor {s['median_s'] / summary['anchor']['median_s']:5.2f}"
                 if "anchor" in summary else "")
        print(f"{n:>9,} {name:<14} median {s['median_s']:9,.1f} s  peak {s['peak_rss_mb']:9,.0f} MB{ratio}")
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[20_000, 100_000], help="sizes to run (default: 20,000 100,000)")
    p.add_argument("--dim", type=int, default=768, help="embedding width (default: 768, CLIP ViT-L/14)")
    p.add_argument("--repeats", type=int, default=1, help="repetitions per contender (default: 1)")
    p.add_argument("--neighbors", type=int, default=25, help="UMAP n_neighbors (default: 25)")
    p.add_argument("--dist", type=float, default=0.1, help="UMAP min_dist (default: 0.1)")
    p.add_argument("--pca", type=int, default=0, help="also run ours with --pca N (default: 0 = not)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these contenders: 'ours' (--pca 0), 'anchor', 'ours default' (the step's own "
                        "--pca choice), 'ours --pca N'; e.g. --rows 1000000 --only 'ours default' where the plain "
                        "script would take hours")
    p.add_argument("--worker", choices=["anchor"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        anchor(Path(a.data), a.neighbors, a.dist)
        print_peak_rss()
        return 0
    all_results = {n: bench_size(n, a) for n in a.rows}
    (OUT / f"bench_06_umap_{'_'.join(map(str, a.rows))}.json").write_text(json.dumps(all_results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
