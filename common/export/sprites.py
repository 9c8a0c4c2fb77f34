"""Sprite sheets: every representative of a grid level, packed into a few JPEGs of about 1024 px.

The zoomed-out viewer then asks for one sheet per few hundred cells instead of one thumbnail per
cell. Tile k of a level lies on sheet k // (columns*columns), at column p % columns and row
p // columns of that sheet (p = k % (columns*columns)); each tile is `tile` px square and holds
the image's middle square (cropped, not letterboxed: the map draws tiles edge to edge, and bars
would read as frames). The viewer draws a level's cells at up to twice the tile's side before it
moves to the next level, so 64 px tiles stay sharp at the 32-128 px the map shows them at.
JPEG is decoded at reduced scale (`draft`), so a tile costs a fraction of a full decode.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.files import atomic_path

TILE = 64
SHEET_PX = 1024           # a sheet decodes to 4 MB whatever the tile size
BACKGROUND = (24, 24, 24)
QUALITY = 82


def columns_for(tile: int) -> int:
    """Tiles per sheet side: sheets stay about SHEET_PX wide whatever the tile size."""
    return max(1, SHEET_PX // tile)


def centre_square(im: Image.Image) -> Image.Image:
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return im.crop((left, top, left + side, top + side))


def load_tile(path: Path, tile: int) -> Image.Image | None:
    """The middle square of the image at `path`, tile x tile px; None if unreadable."""
    try:
        with Image.open(path) as im:
            # ask the JPEG decoder for about the final size itself: it then scales by up to 1/8 in
            # the DCT, which for 256 px thumbnails is most of the job
            scale = tile / max(1, min(im.size))
            im.draft("RGB", (max(1, round(im.width * scale)), max(1, round(im.height * scale))))
            im = centre_square(im.convert("RGB"))
            return im.resize((tile, tile), Image.Resampling.BILINEAR, reducing_gap=2.0)
    except OSError:
        return None


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
               columns: int | None = None) -> list[tuple[list[Path], Path, int, int]]:
    """One job per sheet of a level: its thumbnails in sprite order and where the sheet goes."""
    columns = columns or columns_for(tile)
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
