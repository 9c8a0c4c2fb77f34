"""What step 08 puts on a Miro board: one image per grid cell, cluster labels, an optional frame.

Layout. A cell (i, j) of level L sits at (i + 0.5, j + 0.5) x spacing from the map's top-left
corner (j grows downward, as on screen and on a Miro board). Without a frame the map is centred on
the board's origin; with one, the frame is centred there and items are placed relative to its
top-left corner (Miro's `parent_top_left`), with a margin of one spacing (at least half the
largest image). Miro refuses a child whose box sticks out of its frame ("new position is outside
of parent boundaries"), so every box must fit: images do by the margin; a cluster label (6
spacings wide, its height estimated from its text) is moved inward until it fits.

Size. A cell holding `count` rows gets the long side
    size = max(min_width, base_width * sqrt(count / densest_count))
so an image's area grows with the number of images it stands for (the densest cells are
`base_width` wide, sparse ones shrink to `min_width`): dense clusters read as a heatmap. The
geometry sent is the width; a portrait image gets width = size x w / h, so no image is taller than
its cell's size and neighbours do not overlap while spacing >= base_width.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from PIL import Image

from common.cli import UserError
from common.files import read_json
from common.grid import base_level
from common.miro.client import MAX_UPLOAD_BYTES
from common.paths import DataTree, is_row_id

_BOARD_ID = re.compile(r"^[A-Za-z0-9_=\-]{4,100}$")
_BOARD_IN_URL = re.compile(r"/app/board/([^/?#]+)")
TITLE_TAG = re.compile(r"\[cie ([0-9a-f]{8}) ([a-z]+:[0-9,:]+)\]$")
LABEL_GLYPH_EM = 0.62       # wider than the average glyph of Miro's fonts, so wrapped lines are over-counted
LABEL_LINE_EM = 1.5
MAX_LABEL = 120             # characters: a cluster label, not a paragraph


def board_id(value: str) -> str:
    """A board id from an id ('uXjVOabc123=') or a board URL (https://miro.com/app/board/uXjVOabc123=/)."""
    value = value.strip()
    m = _BOARD_IN_URL.search(value)
    candidate = unquote(m.group(1)) if m else unquote(value)
    if not _BOARD_ID.match(candidate):
        raise UserError(f"--board {value!r} is not a Miro board id or board URL: copy it from the board's "
                        "address, e.g. https://miro.com/app/board/uXjVOabc123=/")
    return candidate


@dataclass(frozen=True)
class Layout:
    level: int
    spacing: float
    base_width: float
    min_width: float
    frame: bool

    def as_dict(self) -> dict:
        return {"level": self.level, "spacing": self.spacing, "base_width": self.base_width,
                "min_width": self.min_width, "frame": self.frame}

    @property
    def margin(self) -> float:
        # an edge cell's centre lies margin + spacing / 2 from the frame's edge: room for half the largest image
        return max(self.spacing, self.base_width / 2) if self.frame else 0.0

    @property
    def extent(self) -> float:
        """Side of the square the map covers on the board (the frame's side when there is one)."""
        return self.level * self.spacing + 2 * self.margin

    def point(self, gx: float, gy: float) -> tuple[float, float]:
        """Grid coordinates (cells from the map's top-left) -> board coordinates for the API."""
        if self.frame:
            return round(self.margin + gx * self.spacing, 2), round(self.margin + gy * self.spacing, 2)
        half = self.level / 2
        return round((gx - half) * self.spacing, 2), round((gy - half) * self.spacing, 2)

    def inside(self, x: float, y: float, width: float, height: float) -> tuple[float, float]:
        """A box's centre moved, as little as needed, so that the box lies within the frame."""
        if not self.frame:
            return x, y
        side = self.extent
        return (round(min(max(x, width / 2), side - width / 2), 2),
                round(min(max(y, height / 2), side - height / 2), 2))

    def size(self, count: int, densest: int) -> float:
        return max(self.min_width, self.base_width * math.sqrt(count / max(densest, 1)))


@dataclass(frozen=True)
class PlanItem:
    key: str                  # ledger key: "frame", "cell:i,j", "label:k"
    kind: str                 # frame | image | text
    x: float
    y: float
    width: float
    text: str                 # frame/image title (with its tag), text content
    path: Path | None = None
    height: float = 0.0       # frame: its height; text: the (estimated) height of its box
    count: int = 0
    font_size: int = 0        # text only


@dataclass
class Plan:
    layout: Layout
    title: str
    frame: PlanItem | None
    images: list[PlanItem]
    labels: list[PlanItem]
    cells_at_level: int
    skipped: dict

    @property
    def items(self) -> list[PlanItem]:
        return ([self.frame] if self.frame else []) + self.images + self.labels


def tag(namespace: str, key: str) -> str:
    """The stable key in an item's title: how a create answered by a 5xx is recognised on the board."""
    return f"[cie {namespace} {key}]"


def load_manifest(tree: DataTree) -> dict:
    if not tree.manifest_file.is_file():
        raise UserError(f"no export at {tree.manifest_file}: run 07_export_for_web.py first")
    manifest = read_json(tree.manifest_file)
    if manifest.get("version") != 1:
        raise UserError(f"{tree.manifest_file} is export version {manifest.get('version')!r}; this step reads "
                        "version 1: re-run 07_export_for_web.py")
    if not manifest.get("levels"):
        raise UserError(f"{tree.manifest_file} lists no grid levels: re-run 07_export_for_web.py")
    return manifest


def read_grid(tree: DataTree, manifest: dict, level: int) -> list[dict]:
    name = (manifest.get("grids") or {}).get(str(level))
    path = tree.export / name if name else tree.grid_file(level)
    if not path.is_file():
        raise UserError(f"{path} is missing: re-run 07_export_for_web.py")
    grid = read_json(path)
    cols = grid["columns"]
    return [dict(zip(cols, cell)) for cell in grid["cells"]]


def choose_level(levels: list[int], counts: dict[int, int], limit: int | None, wanted: int | None) -> int:
    """--level if given; else the coarsest level with enough cells to fill --limit (the finest if none
    has): coarse cells stand for more rows each. Without --limit, level 64 (the base level), or the
    coarsest when the export lacks it: the viewer's overview levels (16, 32) are too coarse for a board."""
    if wanted is not None:
        if wanted not in levels:
            raise UserError(f"--level {wanted} is not in the export (levels {', '.join(map(str, levels))})")
        return wanted
    levels = sorted(levels)
    if limit is None:
        return base_level(levels)
    return next((lv for lv in levels if counts[lv] >= limit), levels[-1])


def _image_width(path: Path, size: float) -> float:
    with Image.open(path) as im:
        w, h = im.size
    return round(size * w / h, 1) if h > w else round(size, 1)


def image_items(tree: DataTree, cells: list[dict], layout: Layout, namespace: str, limit: int | None,
                skipped: dict) -> list[PlanItem]:
    densest = max((c["count"] for c in cells), default=1)
    # densest cells first, so --limit keeps the heart of each cluster
    ordered = sorted(cells, key=lambda c: (-c["count"], c["j"], c["i"]))
    out, too_large = [], []
    for cell in ordered:
        if limit is not None and len(out) >= limit:
            break
        rid = str(cell.get("id") or "")
        path = tree.export_thumbnail(rid) if is_row_id(rid) else None
        if path is None or cell.get("sprite", 0) == -1 or not path.is_file():
            skipped["no_thumbnail"] = skipped.get("no_thumbnail", 0) + 1
            continue
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            too_large.append(path)
            continue
        key = f"cell:{cell['i']},{cell['j']}"
        x, y = layout.point(cell["i"] + 0.5, cell["j"] + 0.5)
        caption = " ".join(str(cell.get("caption") or "").split())[:120]
        out.append(PlanItem(key=key, kind="image", x=x, y=y, count=int(cell["count"]), path=path,
                            width=_image_width(path, layout.size(cell["count"], densest)),
                            text=f"{caption} {tag(namespace, key)}".strip()))
    if too_large:
        raise UserError(f"{len(too_large):,} thumbnails are over Miro's 6 MB upload limit (e.g. {too_large[0]}): "
                        "re-run 07_export_for_web.py to rebuild them")
    return out


def text_height(text: str, width: float, font_size: float) -> float:
    """The height of a text box: generous (wide glyphs, tall lines), since Miro decides the real one.
    CJK characters are a full em wide."""
    ems = sum(1.0 if unicodedata.east_asian_width(ch) in "WF" else LABEL_GLYPH_EM for ch in text)
    lines = max(1, math.ceil(ems * font_size / width))
    return round(lines * font_size * LABEL_LINE_EM, 2)


def label_items(manifest: dict, layout: Layout) -> list[PlanItem]:
    out = []
    font = int(min(288, max(14, layout.spacing * 0.6)))
    width = min(layout.spacing * 6, layout.extent) if layout.frame else layout.spacing * 6
    for c in manifest.get("clusters") or []:
        label = " ".join(str(c.get("label") or "").split())
        if len(label) > MAX_LABEL:
            label = label[:MAX_LABEL - 1].rstrip() + "…"
        if not label or c.get("x") is None or c.get("y") is None:
            continue
        height = text_height(label, width, font)
        # just above the cluster's centre, so the label does not hide its densest images; inside the frame
        x, y = layout.point(float(c["x"]) * layout.level, float(c["y"]) * layout.level - 1.0)
        x, y = layout.inside(x, y, width, height)
        out.append(PlanItem(key=f"label:{int(c['cluster'])}", kind="text", x=x, y=y, width=width, text=label,
                            height=height, font_size=font, count=int(c.get("count") or 0)))
    return out


def frame_item(manifest: dict, layout: Layout, namespace: str, created: str) -> PlanItem:
    title = (f"{manifest.get('title') or 'City Identity Explorer'} · {created} · level {layout.level}, "
             f"spacing {layout.spacing:g}, base width {layout.base_width:g} {tag(namespace, 'frame:0')}")
    return PlanItem(key="frame", kind="frame", x=0.0, y=0.0, width=layout.extent, height=layout.extent, text=title)
