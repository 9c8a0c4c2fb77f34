"""Benchmark: what --ray costs on one machine, and what a cluster would take for RE-LAION-5B.

Overhead: steps 01 and 05 run as a user runs them (`python 0N_....py ...`), threads against
`--ray` (a local Ray on the same cores), on the same input, in alternating order. Step 01 reads
--files generated RE-LAION-like parquet files (one URL per row, as from the Hub), as local files
(--source), or with --hub-mbit from a loopback Hub (a gated RE-LAION-like dataset repo, the real
huggingface_hub client, a token in HF_TOKEN) that sends at most that many Mbit/s in all, as a network link
would; step 05 downloads --images pictures from a loopback image host with 50-500 ms latency
(every 10th a 404), thumbnails them and embeds them with a tiny random CLIP (the model is not
what is measured). Reported per side: median wall seconds, peak RSS
of the whole process tree (Ray's processes included), CPU seconds; the ratio ray / threads, and
how much of Ray's time is its own start-up.

Cluster estimate: the threaded runs' measured costs (CPU seconds per row filtered, per image
fetched and thumbnailed) turned into the time RE-LAION-5B's 384 files and 1M / 10M images take
on N nodes, under the stated bandwidth, per-host and GPU assumptions (printed with the table).

    python bench/bench_ray.py --files 8 --rows 400000 --images 2400 --reps 3     # small inputs
    python bench/bench_ray.py --files 8 --rows 3000000 --images 600 --reps 3     # files of millions of rows
    python bench/bench_ray.py --steps 01 --files 8 --rows 15000000 --hub-mbit 1000 --out bench/out/ray
        # step 01 as a RE-LAION run makes it: real-sized files (1.4 GB) downloaded over a 1 Gbit/s link
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIDES = ("threads", "ray")
NAMES = Path(__file__).resolve().parent / "loopback_names"  # sitecustomize: *.bench.test -> 127.0.0.1
RELAION_FILES, RELAION_ROWS = 384, 5.9e9
BASELINE_ROWS, BASELINE_IMAGES = 1000, 4  # a run this small measures a step's fixed costs


# ---------------------------------------------------------------------------- measuring a command
def measure(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Wall seconds, peak RSS summed over the process tree, CPU seconds of the tree (sampled at 10 Hz)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env and {**os.environ, **env})
    root, peak, cpu = psutil.Process(proc.pid), 0, {}
    while proc.poll() is None:
        rss = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                rss += p.memory_info().rss
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        peak = max(peak, rss)
        time.sleep(0.1)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "cpu_s": sum(cpu.values())}


def ray_startup_seconds(scratch: Path) -> float:
    code = ("import time; t = time.perf_counter(); from common import ray_runner; ray_runner.connect(None); "
            "import ray; print(time.perf_counter() - t); ray.shutdown()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def compare(name: str, command, reps: int, scratch: Path, env: dict | None = None) -> dict:
    results = {side: [] for side in SIDES}
    for rep in range(reps):
        for side in (SIDES if rep % 2 == 0 else SIDES[::-1]):
            data = scratch / f"{name}-{side}"
            shutil.rmtree(data, ignore_errors=True)
            r = measure(command(data, side == "ray"), ROOT, env)
            results[side].append(r)
            print(f"{name} rep {rep + 1} {side:7} {r['seconds']:7.2f}s  peak RSS {r['peak_rss_mb']:6,.0f} MB  "
                  f"CPU {r['cpu_s']:6.1f}s", flush=True)
    return {side: {"median_s": statistics.median(r["seconds"] for r in runs),
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                   "median_cpu_s": statistics.median(r["cpu_s"] for r in runs)} for side, runs in results.items()}


# ---------------------------------------------------------------------------- the two steps
def bench_01(args, scratch: Path) -> tuple[dict, dict]:
    sources = [generated(scratch / "src" / f"shard-{i}.parquet", args.rows, seed=i) for i in range(args.files)]
    common = ["--keywords", "Madrid", "Paris", "--workers", str(args.cores)]
    if args.hub_mbit:
        return bench_01_hub(args, scratch, sources, common)
    small = [generated(scratch / "src-small" / "shard.parquet", BASELINE_ROWS, seed=0)]

    def command(data: Path, ray: bool, files=tuple(sources)) -> list[str]:
        # one URL per row, as RE-LAION's rows are read from the Hub (--source would look for lists)
        return [sys.executable, "01_download_and_filter.py", "--data-dir", str(data), *common, "--source",
                *map(str, files), "--url-separator", "none", *(["--ray"] if ray else [])]

    summary = compare("01", command, args.reps, scratch)
    base = measure(command(scratch / "01-base", False, small), ROOT)  # start-up, imports: not per row
    rows = args.files * args.rows - BASELINE_ROWS
    return summary, {"cpu_s_per_row": (summary["threads"]["median_cpu_s"] - base["cpu_s"]) / rows}


def bench_01_hub(args, scratch: Path, sources: list[Path], common: list[str]) -> tuple[dict, dict]:
    """Step 01 reading the files from a loopback Hub that sends at most --hub-mbit in all."""
    from sample.relaion import hub_files
    from tests.hub_server import LoopbackHub

    hub = LoopbackHub(rate=args.hub_mbit * 1e6 / 8).start()
    hub.add_repo("bench/relaion-like", dict(zip(hub_files(len(sources)), sources)), gated=True)
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(scratch / "hf-home"), "HF_HUB_OFFLINE": "0",
           "HF_TOKEN": hub.token, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    def command(data: Path, ray: bool) -> list[str]:
        return [sys.executable, "01_download_and_filter.py", "--data-dir", str(data), *common,
                "--repo", "bench/relaion-like", *(["--ray"] if ray else [])]

    try:
        summary = compare("01", command, args.reps, scratch, env)
    finally:
        hub.stop()
    gb = sum(p.stat().st_size for p in sources) / 1e9
    print(f"01 from the loopback Hub: {gb:.1f} GB at most {args.hub_mbit:g} Mbit/s, so at least "
          f"{gb * 8e3 / args.hub_mbit:.1f} s of sending")
    return summary, {}


def image_url(host, i: int, hosts: int) -> str:
    """Image i's URL: on host h<i % hosts>.bench.test (all the loopback host), or 127.0.0.1 itself."""
    url = host.url(f"/bench/{i}.jpg")
    return url.replace("127.0.0.1", f"h{i % hosts}.bench.test", 1) if hosts > 1 else url


def generated(path: Path, rows: int, seed: int) -> Path:
    """A RE-LAION-like file of `rows` rows; one left in --out by an earlier run is used again."""
    import pyarrow.parquet as pq

    from sample.relaion import write_relaion_parquet

    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    return write_relaion_parquet(path, rows, seed=seed)


def bench_05(args, scratch: Path) -> tuple[dict, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from common.paths import DataTree
    from tests.image_server import ImageHost
    from tests.tiny_clip import checkpoint_files

    model = scratch / "tiny-clip"
    model.mkdir(parents=True, exist_ok=True)
    for fname, blob in checkpoint_files()[0].items():
        (model / fname).write_bytes(blob)
    (model / "tags.txt").write_text("red\nblue\nsky\n", encoding="utf-8")
    host = ImageHost(latency=tuple(args.latency), fail_every=10).start()
    for i in range(64):
        host.bench_image(i)
    inputs = {}
    for name, n in (("all", args.images), ("small", BASELINE_IMAGES)):
        tree = DataTree(scratch / f"05-input-{name}")
        inputs[name] = tree.metadata_cleaned
        inputs[name].mkdir(parents=True, exist_ok=True)
        urls = [image_url(host, i, args.hosts) for i in range(n)]
        pq.write_table(pa.table({"url": urls, "caption": [f"c{i}" for i in range(n)]}), tree.cleaned_part(0))

    def command(data: Path, ray: bool, rows: str = "all") -> list[str]:
        return [sys.executable, "05_process_images.py", "--data-dir", str(data), "--input_dir",
                str(inputs[rows]), "--model", f"local-dir:{model}", "--tags-vocab", str(model / "tags.txt"),
                "--allow-private-hosts", "127.0.0.1", "--workers", str(args.concurrency), "--per-host",
                str(args.per_host_05), "--shard-size", str(max(1, args.images // 4)), *(["--ray"] if ray else [])]

    # many hosts: names under .bench.test resolve to the one loopback host in the step and its workers
    env = {"PYTHONPATH": os.pathsep.join([str(NAMES), os.environ.get("PYTHONPATH", "")])} if args.hosts > 1 else None
    try:
        summary = compare("05", command, args.reps, scratch, env)
        base = measure(command(scratch / "05-base", False, "small"), ROOT, env)  # start-up, model, tags: not per image
    finally:
        host.stop()
    if args.hosts > 1:
        busiest = max(host.peak_per_host.values(), default=0)
        print(f"05: {args.images:,} images over {len(host.peak_per_host)} host names; the most one host had in "
              f"flight at once: {busiest} (--per-host {args.per_host_05})")
    per_image = (summary["threads"]["median_cpu_s"] - base["cpu_s"]) / (args.images - BASELINE_IMAGES)
    return summary, {"cpu_s_per_image": per_image}


# ---------------------------------------------------------------------------- the cluster estimate
def estimate(args, cost01: dict, cost05: dict) -> list[str]:
    node_bytes_s = args.node_gbit * 1e9 / 8
    hub_bytes_s = args.hub_gbit * 1e9 / 8
    total_bytes = args.relaion_tb * 1e12
    row_s_node = args.node_cores / cost01["cpu_s_per_row"]
    latency = sum(args.latency) / 2
    img_s_fetch_node = min(args.node_cores / cost05["cpu_s_per_image"], args.node_in_flight / latency)
    lines = [f"assumed: {args.node_cores} cores and {args.node_gbit:g} Gbit/s per node; the Hub serves at most "
             f"{args.hub_gbit:g} Gbit/s to this cluster; RE-LAION-5B = {RELAION_ROWS / 1e9:.1f}B rows, "
             f"{args.relaion_tb:g} TB in {RELAION_FILES} files; {args.node_in_flight} downloads in flight per node "
             f"(many hosts, --per-host {args.per_host} each), {latency * 1e3:.0f} ms mean latency; "
             f"{args.gpus_per_node} GPU(s) per node at {args.gpu_img_s:,} img/s each (ViT-L/14@336px fp16: "
             "assumed, not measured here)",
             f"measured here: step 01 {1 / cost01['cpu_s_per_row']:,.0f} rows per CPU-second; step 05 "
             f"{cost05['cpu_s_per_image'] * 1e3:.1f} CPU-ms per image fetched + thumbnailed (tiny model)",
             "",
             f"{'nodes':>5} | {'01: 384 files':>14} | {'bound by':>10} | {'05: 1M images':>14} | {'05: 10M images':>14} | "
             f"{'bound by':>12}"]
    for nodes in args.nodes:
        limits01 = {"Hub": total_bytes / hub_bytes_s, "node link": total_bytes / (nodes * node_bytes_s),
                    "CPU": RELAION_ROWS / (nodes * row_s_node)}
        files_round = math.ceil(RELAION_FILES / nodes) / (RELAION_FILES / nodes)  # the last round of files is partial
        t01 = max(limits01.values()) * files_round
        limits05 = {"web/CPU": 1 / (nodes * img_s_fetch_node), "GPU": 1 / (nodes * args.gpus_per_node * args.gpu_img_s)}
        per_image = max(limits05.values())
        lines.append(f"{nodes:>5} | {hours(t01):>14} | {max(limits01, key=limits01.get):>10} | "
                     f"{hours(1e6 * per_image):>14} | {hours(1e7 * per_image):>14} | {max(limits05, key=limits05.get):>12}")
    return lines


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def report(name: str, summary: dict, startup: float) -> None:
    t, r = summary["threads"], summary["ray"]
    print(f"step {name}: threads {t['median_s']:.2f}s (peak RSS {t['peak_rss_mb']:,.0f} MB) | ray {r['median_s']:.2f}s "
          f"(peak RSS {r['peak_rss_mb']:,.0f} MB) | ratio ray/threads {r['median_s'] / t['median_s']:.2f}x, "
          f"{(r['median_s'] - startup) / t['median_s']:.2f}x without Ray's start-up ({startup:.1f}s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=8, help="step 01 source files (default: %(default)s)")
    p.add_argument("--rows", type=int, default=400_000, help="rows per step 01 file (default: %(default)s)")
    p.add_argument("--images", type=int, default=600, help="step 05 images (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=32, help="step 05 downloads in flight (default: %(default)s)")
    p.add_argument("--hosts", type=int, default=1, help="step 05 images spread over this many host names "
                   "(default: %(default)s, all on 127.0.0.1)")
    p.add_argument("--per-host-05", type=int, help="step 05 --per-host (default: --concurrency)")
    p.add_argument("--latency", type=float, nargs=2, default=(0.05, 0.5), help="per-request latency range, s")
    p.add_argument("--reps", type=int, default=3, help="runs of each side, alternating (default: %(default)s)")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="step 01 --workers for threads")
    p.add_argument("--hub-mbit", type=float, help="step 01 from a loopback Hub sending at most this many Mbit/s "
                   "(default: local files)")
    p.add_argument("--out", help="scratch folder, kept, its generated files used again (default: a temporary one)")
    p.add_argument("--steps", nargs="+", default=["01", "05"], help="which steps to time (default: both)")
    e = p.add_argument_group("cluster estimate (assumptions)")
    e.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16, 64])
    e.add_argument("--node-cores", type=int, default=32)
    e.add_argument("--node-gbit", type=float, default=10.0, help="download bandwidth per node")
    e.add_argument("--hub-gbit", type=float, default=40.0, help="most the Hub serves this cluster in all")
    e.add_argument("--relaion-tb", type=float, default=1.2, help="RE-LAION-5B's parquet size (the en subset ~0.47)")
    e.add_argument("--node-in-flight", type=int, default=512, help="image downloads in flight per node")
    e.add_argument("--per-host", type=int, default=8)
    e.add_argument("--gpus-per-node", type=int, default=1)
    e.add_argument("--gpu-img-s", type=int, default=800, help="ViT-L/14@336px images/s per GPU (assumed)")
    args = p.parse_args()
    args.per_host_05 = args.per_host_05 or args.concurrency
    scratch = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-ray-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        startup = statistics.median(ray_startup_seconds(scratch) for _ in range(2))
        results = {}
        if "01" in args.steps:
            results["01"] = bench_01(args, scratch)
        if "05" in args.steps:
            results["05"] = bench_05(args, scratch)
    finally:
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{os.cpu_count()} CPUs; step 01: {args.files} files x {args.rows:,} rows; step 05: {args.images:,} "
          f"images, latency {args.latency[0]}-{args.latency[1]} s, {args.concurrency} in flight; medians of {args.reps}")
    for name, (summary, _) in results.items():
        report(name, summary, startup)
    if set(results) == {"01", "05"} and not args.hub_mbit:
        print("\n" + "\n".join(estimate(args, results["01"][1], results["05"][1])))
    print(json.dumps({k: v[0] for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
