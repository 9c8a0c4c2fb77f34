"""Benchmark: step 05's download + thumbnail path against img2dataset, on the same loopback host.

One loopback image host (tests/image_server.py) serves N generated JPEGs (640x480 by default)
with a latency drawn from 50-500 ms per request; every 10th URL is a 404 and every 10th+1 is
HTML served as image/jpeg, so both tools see the same failures. Each repetition runs both tools,
in alternating order, each in its own process with the same concurrency, both writing 256-px
(long side) JPEG thumbnails at quality 85. Reported: median seconds, images/s (successes per
second), successes, peak RSS, and the ratio ours / img2dataset (images/s; > 1 means faster).

    python bench/bench_05_download.py --n 1000 --concurrency 64 --reps 3

Scratch files go to a temporary folder (or --out, e.g. bench/out/05_download).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIDES = ("ours", "img2dataset")


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB


def run_ours(urls: list[str], out: Path, concurrency: int) -> int:
    import concurrent.futures as cf

    from common.columns import row_id
    from common.download_embed import ImageSource
    from common.fetch import Fetcher
    from common.paths import DataTree

    # every URL is on one host here; the default per-host cap (8) is for the real, many-host web
    fetcher = Fetcher(timeout=10, allow_private_hosts={"127.0.0.1"}, per_host=concurrency, draft_size=256,
                      pool_size=concurrency)
    source = ImageSource(DataTree(out), fetcher, thumb_size=256, input_size=224)
    with cf.ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(lambda u: source.prepare(row_id(u), u)[0], urls))
    return sum(o.status == "success" for o in outcomes)


def run_img2dataset(urls_file: Path, out: Path, concurrency: int, processes: int) -> int:
    from img2dataset import download

    download(url_list=str(urls_file), input_format="txt", output_folder=str(out), output_format="files",
             image_size=256, resize_mode="keep_ratio_largest", encode_quality=85, processes_count=processes,
             thread_count=max(1, concurrency // processes), timeout=10, retries=0, incremental_mode="incremental",
             number_sample_per_shard=100_000)
    return len(list(out.rglob("*.jpg")))


def worker(args) -> None:
    urls = Path(args.urls).read_text().split()
    out = Path(args.dest)
    # imports outside the timing: a tool's start-up is not its download speed
    if args.worker == "ours":
        import common.download_embed  # noqa: F401
    else:
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no update check over the network
        import img2dataset  # noqa: F401
    started = time.perf_counter()
    if args.worker == "ours":
        ok = run_ours(urls, out, args.concurrency)
    else:
        ok = run_img2dataset(Path(args.urls), out, args.concurrency, args.processes)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "successes": ok, "peak_rss_mb": peak_rss_mb()}))


def one_run(side: str, urls_file: Path, scratch: Path, args) -> dict:
    dest = scratch / f"{side}-out"
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, __file__, "--worker", side, "--urls", str(urls_file), "--dest", str(dest),
           "--concurrency", str(args.concurrency), "--processes", str(args.processes)]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=scratch)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(dest, ignore_errors=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="images per run (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each tool, interleaved (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight, both tools (default: %(default)s)")
    p.add_argument("--processes", type=int, default=2, help="img2dataset processes; its threads = concurrency / processes")
    p.add_argument("--latency", type=float, nargs=2, default=(0.05, 0.5), help="per-request latency range, s")
    p.add_argument("--out", help="scratch folder (default: a temporary one)")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--urls", help=argparse.SUPPRESS)
    p.add_argument("--dest", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0

    from tests.image_server import ImageHost

    scratch = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench05-"))
    scratch.mkdir(parents=True, exist_ok=True)
    host = ImageHost(latency=tuple(args.latency), fail_every=10).start()
    for i in range(64):  # generate the pictures now, not inside the first tool's requests
        host.bench_image(i)
    try:
        urls_file = scratch / "urls.txt"
        urls_file.write_text("\n".join(host.url(f"/bench/{i}.jpg") for i in range(args.n)) + "\n")
        results = {side: [] for side in SIDES}
        for rep in range(args.reps):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for side in order:
                r = one_run(side, urls_file, scratch, args)
                results[side].append(r)
                print(f"rep {rep + 1} {side:12} {r['seconds']:7.2f}s  {r['successes']:,} ok  "
                      f"{r['successes'] / r['seconds']:7.1f} img/s  peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    finally:
        host.stop()
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    for side in SIDES:
        runs = results[side]
        summary[side] = {"median_s": statistics.median(r["seconds"] for r in runs),
                         "median_img_s": statistics.median(r["successes"] / r["seconds"] for r in runs),
                         "successes": [r["successes"] for r in runs],
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
    ratio = summary["ours"]["median_img_s"] / summary["img2dataset"]["median_img_s"]
    print(f"\nN={args.n:,} images, latency {args.latency[0]}-{args.latency[1]} s, concurrency {args.concurrency}, "
          f"{os.cpu_count()} CPUs")
    for side in SIDES:
        s = summary[side]
        print(f"{side:12} median {s['median_s']:.2f}s  {s['median_img_s']:.1f} img/s  successes {s['successes']}  "
              f"peak RSS {s['peak_rss_mb']:,.0f} MB")
    print(f"ratio ours / img2dataset (images/s): {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
