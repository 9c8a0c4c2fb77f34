"""Benchmark: step 05's embedding pipeline on one CUDA GPU, in one go (under 8 minutes on an H200).

What it measures, with the project's own code (common.download_embed.embed_images: worker threads
decode cached thumbnails and cut the model's squares, the calling thread feeds the model through
common.device_batches' pinned buffers, copy stream and per-batch events):
- images/s of the whole pipeline for CLIP ViT-L/14@336px in fp16 (random weights: the speed is
  the same) on N cached 336-px thumbnails, at each batch size;
- GPU utilisation while it runs (pynvml when installed, else `nvidia-smi` sampled every 100 ms);
- the share of the fp16 matmul ceiling: ViT-L/14 at 336 px is ~190 GMAC, ~380 GFLOP, per image;
  an H200 does ~790 TFLOP/s dense fp16, so ~2,080 images/s;
- the model alone (one batch already on the GPU, no host in the loop) and the host alone
  (decode + square in the threads, no model): whichever is lower is the bottleneck.

The GPU machine has torch (CUDA 13), cupy and Pillow but no open_clip. Everything else comes from
a folder of wheels prepared on a machine with the network (pip picks the ones that fit):

    pip download open_clip_torch ftfy wcwidth regex tqdm urllib3 certifi torchvision==<torch's match> \\
        --no-deps --only-binary=:all: --python-version <GPU python, e.g. 3.11> \\
        --platform manylinux_2_28_x86_64 -d bench/wheels/

open_clip needs at import only torch, torchvision, ftfy (+ wcwidth), regex, tqdm and numpy: not
huggingface_hub, safetensors or timm (random weights are never downloaded). The step-05 code adds
urllib3 and certifi. torchvision must be the build for the installed torch (0.29.x for torch 2.14,
cu130 on PyPI); the script installs a package only when it does not import already.

    python bench/bench_05_gpu.py                        # GPU: 8,192 images, batch 128, 256, 512
    python bench/bench_05_gpu.py --profile              # ... and torch.profiler's top operations
    python bench/bench_05_gpu.py --smoke                # CPU: a tiny model, 48 images (checks the script)

Prints one line per batch size and writes bench/out/bench_05_gpu.json.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

GFLOP_PER_IMAGE = 380.0  # ViT-L/14 @ 336 px: ~190 GMAC
PEAK_TFLOPS = 790.0  # H200 dense fp16
CEILING = PEAK_TFLOPS * 1e3 / GFLOP_PER_IMAGE  # images/s
# module -> distribution, for what the GPU machine may lack
NEEDED = {"open_clip": "open_clip_torch", "torchvision": "torchvision", "ftfy": "ftfy", "wcwidth": "wcwidth",
          "regex": "regex", "tqdm": "tqdm", "urllib3": "urllib3", "certifi": "certifi"}


# ---------------------------------------------------------------------------- packages
def missing_packages() -> list[str]:
    return [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]


def install_from_wheels(wheels: Path) -> None:
    missing = missing_packages()
    if not missing:
        return
    if not wheels.is_dir():
        sys.exit(f"error: {', '.join(missing)} not installed and no wheel folder {wheels}: see this script's docstring")
    print(f"installing {', '.join(missing)} from {wheels}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(wheels),
                    "--quiet", *missing], check=True)
    importlib.invalidate_caches()
    still = missing_packages()
    if still:
        sys.exit(f"error: still not importable after installing: {', '.join(still)}")


# ---------------------------------------------------------------------------- the cache
def synthetic_jpeg(i: int, size: int) -> bytes:
    """A photo-like picture (smooth gradients, shapes, noise: a realistic JPEG decode cost)."""
    rng = np.random.default_rng(i)
    h, w = size, int(size * 4 / 3)  # landscape, as most web photos: the model square is a centre crop
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, (3, 1, 1)) + rng.uniform(-0.4, 0.4, (3, 1, 1)) * (xx + yy)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, h / 3)
        base += (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r) * rng.uniform(-90, 90, (3, 1, 1))
    pixels = np.clip(base.transpose(1, 2, 0) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build_cache(tree, n: int, size: int, distinct: int = 64) -> list[tuple[str, str]]:
    """n cached thumbnails where step 05 keeps them; (row id, url) pairs as step 05 passes them."""
    from common.images import write_bytes

    jpegs = [synthetic_jpeg(i, size) for i in range(min(n, distinct))]
    items = []
    for i in range(n):
        url = f"http://bench.test/{i}.jpg"
        rid = f"{(i * 0x9E3779B97F4A7C15) % 2**64:016x}"  # row-id shaped, spread over the thumbnail folder
        path = tree.thumbnail(rid)
        if not path.exists():
            write_bytes(jpegs[i % len(jpegs)], path)
        items.append((rid, url))
    return items


# ---------------------------------------------------------------------------- measuring
class GpuSampler:
    """Mean GPU utilisation (%) over a with-block: pynvml, else nvidia-smi, else None."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.samples, self.how = interval, [], None
        self._stop, self._proc, self._thread = threading.Event(), None, None

    def __enter__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.how = "pynvml"
            self._thread = threading.Thread(target=self._poll, args=(pynvml, handle), daemon=True)
            self._thread.start()
        except Exception:  # noqa: BLE001 - no NVML: try the command line tool
            if shutil.which("nvidia-smi"):
                self.how = "nvidia-smi"
                self._proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                               "--id=0", f"--loop-ms={int(self.interval * 1000)}"],
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                self._thread = threading.Thread(target=self._read, daemon=True)
                self._thread.start()
        return self

    def _poll(self, pynvml, handle):
        while not self._stop.wait(self.interval):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def _read(self):
        for line in self._proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc):
        self._stop.set()
        if self._proc:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        if self._thread:
            self._thread.join(timeout=5)

    @property
    def mean(self):
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def host_alone(source, items, workers: int) -> float:
    """images/s of decode + square in the worker threads, no model."""
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:
        for outcome, pixels in pool.map(lambda it: source.prepare(*it), items):
            assert pixels is not None, outcome
    return len(items) / (time.perf_counter() - started)


def model_alone(clip, batch: int, repeats: int) -> float:
    """images/s of the image tower alone on one batch already on the device: its own speed."""
    import torch

    with torch.inference_mode():
        x = torch.randn(batch, 3, clip.input_size, clip.input_size, device=clip.device, dtype=clip.dtype)
        clip.model.encode_image(x)  # warm (cuBLAS/cuDNN choices)
        sync(clip.device)
        started = time.perf_counter()
        for _ in range(repeats):
            clip.model.encode_image(x)
        sync(clip.device)
    return repeats * batch / (time.perf_counter() - started)


def profile(clip, items, source, workers: int, batch: int) -> str:
    """torch.profiler over the pipeline on a few batches: kernel time against copies against waits."""
    import torch
    from torch.profiler import ProfilerActivity

    from common.download_embed import embed_images

    cuda = clip.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        embed_images(items[:4 * batch], source, clip, workers, batch, desc="profile")
        sync(clip.device)
    return prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=15)


def pipeline(clip, items, source, workers: int, batch: int) -> tuple[float, float | None, str | None]:
    """(images/s, mean GPU %, how sampled) of step 05's embed_images on cached thumbnails."""
    from common.download_embed import embed_images

    embed_images(items[:2 * batch], source, clip, workers, batch, desc="warm-up")
    sync(clip.device)
    with GpuSampler() as gpu:
        started = time.perf_counter()
        outcomes, vectors, _ = embed_images(items, source, clip, workers, batch, desc=f"batch {batch}")
        sync(clip.device)
        seconds = time.perf_counter() - started
    assert len(vectors) == len(items), f"{len(items) - len(vectors)} images not embedded"
    return len(items) / seconds, gpu.mean, gpu.how


# ---------------------------------------------------------------------------- main
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8192, help="cached thumbnails to embed (default: 8192)")
    p.add_argument("--batch-sizes", default="128,256,512", help="comma-separated (default: 128,256,512)")
    p.add_argument("--workers", type=int, default=None, help="decode threads (default: CPU count)")
    p.add_argument("--thumb-size", type=int, default=336, help="thumbnail long side in px (default: 336)")
    p.add_argument("--model", default="ViT-L/14@336px", help="CLIP model, random weights (default: ViT-L/14@336px)")
    p.add_argument("--device", default="cuda", help="cuda or cpu (default: cuda)")
    p.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "gpu_cache", help="data folder for the thumbnails")
    p.add_argument("--wheels", type=Path, default=ROOT / "bench" / "wheels", help="wheels for what is not installed")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "bench_05_gpu.json", help="results JSON")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's top operations for 4 batches")
    p.add_argument("--smoke", action="store_true", help="CPU check of the script: tiny model, 48 images, batch 8,16")
    a = p.parse_args(argv)
    if a.smoke:
        a.n, a.batch_sizes, a.device, a.model = 48, "8,16", "cpu", "tiny"
    a.batch_sizes = [int(b) for b in a.batch_sizes.split(",")]
    return a


def load_model(a):
    from common.clip import load_clip

    if a.model == "tiny":
        from tests.tiny_clip import register

        return load_clip(register(), "none", a.device)
    return load_clip(a.model, "none", a.device)


def main(argv=None) -> int:
    a = parse(argv)
    install_from_wheels(a.wheels)
    import torch

    from common.download_embed import ImageSource
    from common.paths import DataTree

    workers = a.workers or os.cpu_count() or 4
    t0 = time.perf_counter()
    tree = DataTree.at(a.cache)
    items = build_cache(tree, a.n, a.thumb_size)
    print(f"{len(items):,} cached {a.thumb_size}-px thumbnails in {time.perf_counter() - t0:.1f} s ({a.cache})", flush=True)
    t0 = time.perf_counter()
    clip = load_model(a)
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu"
    print(f"{clip.name} ({clip.dtype}, {clip.input_size} px) on {name}, loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    source = ImageSource(tree, None, a.thumb_size, clip.input_size)  # every thumbnail cached: nothing is fetched
    host_alone(source, items[: min(len(items), 4 * workers)], workers)  # page cache, thread start
    host = host_alone(source, items, workers)
    print(f"host alone: decode + square {host:,.0f} images/s with {workers} threads", flush=True)
    results = {"device": name, "model": clip.name, "dtype": str(clip.dtype), "images": len(items), "workers": workers,
               "torch": torch.__version__, "host_images_per_s": round(host, 1), "ceiling_images_per_s": round(CEILING),
               "batches": []}
    for batch in a.batch_sizes:
        ips, util, how = pipeline(clip, items, source, workers, batch)
        alone = model_alone(clip, batch, repeats=max(2, 2048 // batch) if a.device != "cpu" else 2)
        row = {"batch": batch, "images_per_s": round(ips, 1), "gpu_util_pct": util, "gpu_util_from": how,
               "model_alone_images_per_s": round(alone, 1), "share_of_ceiling": round(ips / CEILING, 3),
               "bottleneck": "host" if host < alone else "gpu"}
        results["batches"].append(row)
        print(f"batch {batch:4d}: {ips:7,.0f} images/s, GPU {util if util is not None else 'n/a'}%"
              f"{f' ({how})' if how else ''}, {ips / CEILING:6.1%} of the {CEILING:,.0f} images/s ceiling; "
              f"model alone {alone:,.0f}/s, host alone {host:,.0f}/s -> {row['bottleneck']} bound", flush=True)
    if a.profile:
        print(profile(clip, items, source, workers, a.batch_sizes[len(a.batch_sizes) // 2]))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1))
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
