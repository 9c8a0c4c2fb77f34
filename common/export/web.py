"""The viewer's files (export contract, version 1): grids, row tiles, clusters, the viewer copy, manifest.

JSON is written compact (no indentation): the 256 level holds up to 65,536 cells and the viewer
loads it whole. Captions and URLs are written as data; the viewer renders them as text.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.export.rows import ExportRows
from common.files import atomic_path, write_text
from common.grid import ROW_TILES, Level, row_tile

CONTRACT_VERSION = 1
CAPTION_CHARS = 200
GRID_COLUMNS = ["i", "j", "count", "id", "caption", "domain", "category", "cluster", "sprite"]
ROW_COLUMNS = ["id", "x", "y", "caption", "url", "domain", "category", "cluster"]
ROW_TILE_PATTERN = "rows/{tx}_{ty}.json"
# what of web/ is the viewer's own development and stays out of the export
SKIP_DIRS = {"tests", "test", "node_modules", "__pycache__"}
SKIP_SUFFIXES = (".test.js", ".spec.js", ".tmp")


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def grid_document(level: Level, rows: ExportRows) -> dict:
    rep = level.rep
    captions = [c[:CAPTION_CHARS] for c in rows.caption[rep].tolist()]
    cells = list(zip(level.i.tolist(), level.j.tolist(), level.count.tolist(), rows.ids[rep].tolist(), captions,
                     rows.domain[rep].tolist(), rows.category[rep].tolist(), level.cluster.tolist(),
                     level.sprite.tolist()))
    return {"level": level.size, "columns": GRID_COLUMNS, "cells": [list(c) for c in cells]}


def write_grid(level: Level, rows: ExportRows, path: Path) -> None:
    write_text(dumps(grid_document(level, rows)) + "\n", path)


def write_row_tiles(rows: ExportRows, export: Path) -> list[str]:
    """One JSON per 16x16 screen tile that has rows; returns their paths relative to export/."""
    tile = row_tile(rows.x, rows.sy)
    order = np.argsort(tile, kind="stable")
    bounds = np.flatnonzero(np.r_[True, tile[order][1:] != tile[order][:-1], True])
    names = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = order[a:b]
        t = int(tile[idx[0]])
        name = ROW_TILE_PATTERN.format(tx=t % ROW_TILES, ty=t // ROW_TILES)
        body = list(zip(rows.ids[idx].tolist(), rows.x[idx].tolist(), rows.sy[idx].tolist(),
                        rows.caption[idx].tolist(), rows.url[idx].tolist(), rows.domain[idx].tolist(),
                        rows.category[idx].tolist(), rows.cluster[idx].tolist()))
        write_text(dumps({"columns": ROW_COLUMNS, "rows": [list(r) for r in body]}) + "\n", export / name)
        names.append(name)
    return names


def extent(rows: ExportRows) -> list[float]:
    """[x0, y0, x1, y1]: the box the rows occupy (screen coordinates); the viewer's first view fits it."""
    if not len(rows):
        return [0.0, 0.0, 1.0, 1.0]
    return [round(float(v), 6) for v in (rows.x.min(), rows.sy.min(), rows.x.max(), rows.sy.max())]


def clusters(rows: ExportRows) -> list[dict]:
    """Each named cluster with its size and where its label goes (the median of its members)."""
    out = []
    for c in np.unique(rows.cluster).tolist():
        if c < 0:
            continue
        members = np.flatnonzero(rows.cluster == c)
        labels, counts = np.unique(rows.cluster_label[members].astype(str), return_counts=True)
        out.append({"cluster": int(c), "label": str(labels[np.argmax(counts)]),
                    "x": round(float(np.median(rows.x[members])), 6),
                    "y": round(float(np.median(rows.sy[members])), 6), "count": int(len(members))})
    return out


def copy_viewer(web: Path, export: Path) -> list[str]:
    """Copy the static viewer (web/, minus its tests) into the export; returns the copied paths."""
    copied = []
    if not web.is_dir():
        return copied
    for src in sorted(web.rglob("*")):
        rel = src.relative_to(web)
        if (src.is_dir() or any(p in SKIP_DIRS or p.startswith(".") for p in rel.parts)
                or src.name.endswith(SKIP_SUFFIXES)):
            continue
        with atomic_path(export / rel) as tmp:
            shutil.copyfile(src, tmp)
        copied.append(rel.as_posix())
    return copied


def remove_stale(export: Path, keep: set[str], folders: tuple[str, ...]) -> int:
    """Delete files a previous run left in these export subfolders that this run did not write."""
    removed = 0
    for folder in folders:
        for path in (export / folder).glob("*") if (export / folder).is_dir() else ():
            if path.is_file() and path.relative_to(export).as_posix() not in keep:
                path.unlink()
                removed += 1
    return removed


def manifest(title: str, n_rows: int, levels: dict[int, Level], sprites: dict, cluster_list: list[dict],
             categories: list[str], parameters: dict, files: list[str], thumb_size: int,
             box: list[float] | None = None, labels: dict | None = None) -> dict:
    return {
        "version": CONTRACT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": title,
        "rows": n_rows,
        "levels": sorted(levels),
        "extent": box or [0.0, 0.0, 1.0, 1.0],
        "grids": {str(size): f"grid_{size}.json" for size in sorted(levels)},
        "thumbs": {"dir": f"images/{thumb_size}", "size": thumb_size},
        "sprites": {str(k): v for k, v in sorted(sprites.items())},
        "row_tiles": {"n": ROW_TILES, "pattern": ROW_TILE_PATTERN},
        "clusters": cluster_list,
        # where the cluster names come from; `note` is shown to every reader (e.g. random weights)
        "labels": {"from": (labels or {}).get("from"), "note": (labels or {}).get("note")},
        "categories": categories,
        "parameters": parameters,
        "files": sorted(files),
    }
