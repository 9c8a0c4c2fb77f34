"""Benchmark: step 05 re-run after step 03 drops 10% of the rows, with and without reusing vectors.

A loopback image host (tests/image_server.py) serves N distinct-URL JPEGs (640x480, 20-80 ms
latency, every 25th a 404). Step 05 runs once on all rows (shards of --shard-size), then step 03
removes every 10th row ("football" in its caption) and step 05 runs again, on a copy of the tree
twice: with reuse (this code) and with reuse switched off (what a re-run cost before: every shard
after the first changed row embedded again from the cached thumbnails). Reported: each run's
seconds, the images the model embedded (counted at the model), and where the second run's time
goes (reading and planning the input, retiring shards and building the lookup, loading the model,
the shard work, tags).

    python bench/bench_05_reclean.py --n 1200 --model ViT-B-32

The model runs with random weights (`--pretrained none`): the same arithmetic as trained ones.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from common import embedding_reuse  # noqa: E402
from common.paths import DataTree  # noqa: E402
from tests.image_server import ImageHost  # noqa: E402

PHASES = ("plan", "prepare_reuse", "run_shards", "write_tags", "finish")


def write_rows(tree: DataTree, host: ImageHost, n: int) -> None:
    tree.metadata.mkdir(parents=True, exist_ok=True)
    rows = [{"url": host.url(f"/bench/{i}.jpg"),
             "caption": f"Lisbon {'football' if i % 10 == 3 else 'tram'} {i}"} for i in range(n)]
    for p in range(2):
        pq.write_table(pa.Table.from_pylist(rows[p * n // 2:(p + 1) * n // 2]), tree.metadata_part(p))


class Timed:
    """Wraps the step's phases and its model: seconds per phase, images embedded."""

    def __init__(self, step, reuse: bool):
        self.step, self.reuse = step, reuse
        self.seconds: dict[str, float] = defaultdict(float)
        self.encoded = 0

    @contextlib.contextmanager
    def installed(self):
        saved = {name: getattr(self.step, name) for name in PHASES}
        saved_prepare = embedding_reuse.prepare
        for name in PHASES:
            setattr(self.step, name, self._timer(name, saved[name]))
        load = self.step.load_clip

        def load_counting(*a, **kw):
            clip = load(*a, **kw)
            name = "submit_pixels" if hasattr(clip, "submit_pixels") else "encode_pixels"  # encode calls submit
            model_call = getattr(clip, name)

            def counting(pixels):
                self.encoded += len(pixels)
                return model_call(pixels)
            setattr(clip, name, counting)
            return clip
        self.step.load_clip = self._timer("load_clip", load_counting)
        if not self.reuse:  # the shards are still retired and removed, but nothing is looked up
            embedding_reuse.prepare = lambda *a, **kw: (saved_prepare(*a, **kw), embedding_reuse.Reuse())[1]
        try:
            yield self
        finally:
            for name, fn in saved.items():
                setattr(self.step, name, fn)
            embedding_reuse.prepare = saved_prepare

    def _timer(self, name, fn):
        def timed(*a, **kw):
            started = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[name] += time.perf_counter() - started
        return timed


def run05(step, tree: DataTree, args, reuse: bool = True) -> tuple[float, Timed]:
    timed = Timed(step, reuse)
    argv = ["--data-dir", str(tree.root), "--model", args.model, "--pretrained", "none", "--device", args.device,
            "--allow-private-hosts", "127.0.0.1", "--workers", str(args.workers), "--per-host", str(args.workers),
            "--shard-size", str(args.shard_size), "--retries", "0"]
    started = time.perf_counter()
    with timed.installed(), contextlib.redirect_stdout(io.StringIO()):
        assert step.main(argv) == 0
    return time.perf_counter() - started, timed


def report(label: str, seconds: float, timed: Timed) -> None:
    phases = ", ".join(f"{k} {timed.seconds[k]:.2f}s" for k in ("load_clip", *PHASES) if k in timed.seconds)
    print(f"{label:28} {seconds:7.2f}s  model embedded {timed.encoded:,} images  ({phases})", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1200, help="rows (default: %(default)s)")
    p.add_argument("--model", default="ViT-B-32", help="CLIP model, random weights (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=100, help="step 05's shard size (default: %(default)s)")
    p.add_argument("--workers", type=int, default=16, help="download threads (default: %(default)s)")
    p.add_argument("--out", help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    step, clean = importlib.import_module("05_process_images"), importlib.import_module("03_clean_metadata")
    host = ImageHost(latency=(0.02, 0.08), fail_every=25).start()
    scratch = Path(args.out or tempfile.mkdtemp(prefix="bench05reclean-"))
    try:
        tree = DataTree(scratch / "reuse")
        write_rows(tree, host, args.n)
        first, timed = run05(step, tree, args)
        report(f"first run, {args.n:,} rows", first, timed)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert clean.main(["--data-dir", str(tree.root), "--exclude", "football"]) == 0
        baseline = DataTree(scratch / "no-reuse")
        shutil.copytree(tree.root, baseline.root)
        hits = len(host.hits("/"))
        second, timed2 = run05(step, tree, args)
        report("after dropping 10%, reuse", second, timed2)
        print(f"{'':28} image requests in the second run: {len(host.hits('/')) - hits:,}")
        old, timed3 = run05(step, baseline, args, reuse=False)
        report("same, reuse switched off", old, timed3)
        print(f"second run / first run: {second / first:.1%} with reuse, {old / first:.1%} without")
    finally:
        host.stop()
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
