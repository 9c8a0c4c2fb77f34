"""Sprite sheets: every representative of a grid level, small, packed into a few JPEGs.

The zoomed-out viewer then asks for one sheet per 1,024 cells instead of one thumbnail per cell.
Tile k of a level lies on sheet k // (columns*columns), at column p % columns and row
p // columns of that sheet (p = k % (columns*columns)); each tile is `tile` px square with the
image letterboxed in it. JPEG is decoded at reduced scale (`draft`), so a tile costs a fraction
of a full decode.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

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
            im.draft("RGB", (tile, tile))
            im = im.convert("RGB")
            im.thumbnail((tile, tile), Image.Resampling.BILINEAR)
    except OSError:
        return None
    out = Image.new("RGB", (tile, tile), BACKGROUND)
    out.paste(im, ((tile - im.width) // 2, (tile - im.height) // 2))
    return out


def sheet_name(level: int, n: int) -> str:
    return f"{level}-{n:03d}.jpg"


def write_sheets(level: int, ids: list[str], thumb_path: Callable[[str], Path], folder: Path,
                 tile: int = TILE, columns: int = COLUMNS, cache: dict | None = None) -> tuple[list[str], int]:
    """Sheets for `ids` in sprite order; returns their file names and how many images were unreadable.

    `cache` (id -> tile) lets coarser levels reuse the tiles a finer level already decoded.
    """
    per_sheet = columns * columns
    names, unreadable = [], 0
    n_sheets = math.ceil(len(ids) / per_sheet)
    bar = tqdm(total=len(ids), desc=f"sprites {level}", unit="image", mininterval=1.0, leave=False)
    for s in range(n_sheets):
        chunk = ids[s * per_sheet:(s + 1) * per_sheet]
        rows = math.ceil(len(chunk) / columns)
        sheet = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
        for p, row_id in enumerate(chunk):
            im = cache.get(row_id) if cache is not None else None
            if im is None:
                im = load_tile(thumb_path(row_id), tile)
                if cache is not None and im is not None:
                    cache[row_id] = im
            if im is None:
                unreadable += 1
                continue
            sheet.paste(im, ((p % columns) * tile, (p // columns) * tile))
        name = sheet_name(level, s)
        with atomic_path(folder / name) as tmp:
            sheet.save(tmp, "JPEG", quality=QUALITY, optimize=True)
        names.append(name)
        bar.update(len(chunk))
    bar.close()
    return names, unreadable
