"""Benchmark: step 05's CLIP image embedding against the plain open_clip loop, same pictures.

Ours: worker threads cut uint8 squares from 256-px thumbnails (common.images.model_square), the
model thread scales and normalises them on the device and runs the image tower (fp16 on CUDA).
Anchor: what a researcher writes from open_clip's README: `preprocess(img)` per picture (fp32
tensors built on the CPU), `torch.stack`, `model.encode_image`, in the same batch size.
Both get the same generated thumbnails and the same (random-weight) model; repetitions alternate.

CPU (default): ViT-B-32. GPU (--device cuda): ViT-L/14@336px in fp16; it also measures the GPU's
fp16 matmul ceiling and reports the fraction of it the model reaches (FLOPs counted by torch),
and the decode+preprocess capacity of the worker threads alone, to show which side is the bottleneck.

    python bench/bench_05_embed.py --n 256 --batch-size 32              # CPU
    python bench/bench_05_embed.py --device cuda --n 8192 --batch-size 256 --workers 16
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import io
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common.clip import load_clip  # noqa: E402
from common.images import model_square, open_rgb, thumbnail_jpeg  # noqa: E402
from sample.images import demo_image  # noqa: E402


def thumbnails(n: int) -> list[bytes]:
    """n JPEG thumbnails (256 px long side), as step 05 keeps them; 64 distinct pictures."""
    distinct = [thumbnail_jpeg(Image.open(io.BytesIO(demo_image(i, (640, 480)))).convert("RGB"), 256)
                for i in range(min(n, 64))]
    return [distinct[i % len(distinct)] for i in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_ours(clip, thumbs: list[bytes], batch: int, workers: int) -> float:
    """Seconds for decode + square (threads) overlapped with the model (this thread)."""
    size = clip.input_size
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:
        squares = pool.map(lambda b: model_square(open_rgb(b), size), thumbs)
        pending = []
        for sq in squares:
            pending.append(sq)
            if len(pending) == batch:
                clip.encode_pixels(np.stack(pending))
                pending = []
        if pending:
            clip.encode_pixels(np.stack(pending))
    sync(clip.device)
    return time.perf_counter() - started


def run_anchor(clip, thumbs: list[bytes], batch: int) -> float:
    """The README loop: open_clip's preprocess per image, fp32 stack, encode_image."""
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(thumbs), batch):
            x = torch.stack([clip.preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in thumbs[i:i + batch]])
            feats = clip.model.encode_image(x.to(clip.device, dtype=clip.dtype))
            (feats / feats.norm(dim=-1, keepdim=True)).float().cpu()
    sync(clip.device)
    return time.perf_counter() - started


def decode_capacity(clip, thumbs: list[bytes], workers: int) -> float:
    """Images/s the worker threads alone can feed (no model)."""
    started = time.perf_counter()
    with cf.ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda b: model_square(open_rgb(b), clip.input_size), thumbs):
            pass
    return len(thumbs) / (time.perf_counter() - started)


def model_flops(clip) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, clip.input_size, clip.input_size, device=clip.device, dtype=clip.dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        clip.model.encode_image(x)
    return float(counter.get_total_flops())


def matmul_ceiling(device: str, dtype, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - started)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--model", help="default: ViT-B-32 on the CPU, ViT-L/14@336px on CUDA")
    p.add_argument("--n", type=int, default=256, help="pictures per run (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="model batch (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="decode threads for ours (default: CPUs)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, interleaved (default: %(default)s)")
    args = p.parse_args()
    on_gpu = args.device.startswith("cuda")
    model = args.model or ("ViT-L/14@336px" if on_gpu else "ViT-B-32")
    if not on_gpu:
        torch.set_num_threads(os.cpu_count() or 1)
    clip = load_clip(model, "none", args.device)  # random weights: the same arithmetic as trained ones
    thumbs = thumbnails(args.n)
    run_ours(clip, thumbs[: args.batch_size], args.batch_size, args.workers)  # warm-up (kernels, allocator)
    run_anchor(clip, thumbs[: args.batch_size], args.batch_size)
    times = {"ours": [], "anchor": []}
    for rep in range(args.reps):
        for side in (("ours", "anchor") if rep % 2 == 0 else ("anchor", "ours")):
            t = run_ours(clip, thumbs, args.batch_size, args.workers) if side == "ours" else \
                run_anchor(clip, thumbs, args.batch_size)
            times[side].append(t)
            print(f"rep {rep + 1} {side:6} {t:7.2f}s  {args.n / t:8.1f} img/s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{clip.name} ({clip.dtype}) on {args.device}, N={args.n:,}, batch {args.batch_size}, "
          f"{args.workers} decode threads, {os.cpu_count()} CPUs, peak RSS {rss:,.0f} MB")
    for side in ("ours", "anchor"):
        print(f"{side:6} median {med[side]:.2f}s  {args.n / med[side]:.1f} img/s")
    print(f"ratio ours / anchor (images/s): {med['anchor'] / med['ours']:.2f}x")
    print(f"decode + square capacity of the threads alone: {decode_capacity(clip, thumbs, args.workers):,.0f} img/s")
    if on_gpu:
        flops = model_flops(clip)
        ceiling = matmul_ceiling(args.device, clip.dtype)
        achieved = flops * args.n / med["ours"]
        print(f"model: {flops / 1e9:,.0f} GFLOP per image (torch count); achieved {achieved / 1e12:,.1f} TFLOP/s; "
              f"fp16 matmul ceiling {ceiling / 1e12:,.1f} TFLOP/s -> {achieved / ceiling:.0%} of the ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
