"""On the CPU, say how long embedding will take (measured on the first batch) and which model is faster.

CLIP ViT-L/14@336px, step 05's default, embeds about 0.3 images/s on two CPU cores: a city's
100,000 images would take days. A researcher should learn that after one batch, not after a day.
"""
from __future__ import annotations

import time

from tqdm import tqdm

FASTER = ("ViT-B-32", "laion2b_s34b_b79k")
# open_clip's published zero-shot results (docs/openclip_classification_results.csv in
# mlfoundations/open_clip): ImageNet-1k top-1 accuracy (%) and GFLOPs per image
PUBLISHED = {
    ("ViT-L-14-336", "openai"): (76.6, 395.2),
    ("ViT-L-14", "openai"): (75.5, 175.3),
    ("ViT-B-16", "openai"): (68.3, 41.1),
    ("ViT-B-32", "openai"): (63.3, 14.8),
    ("ViT-B-32", "laion2b_s34b_b79k"): (66.6, 14.8),
}


def duration(seconds: float) -> str:
    """3 h 05 min, 12 min, 40 s."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds / 86_400:.1f} days"


def faster_choice(model: str, pretrained: str | None) -> str | None:
    """The line that names the faster model and what it costs in quality, or None when this is it."""
    base = model.removesuffix("-quickgelu")
    if base == FASTER[0]:
        return None
    flag = f"--model {FASTER[0]} --pretrained {FASTER[1]}"
    theirs_acc, theirs_gflops = PUBLISHED[FASTER]
    ours = PUBLISHED.get((base, pretrained or ""))
    if ours is None:
        return (f"faster on the CPU: {flag} ({theirs_gflops:.0f} GFLOPs per image; {theirs_acc:.1f}% zero-shot "
                "ImageNet accuracy in open_clip's published results)")
    acc, gflops = ours
    return (f"faster on the CPU: {flag}, about {gflops / theirs_gflops:.0f}x less compute per image; "
            f"it costs quality: {theirs_acc:.1f}% zero-shot ImageNet accuracy against {acc:.1f}% for "
            f"{base} ({pretrained}) in open_clip's published results, so tags and cluster names get coarser")


class TimedClip:
    """A CLIP model whose first batch is timed; then it prints the estimate for the rows left.
    Everything else is the wrapped model's."""

    def __init__(self, clip, rows: int, say=tqdm.write):  # tqdm.write: not in the middle of a progress bar
        self._clip, self._rows, self._say = clip, rows, say
        self._embedded, self._told = 0, False

    def __getattr__(self, name):
        attr = getattr(self._clip, name)  # a model without submit_pixels keeps having none
        if name == "submit_pixels":
            # on the CPU the model runs inside the call: timing it times the batch
            return lambda pixels: self._timed(attr, pixels)
        return attr

    def encode_pixels(self, pixels):
        return self._timed(self._clip.encode_pixels, pixels)

    def _timed(self, run, pixels):
        start = time.perf_counter()
        out = run(pixels)
        self._embedded += len(pixels)
        if not self._told:
            self._told = True
            self._tell(len(pixels), time.perf_counter() - start)
        return out

    def _tell(self, n: int, seconds: float) -> None:
        rate = n / max(seconds, 1e-9)
        left = max(self._rows - self._embedded, 0)
        self._say(f"first batch: {n:,} images in {seconds:,.1f} s ({rate:,.2f} images/s on the CPU); "
                  f"the {left:,} rows left will take about {duration(left / rate)} "
                  "(less where downloads fail)")
        tip = faster_choice(self._clip.name, self._clip.pretrained)
        if tip:
            self._say(tip)
