"""The poster: one PNG of the map with the images at their positions, sized by density, clusters named.

It is the picture the spreadsheet-and-Gephi recipe ends with, made without Gephi or a vector
editor. Each cell of a grid level draws its representative; a cell with many rows draws it
larger: the image's area grows with the cell's count and the densest cell fills its cell, as on
the Miro board and in the web viewer, so the three show density alike. The poster is cropped to
the data's extent (its long side is the size asked for). Cluster labels never overlap each other
or the title: each goes to the free spot nearest its cluster's median position that covers the
fewest images, with a leader line back to that position when it had to move away.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from common.export.poster_labels import Box, place_labels
from common.files import atomic_path
from common.grid import Level

TARGET_CELL_PX = 40       # the finest level whose cells are at least this big on the poster is drawn
MIN_FRACTION = 0.25       # the smallest image side, as a fraction of the cell, so a lone image stays visible
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
    densest = max(int(count.max()), 1) if len(count) else 1
    frac = np.maximum(MIN_FRACTION, np.sqrt(np.asarray(count, dtype=float) / densest))
    return np.maximum(2, np.round(cell_px * frac)).astype(int)


@dataclass
class Frame:
    """Where the map's unit square lands on the canvas: the data's extent, cropped, plus margins."""
    u0: float
    v0: float
    scale: float      # px per map unit
    left: int
    top: int
    width: int
    height: int

    def xy(self, u, v):
        return self.left + (u - self.u0) * self.scale, self.top + (v - self.v0) * self.scale


def data_extent(levels: dict[int, Level]) -> tuple[float, float, float, float]:
    """(u0, v0, u1, v1): the cells of the finest level that hold rows, in map units."""
    level = levels[max(levels)]
    if not len(level.keys):
        return 0.0, 0.0, 1.0, 1.0
    n = level.size
    return level.i.min() / n, level.j.min() / n, (level.i.max() + 1) / n, (level.j.max() + 1) / n


def frame(levels: dict[int, Level], size: int, band: int) -> Frame:
    """The canvas for a poster whose long side is `size` px, with a title band of `band` px on top."""
    margin = max(16, size // 40)
    u0, v0, u1, v1 = data_extent(levels)
    scale = min((size - 2 * margin) / max(u1 - u0, 1e-9), (size - 2 * margin - band) / max(v1 - v0, 1e-9))
    width = int(round((u1 - u0) * scale)) + 2 * margin
    height = int(round((v1 - v0) * scale)) + 2 * margin + band
    return Frame(u0, v0, scale, margin, margin + band, width, height)


def _draw_images(canvas: Image.Image, level: Level, rep_has_thumb: np.ndarray, thumb_path: Callable,
                 rep_ids: np.ndarray, f: Frame) -> list[Box]:
    cell_px = f.scale / level.size
    sides = image_sides(level.count, cell_px)
    boxes = []
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
        cx, cy = f.xy((level.i[c] + 0.5) / level.size, (level.j[c] + 0.5) / level.size)
        x0, y0 = int(cx - im.width / 2), int(cy - im.height / 2)
        canvas.paste(im, (x0, y0))
        boxes.append(Box(x0, y0, x0 + im.width, y0 + im.height))
    return boxes


def _draw_heading(draw: ImageDraw.ImageDraw, title: str, note: str | None, size: int, f: Frame) -> Box:
    """Title (and the note on what the names mean, if any) in the band above the map; returns its box."""
    x, y = f.left, max(4, f.left // 4)
    draw.text((x, y), title, font=font(int(size * 1.4)), fill=(20, 20, 20))
    bottom = y + int(size * 1.4) + 4
    if note:
        draw.text((x, bottom), note, font=font(int(size * 0.8)), fill=(170, 60, 0))
        bottom += int(size * 0.8) + 4
    right = max(x + draw.textlength(title, font=font(int(size * 1.4))),
                x + (draw.textlength(note, font=font(int(size * 0.8))) if note else 0))
    return Box(x, y, right, bottom)


def label_font_size(f: Frame) -> int:
    return max(12, max(f.width, f.height) // 90)


def heading_band(size: int, note: str | None) -> int:
    text = max(12, size // 90)
    return int(text * 1.4) + 8 + (int(text * 0.8) + 4 if note else 0)


def _draw_labels(canvas: Image.Image, clusters: list[dict], f: Frame, images: list[Box], keep_clear: list[Box]) -> list:
    draw = ImageDraw.Draw(canvas)
    size = label_font_size(f)
    label_font, pad = font(size), max(2, size // 5)
    named = sorted((c for c in clusters if c["label"]), key=lambda c: -c.get("count", 0))  # big clusters choose first
    wanted = []
    for c in named:
        left, top, right, bottom = draw.textbbox((0, 0), c["label"], font=label_font, anchor="lt")
        wanted.append((c["label"], f.xy(c["x"], c["y"]), right - left + 2 * pad, bottom - top + 2 * pad))
    placed = place_labels(wanted, canvas.width, canvas.height, images, keep_clear)
    for p in placed:  # leader lines first, so no text is crossed by one
        if p.leader:
            ax, ay = p.anchor
            draw.line([(ax, ay), p.box.nearest(ax, ay)], fill=(90, 90, 90), width=max(1, size // 10))
            r = max(2, size // 6)
            draw.ellipse([ax - r, ay - r, ax + r, ay + r], fill=(90, 90, 90))
    for p in placed:
        draw.rectangle([p.box.x0, p.box.y0, p.box.x1, p.box.y1], fill=(255, 255, 255), outline=(200, 200, 200))
        draw.text((p.box.x0 + pad, p.box.y0 + pad), p.text, font=label_font, fill=(20, 20, 20), anchor="lt")
    return placed


def draw_poster(path: Path, size: int, levels: dict[int, Level], has_thumb: np.ndarray, ids: np.ndarray,
                thumb_path: Callable, clusters: list[dict], title: str, note: str | None = None) -> dict:
    """Write the poster PNG (long side `size` px, cropped to the data); returns what it drew."""
    f = frame(levels, size, heading_band(size, note))
    level = choose_level(levels, f.scale)
    canvas = Image.new("RGB", (f.width, f.height), BACKGROUND)
    images = _draw_images(canvas, level, has_thumb[level.rep], thumb_path, ids[level.rep], f)
    heading = _draw_heading(ImageDraw.Draw(canvas), title, note, label_font_size(f), f)
    placed = _draw_labels(canvas, clusters, f, images, [heading])
    with atomic_path(path) as tmp:
        canvas.save(tmp, "PNG", compress_level=3)
    return {"level": level.size, "images": len(images), "size": [f.width, f.height],
            "labels": [{"text": p.text, "box": p.box.as_list(), "leader": p.leader} for p in placed]}
