"""Benchmark step 07's export against the pandas groupby a researcher would otherwise write.

On one generated input (projection, float16 embeddings in step 05's shard layout, a thumbnail for
every row, image-tag edges), each repetition runs, in fresh processes and alternating order:
  ours    step 07's phases: read rows, domains, thumbnails (hard links), grid levels with
          representatives, sprite sheets, grid JSON + row tiles, Gephi files, poster
  anchor  pandas: one groupby per level, in each cell the mean embedding and the thumbnailed
          member closest to it (levels chosen independently, all embeddings held in memory)
The ratio compares the like-for-like part: grid cells and representatives for all levels
(ours: "levels" phase; anchor: its whole run). Thumbnails are hard links to a few source files,
so a million of them cost directory entries, not disk.

  python bench/bench_07_export.py --rows 100000 --repeats 3
  python bench/bench_07_export.py --rows 1000000 --repeats 1
Scratch data goes to bench/out/ (git-ignored); --keep reuses it between runs.
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402

from common.columns import row_ids  # noqa: E402
from common.paths import DataTree  # noqa: E402

OUT = ROOT / "bench" / "out"
LEVELS = [64, 128, 256]
SHARD_ROWS = 100_000
LINKS_PER_SOURCE = 30_000  # ext4 allows 65,000 links per file; step 07 adds one more per thumbnail
CHUNK = 50_000


# ---------------------------------------------------------------------------- generated input
def generate(tree: DataTree, n: int, dim: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    k = 40
    cluster = rng.integers(-1, k, n)
    centres = rng.uniform(0.1, 0.9, (k + 1, 2))
    spread = rng.uniform(0.01, 0.06, k + 1)
    xy = np.clip(centres[cluster + 1] + rng.normal(0, 1, (n, 2)) * spread[cluster + 1, None], 0, 1)
    urls = [f"https://img{i % 97}.site{i % 1013}.example.com/photo/{i}.jpg" for i in range(n)]
    ids = np.asarray(row_ids(urls), dtype=object)
    tree.projection.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids.tolist(), "url": urls,
                             "caption": [f"photo {i} of the old town, cluster {c}" for i, c in enumerate(cluster.tolist())],
                             "x": xy[:, 0], "y": xy[:, 1], "cluster": cluster,
                             "cluster_label": [f"theme {c}" if c >= 0 else "" for c in cluster.tolist()]}),
                   tree.projection_file)
    _embeddings(tree, rng, ids, cluster, dim, k)
    _thumbnails(tree, ids, rng)
    tags = np.asarray([f"tag{t}" for t in range(200)], dtype=object)
    src = np.repeat(np.arange(n), 2)
    pacsv.write_csv(pa.table({"Source": ids[src].tolist(), "Target": tags[rng.integers(0, 200, 2 * n)].tolist(),
                              "Weight": rng.uniform(0.2, 1, 2 * n)}), tree.tags_file)


def _embeddings(tree: DataTree, rng, ids, cluster, dim: int, k: int) -> None:
    base = rng.normal(0, 1, (k + 1, dim)).astype(np.float32)
    tree.embeddings.mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, len(ids), SHARD_ROWS)):
        stop = min(start + SHARD_ROWS, len(ids))
        arr = np.lib.format.open_memmap(tree.embeddings_file(s), "w+", np.float16, (stop - start, dim))
        for a in range(start, stop, CHUNK):
            b = min(a + CHUNK, stop)
            v = base[cluster[a:b] + 1] + rng.normal(0, 0.8, (b - a, dim)).astype(np.float32)
            arr[a - start:b - start] = v / np.linalg.norm(v, axis=1, keepdims=True)
        arr.flush()
        del arr
        pq.write_table(pa.table({"id": ids[start:stop].tolist(), "status": ["success"] * (stop - start)}),
                       tree.index_file(s))


def _thumbnails(tree: DataTree, ids, rng) -> None:
    sources = tree.root / "thumb_sources"
    sources.mkdir(parents=True, exist_ok=True)
    tree.images.mkdir(parents=True, exist_ok=True)
    n_src = math.ceil(len(ids) / LINKS_PER_SOURCE)
    for s in range(n_src):
        buf = io.BytesIO()
        Image.new("RGB", (256, 192), tuple(int(c) for c in rng.integers(0, 255, 3))).save(buf, "JPEG", quality=80)
        (sources / f"{s}.jpg").write_bytes(buf.getvalue())
    for i, row_id in enumerate(ids.tolist()):
        os.link(sources / f"{i % n_src}.jpg", tree.thumbnail(row_id))


# ---------------------------------------------------------------------------- the two contenders
def run_ours(tree: DataTree, poster_size: int) -> dict:
    step = importlib.import_module("07_export_for_web")
    from common import embedding_means as em
    from common import grid
    from common.export import poster
    from common.export import rows as export_rows, web as web_export

    args = step.build_parser().parse_args(["--data-dir", str(tree.root), "--no-download-missing",
                                           "--poster-size", str(poster_size)])
    step.check_args(args)
    args.title = "bench"
    t, phases = time.perf_counter(), {}

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        phases[name], t = now - t, now

    rows = export_rows.load_rows(tree)
    lap("read rows")
    export_rows.attach_domains(rows, tree)
    lap("domains")
    step.thumbnails(args, tree, rows)
    lap("thumbnails (links)")
    index = em.load_index(tree, rows.ids)
    levels = grid.build_levels(rows.x, rows.sy, rows.has_thumb, rows.cluster, index, args.levels)
    grid.assign_sprites(levels, rows.has_thumb)
    lap("levels")
    step.write_sprites(args, tree, rows, levels)
    lap("sprites")
    for size, level in levels.items():
        web_export.write_grid(level, rows, tree.grid_file(size))
    web_export.write_row_tiles(rows, tree.export)
    lap("grid json + row tiles")
    step.write_gephi(args, tree, rows, levels)
    lap("gephi")
    if poster_size:
        poster.draw_poster(tree.poster_file, poster_size, levels, rows.has_thumb, rows.ids, tree.export_thumbnail,
                           web_export.clusters(rows), "bench")
        lap("poster")
    reps = {size: sorted(rows.ids[lv.rep].tolist()) for size, lv in levels.items()}
    return {"phases": phases, "cells": {s: len(lv.keys) for s, lv in levels.items()}, "reps": reps}


def run_anchor(tree: DataTree) -> dict:
    t0 = time.perf_counter()
    df = pd.read_parquet(tree.projection_file, columns=["id", "x", "y"])
    df["x"] = df["x"].round(6)  # the export contract's quantisation, so both define the same cells
    df["sy"] = (1.0 - df["y"]).round(6)
    thumbs = {name[:-4] for name in os.listdir(tree.images)}
    has_thumb = df["id"].isin(thumbs).to_numpy()
    parts = []
    for n in range(len(list(tree.embeddings.glob("embeddings-*.npy")))):
        index = pd.read_parquet(tree.index_file(n))
        parts.append(index[index["status"] == "success"]["id"])
    order = pd.Index(pd.concat(parts, ignore_index=True)).get_indexer(df["id"])
    vectors = np.concatenate([np.load(tree.embeddings_file(n)) for n in range(len(parts))])[order]
    t1 = time.perf_counter()
    cells, reps = {}, {}
    for size in LEVELS:
        df["i"] = np.minimum((df["x"] * size).astype(int), size - 1)
        df["j"] = np.minimum((df["sy"] * size).astype(int), size - 1)
        chosen = []
        for _, members in df.groupby(["i", "j"]).indices.items():
            mean = vectors[members].astype(np.float32).mean(axis=0)
            cand = members[has_thumb[members]] if has_thumb[members].any() else members
            d = ((vectors[cand].astype(np.float32) - mean) ** 2).sum(axis=1)
            chosen.append(cand[int(np.argmin(d))])
        cells[size], reps[size] = len(chosen), sorted(df["id"].to_numpy()[chosen].tolist())
    return {"phases": {"load": t1 - t0, "levels": time.perf_counter() - t1}, "cells": cells, "reps": reps}


def worker(which: str, data: Path, poster_size: int) -> None:
    tree = DataTree.at(data)
    if which == "ours":
        shutil.rmtree(tree.export, ignore_errors=True)  # every repetition makes all its links again
        out = run_ours(tree, poster_size)
    else:
        out = run_anchor(tree)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------- driver
def spawn(which: str, data: Path, poster_size: int) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", which, "--data", str(data),
                           "--poster-size", str(poster_size)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=100_000, help="projected rows to generate (default 100,000)")
    p.add_argument("--dim", type=int, default=768, help="embedding dimension (default 768, CLIP ViT-L/14)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions of each contender (default 3)")
    p.add_argument("--poster-size", type=int, default=4000, help="poster side in px (default 4000; 0: none)")
    p.add_argument("--keep", action="store_true", help="keep and reuse the generated input in bench/out/")
    p.add_argument("--worker", choices=("ours", "anchor"), help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.poster_size)
        return 0
    data = OUT / f"07_{args.rows}_{args.dim}"
    if not (args.keep and (data / "ready").exists()):
        shutil.rmtree(data, ignore_errors=True)
        t = time.perf_counter()
        generate(DataTree.at(data), args.rows, args.dim)
        (data / "ready").write_text("")
        print(f"generated {args.rows:,} rows, dim {args.dim} in {time.perf_counter() - t:,.1f}s -> {data}")
    results = {"ours": [], "anchor": []}
    for r in range(args.repeats):
        for which in (("ours", "anchor") if r % 2 == 0 else ("anchor", "ours")):
            results[which].append(spawn(which, data, args.poster_size))
            phases = results[which][-1]["phases"]
            print(f"  repetition {r + 1} {which}: {sum(phases.values()):,.1f}s ("
                  + ", ".join(f"{k} {v:,.1f}" for k, v in phases.items()) + ")", flush=True)
    (OUT / f"07_{args.rows}_{args.dim}.json").write_text(json.dumps(
        {k: [{**r, "reps": None} for r in v] for k, v in results.items()}, indent=1))
    report(args, results)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return 0


def report(args, results: dict) -> None:
    ours, anchor = results["ours"], results["anchor"]
    if ours[0]["cells"] != anchor[0]["cells"]:
        print(f"  note: the contenders disagree on the cells: ours {ours[0]['cells']}, anchor {anchor[0]['cells']}")
    same = {s: len(set(ours[0]["reps"][s]) & set(anchor[0]["reps"][s])) / len(anchor[0]["reps"][s])
            for s in anchor[0]["reps"]}

    def med(runs, phase):
        return statistics.median(r["phases"][phase] for r in runs)

    print(f"\nstep 07 export, {args.rows:,} rows, dim {args.dim}, poster {args.poster_size}px, "
          f"{args.repeats} repetition(s), medians")
    for phase in ours[0]["phases"]:
        print(f"  ours   {phase:<24} {med(ours, phase):8.2f}s")
    total = statistics.median(sum(o["phases"].values()) for o in ours)
    print(f"  ours   {'whole export':<24} {total:8.2f}s   peak RSS {max(o['peak_rss_mb'] for o in ours):,.0f} MB")
    print(f"  anchor {'load (all vectors)':<24} {med(anchor, 'load'):8.2f}s")
    print(f"  anchor {'levels (groupby)':<24} {med(anchor, 'levels'):8.2f}s   peak RSS "
          f"{max(a['peak_rss_mb'] for a in anchor):,.0f} MB")
    print(f"  ratio ours/anchor, levels + representatives: {med(ours, 'levels') / med(anchor, 'levels'):.3f}"
          f"   (anchor incl. loading its vectors: "
          f"{med(ours, 'levels') / (med(anchor, 'levels') + med(anchor, 'load')):.3f})")
    print("  representatives shared with the anchor (finest level should be ~all; coarser differ by design, "
          "ours nest): " + ", ".join(f"{s}: {v:.1%}" for s, v in sorted(same.items(), key=lambda kv: int(kv[0]))))


if __name__ == "__main__":
    sys.exit(main())
