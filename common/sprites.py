"""Sprite sheets: every representative of a grid level, small, packed into a few JPEGs.

The zoomed-out viewer then asks for one sheet per 1,024 cells instead of one thumbnail per cell.
Tile k of a level lies on sheet k // (columns*columns), at column p % columns and row
p // columns of that sheet (p = k % (columns*columns)); each tile is `tile` px square with the
image letterboxed in it. JPEG is decoded at reduced scale (`draft`), so a tile costs a fraction
of a full decode.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.files import atomic_path

TILE = 32
COLUMNS = 32
BACKGROUND = (24, 24, 24)
QUALITY = 82


def load_tile(path: Path, tile: int) -> Image.Image | None:
    """The image at `path` fitted into a tile x tile square, letterboxed; None if unreadable."""
    try:
        with Image.open(path) as im:
            # ask the JPEG decoder for the fitted size itself: it then scales by 1/8 in the DCT,
            # which for 256 px thumbnails and small tiles is nearly the whole job
            scale = tile / max(im.size)
            im.draft("RGB", (max(1, round(im.width * scale)), max(1, round(im.height * scale))))
            im = im.convert("RGB")
            im.thumbnail((tile, tile), Image.Resampling.BILINEAR)
    except OSError:
        return None
    out = Image.new("RGB", (tile, tile), BACKGROUND)
    out.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    return out


def sheet_name(level: int, n: int) -> str:
    return f"{level}-{n:03d}.jpg"


def write_sheet(job: tuple[list[Path], Path, int, int]) -> int:
    """Draw one sheet from its thumbnails, in order; returns how many could not be read (left blank)."""
    paths, out, tile, columns = job
    rows = math.ceil(len(paths) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
    unreadable = 0
    for p, path in enumerate(paths):
        im = load_tile(path, tile)
        if im is None:
            unreadable += 1
            continue
        sheet.paste(im, ((p % columns) * tile, (p // columns) * tile))
    with atomic_path(out) as tmp:
        sheet.save(tmp, "JPEG", quality=QUALITY, optimize=True)
    return unreadable


def sheet_jobs(level: int, paths: list[Path], folder: Path, tile: int = TILE,
               columns: int = COLUMNS) -> list[tuple[list[Path], Path, int, int]]:
    """One job per sheet of a level: its thumbnails in sprite order and where the sheet goes."""
    per_sheet = columns * columns
    return [(paths[s:s + per_sheet], folder / sheet_name(level, s // per_sheet), tile, columns)
            for s in range(0, len(paths), per_sheet)]


def write_sheets(jobs: list, workers: int | None = None) -> int:
    """Draw every sheet, in parallel processes when there are enough of them; returns unreadable images.

    Decoding thumbnails is CPU-bound Python-held work, so threads would not help; sheets are
    independent, so processes share nothing but the job list.
    """
    workers = workers or os.cpu_count() or 1
    total = sum(len(j[0]) for j in jobs)
    bar = tqdm(total=total, desc="sprite sheets", unit="image", mininterval=1.0)
    unreadable = 0
    if workers > 1 and len(jobs) >= 2 * workers:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, bad in zip(jobs, pool.map(write_sheet, jobs)):
                unreadable += bad
                bar.update(len(job[0]))
    else:
        for job in jobs:
            unreadable += write_sheet(job)
            bar.update(len(job[0]))
    bar.close()
    return unreadable
