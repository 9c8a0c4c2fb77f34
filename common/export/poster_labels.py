"""Where the poster's cluster labels go: never on each other or on the title, on as few images as can be.

Each label, biggest cluster first, tries spots on rings around its cluster's position (the
position itself first) and takes the one that covers the least image area, nearer spots winning
ties; a spot that touches a label already placed, the title or the canvas edge is never taken.
A label that ends up away from its position gets a leader line back to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RINGS = 24          # how far out a label may move, in label heights
ANGLES = 16         # spots per ring
GAP = 3             # px kept free between two labels
GRID = 4            # px per cell of the image-coverage map


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: "Box", gap: float = 0) -> bool:
        return (self.x0 < other.x1 + gap and other.x0 < self.x1 + gap
                and self.y0 < other.y1 + gap and other.y0 < self.y1 + gap)

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1

    def nearest(self, x: float, y: float) -> tuple[float, float]:
        return min(max(x, self.x0), self.x1), min(max(y, self.y0), self.y1)

    def as_list(self) -> list[int]:
        return [int(self.x0), int(self.y0), int(self.x1), int(self.y1)]


@dataclass
class Placed:
    text: str
    anchor: tuple[float, float]
    box: Box
    leader: bool


class Coverage:
    """Image area under any rectangle, in O(1): a summed-area table of a coarse occupancy map."""

    def __init__(self, width: int, height: int, images: list[Box]):
        w, h = -(-width // GRID), -(-height // GRID)
        mask = np.zeros((h, w), np.int32)
        for b in images:
            mask[int(b.y0) // GRID:int(math.ceil(b.y1 / GRID)), int(b.x0) // GRID:int(math.ceil(b.x1 / GRID))] = 1
        self.sat = np.zeros((h + 1, w + 1), np.int64)
        self.sat[1:, 1:] = mask.cumsum(0).cumsum(1)

    def under(self, b: Box) -> int:
        h, w = self.sat.shape[0] - 1, self.sat.shape[1] - 1
        x0, x1 = min(max(int(b.x0) // GRID, 0), w), min(max(int(math.ceil(b.x1 / GRID)), 0), w)
        y0, y1 = min(max(int(b.y0) // GRID, 0), h), min(max(int(math.ceil(b.y1 / GRID)), 0), h)
        s = self.sat
        return int(s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0])


def candidates(ax: float, ay: float, w: float, h: float):
    """Label boxes around (ax, ay): centred on it, then on rings further and further out."""
    yield 0.0, Box(ax - w / 2, ay - h / 2, ax + w / 2, ay + h / 2)
    for ring in range(1, RINGS + 1):
        r = ring * h
        for k in range(ANGLES):
            t = 2 * math.pi * k / ANGLES
            cx, cy = ax + math.cos(t) * (r + w / 2 * abs(math.cos(t))), ay + math.sin(t) * r
            yield r, Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def place_labels(labels: list[tuple[str, tuple[float, float], float, float]], width: int, height: int,
                 images: list[Box], keep_clear: list[Box] = ()) -> list[Placed]:
    """(text, anchor, w, h) in the order they choose -> where each goes; a label with no free spot
    within RINGS label heights of its anchor is left out rather than drawn over another."""
    cover = Coverage(width, height, images)
    taken: list[Box] = list(keep_clear)
    placed = []
    for text, (ax, ay), w, h in labels:
        best = None
        for dist, box in candidates(ax, ay, w, h):
            if box.x0 < 0 or box.y0 < 0 or box.x1 > width or box.y1 > height:
                continue
            if any(box.overlaps(t, GAP) for t in taken):
                continue
            score = (cover.under(box), dist)
            if best is None or score < best[0]:
                best = (score, box)
            if score[0] == 0:
                break  # nothing covered: a nearer spot already lost, a further one cannot win
        if best is None:
            continue
        box = best[1]
        taken.append(box)
        placed.append(Placed(text, (ax, ay), box, not box.contains(ax, ay)))
    return placed
