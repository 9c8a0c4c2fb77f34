"""The poster: one PNG of the map with the images at their positions, sized by density, clusters named.

It is the picture the spreadsheet-and-Gephi recipe ends with, made without Gephi or a vector
editor. Each cell of a grid level draws its representative; a cell with many rows draws it
larger (log scale, so one huge cluster does not flatten the rest), the way the Miro board's
"visual heatmap" does. Cluster labels are drawn last, with a white outline, at each cluster's
median position.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from common.files import atomic_path
from common.grid import Level

TARGET_CELL_PX = 40       # the finest level whose cells are at least this big on the poster is drawn
MIN_FRACTION = 0.35       # the sparsest cell's image side, as a fraction of the cell
BACKGROUND = (255, 255, 255)
FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", "DejaVuSans-Bold.ttf")


def font(size: int) -> ImageFont.ImageFont:
    """DejaVu when the system has it, else Pillow's own scalable default font."""
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def choose_level(levels: dict[int, Level], map_px: int) -> Level:
    fitting = [size for size in levels if map_px / size >= TARGET_CELL_PX]
    return levels[max(fitting) if fitting else min(levels)]


def image_sides(count: np.ndarray, cell_px: float) -> np.ndarray:
    top = math.log1p(max(int(count.max()), 1))
    frac = MIN_FRACTION + (1 - MIN_FRACTION) * np.log1p(count) / top if top else np.ones(len(count))
    return np.maximum(2, np.round(cell_px * frac)).astype(int)


def _draw_images(canvas: Image.Image, level: Level, rep_has_thumb: np.ndarray, thumb_path: Callable,
                 rep_ids: np.ndarray, margin: int, map_px: int) -> int:
    cell_px = map_px / level.size
    sides = image_sides(level.count, cell_px)
    drawn = 0
    order = np.argsort(level.count, kind="stable")  # dense cells last, on top
    for c in tqdm(order[rep_has_thumb[order]], desc="poster", unit="image", mininterval=1.0, leave=False):
        side = int(sides[c])
        try:
            with Image.open(thumb_path(rep_ids[c])) as im:
                im.draft("RGB", (side, side))
                im = im.convert("RGB")
                im.thumbnail((side, side))
        except OSError:
            continue
        cx = margin + (level.i[c] + 0.5) * cell_px
        cy = margin + (level.j[c] + 0.5) * cell_px
        canvas.paste(im, (int(cx - im.width / 2), int(cy - im.height / 2)))
        drawn += 1
    return drawn


def _draw_labels(canvas: Image.Image, clusters: list[dict], title: str, margin: int, map_px: int) -> None:
    draw = ImageDraw.Draw(canvas)
    size = max(12, canvas.width // 90)
    label_font, title_font = font(size), font(int(size * 1.4))
    for c in clusters:
        if not c["label"]:
            continue
        half = draw.textlength(c["label"], font=label_font) / 2 + size
        # a label near the edge is moved inwards, never cut off
        x = min(max(margin + c["x"] * map_px, half), canvas.width - half)
        xy = (x, margin + c["y"] * map_px)
        draw.text(xy, c["label"], font=label_font, fill=(20, 20, 20), anchor="mm",
                  stroke_width=max(2, size // 6), stroke_fill=(255, 255, 255))
    draw.text((margin // 2, margin // 4), title, font=title_font, fill=(20, 20, 20))


def draw_poster(path: Path, size: int, levels: dict[int, Level], has_thumb: np.ndarray, ids: np.ndarray,
                thumb_path: Callable, clusters: list[dict], title: str) -> dict:
    """Write the poster PNG (size x size px); returns what it drew."""
    margin = max(16, size // 40)
    map_px = size - 2 * margin
    level = choose_level(levels, map_px)
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    drawn = _draw_images(canvas, level, has_thumb[level.rep], thumb_path, ids[level.rep], margin, map_px)
    _draw_labels(canvas, clusters, title, margin, map_px)
    with atomic_path(path) as tmp:
        canvas.save(tmp, "PNG", compress_level=3)
    return {"level": level.size, "images": drawn, "size": size}
