"""A synthetic export folder that follows the export contract (version 1), for viewer tests and benchmarks.

`make_export(folder, rows=400)` writes everything step 07 would: grid_{64,128,256}.json, sprite
sheets, 16x16 row tiles, thumbnails, manifest.json (last), and a copy of web/. It returns an
`Export` holding the generated rows so tests can compute what the viewer must show.

Images are flat colours derived from the row id by default: cheap to make, and a pixel read back
from the canvas can be traced to the row it came from. With `photos=N`, they are N distinct crops
of scikit-learn's two sample photographs (china.jpg, flower.jpg), shared by the rows through hard
links, and the sprite tiles are cut from them with step 07's own code (common/export/sprites.py), so
what the viewer draws can be judged as pictures. The generator is vectorised so 1M rows take
seconds, not minutes (the benchmark uses it).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
LEVELS = (16, 32, 64, 128, 256)      # step 07's defaults
ROW_TILES = 16
SPRITE_TILE = 64
SPRITE_COLUMNS = 16                  # sheets of 1024 px, as step 07 writes them
CATEGORIES = ("news", "stock", "travel", "social", "shop")
WORDS = ("plaza", "mayor", "street", "night", "skyline", "tower", "market", "river", "bridge", "park",
         "museum", "palace", "metro", "sunset", "old", "town", "cathedral", "square", "view", "tram")
GRID_COLUMNS = ["i", "j", "count", "id", "caption", "domain", "category", "cluster", "sprite"]
ROW_COLUMNS = ["id", "x", "y", "caption", "url", "domain", "category", "cluster"]


@dataclass
class Export:
    folder: Path
    ids: list
    x: np.ndarray          # screen coordinates, 0..1, y grows downward
    y: np.ndarray
    captions: list
    urls: list
    domains: list
    categories: list
    clusters: np.ndarray
    grids: dict = field(default_factory=dict)   # level -> list of cell arrays as written
    has_thumb: np.ndarray | None = None
    photo: np.ndarray | None = None             # with photos: each row's photo number
    photo_tiles: np.ndarray | None = None       # with photos: each photo's sprite tile (n, tile, tile, 3)

    def cell_of(self, level: int, row: int) -> tuple[int, int]:
        return (min(int(self.x[row] * level), level - 1), min(int(self.y[row] * level), level - 1))

    def members(self, level: int, i: int, j: int) -> list[int]:
        ci = np.minimum((self.x * level).astype(int), level - 1)
        cj = np.minimum((self.y * level).astype(int), level - 1)
        return [int(r) for r in np.flatnonzero((ci == i) & (cj == j))]

    def cell(self, level: int, i: int, j: int) -> dict | None:
        for c in self.grids[level]:
            if c[0] == i and c[1] == j:
                return dict(zip(GRID_COLUMNS, c))
        return None


def row_id(n: int, salt: str = "") -> str:
    return hashlib.sha1(f"row-{salt}-{n}".encode()).hexdigest()[:16]


def id_colour(row: str) -> tuple[int, int, int]:
    """A flat, fairly bright colour per id, so drawn images stand out from the dark background."""
    v = int(row[:6], 16)
    return (80 + (v >> 16) % 170, 80 + (v >> 8 & 255) % 170, 80 + (v & 255) % 170)


def _positions(rng, rows: int, clusters: int, spread: float, centres_in=(0.15, 0.85)):
    centres = rng.uniform(*centres_in, size=(clusters, 2))
    label = rng.integers(0, clusters, size=rows)
    xy = centres[label] + rng.normal(0, spread, size=(rows, 2))
    xy = np.clip(xy, 0.0, 0.999999)
    return xy[:, 0], xy[:, 1], label


def _captions(rng, rows: int) -> list[str]:
    idx = rng.integers(0, len(WORDS), size=(rows, 4))
    return [f"{WORDS[a]} {WORDS[b]} {WORDS[c]} {WORDS[d]} no. {n}" for n, (a, b, c, d) in enumerate(idx.tolist())]


def _representatives(x, y, has_thumb, levels):
    """Per level: (cell keys, counts, representative row). Finest level first, then coarse from children."""
    out = {}
    cand = np.arange(len(x))
    for level in sorted(levels, reverse=True):
        ci = np.minimum((x * level).astype(np.int64), level - 1)
        cj = np.minimum((y * level).astype(np.int64), level - 1)
        key = cj * level + ci
        keys, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        mx = np.bincount(inv, weights=x) / counts
        my = np.bincount(inv, weights=y) / counts
        # Candidates: every row at the finest level, the children's representatives above it,
        # so a coarse cell always shows one of its children's images (no flicker on zoom).
        ck = key[cand]
        pos = np.searchsorted(keys, ck)
        dist = (x[cand] - mx[pos]) ** 2 + (y[cand] - my[pos]) ** 2 + np.where(has_thumb[cand], 0.0, 10.0)
        order = np.lexsort((dist, pos))
        first = np.r_[True, pos[order][1:] != pos[order][:-1]]
        rep = cand[order[first]]
        out[level] = (keys, counts, rep)
        cand = rep
    return out


def _sprite_sheets(folder: Path, level: int, tiles: list, tile: int, columns: int) -> list[str]:
    """`tiles`: per sprite, an RGB colour or a (tile, tile, 3) array."""
    per = columns * columns
    names = []
    for s in range(0, max(len(tiles), 1), per):
        chunk = tiles[s:s + per]
        rows = -(-len(chunk) // columns) if chunk else 1
        sheet = np.zeros((rows * tile, columns * tile, 3), dtype=np.uint8)
        for p, content in enumerate(chunk):
            r, c = divmod(p, columns)
            sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = content
        name = f"sprites/{level}-{s // per:03d}.jpg"
        Image.fromarray(sheet).save(folder / name, quality=85)
        names.append(name)
    return names if tiles else []


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def _write_grids(folder, exp, reps, sprites_tile, sprites_columns) -> dict:
    sprites = {}
    for level, (keys, counts, rep) in reps.items():
        cells, colours = [], []
        for key, count, r in zip(keys.tolist(), counts.tolist(), rep.tolist()):
            rid = exp.ids[r]
            sprite = -1
            if exp.has_thumb[r]:
                sprite = len(colours)
                colours.append(id_colour(rid) if exp.photo is None else exp.photo_tiles[exp.photo[r]])
            cells.append([key % level, key // level, count, rid, exp.captions[r][:200], exp.domains[r],
                          exp.categories[r], int(exp.clusters[r]), sprite])
        exp.grids[level] = cells
        _write_json(folder / f"grid_{level}.json", {"level": level, "columns": GRID_COLUMNS, "cells": cells})
        sprites[str(level)] = {"tile": sprites_tile, "columns": sprites_columns,
                               "sheets": _sprite_sheets(folder, level, colours, sprites_tile, sprites_columns)}
    return sprites


def _write_row_tiles(folder, exp) -> list[str]:
    tx = np.minimum((exp.x * ROW_TILES).astype(np.int64), ROW_TILES - 1)
    ty = np.minimum((exp.y * ROW_TILES).astype(np.int64), ROW_TILES - 1)
    key = ty * ROW_TILES + tx
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1], True])
    xs, ys, cl = exp.x.tolist(), exp.y.tolist(), exp.clusters.tolist()
    names = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        k = int(key[order[a]])
        rows = [[exp.ids[r], round(xs[r], 6), round(ys[r], 6), exp.captions[r], exp.urls[r], exp.domains[r],
                 exp.categories[r], cl[r]] for r in order[a:b].tolist()]
        name = f"rows/{k % ROW_TILES}_{k // ROW_TILES}.json"
        _write_json(folder / name, {"columns": ROW_COLUMNS, "rows": rows})
        names.append(name)
    return names


def make_photos(folder: Path, n: int, tile: int, thumb_px: int = 256) -> tuple[list[Path], np.ndarray]:
    """n distinct crops of the two sample photographs as 4:3 thumbnails, and their sprite tiles cut by
    step 07's own code; crops differ in place and size (a quarter to the whole of a photo's height)."""
    from sklearn.datasets import load_sample_images

    from common.export.sprites import load_tile

    sources = [Image.fromarray(im) for im in load_sample_images().images]
    rng = np.random.default_rng(7)
    out = folder / "photos"
    out.mkdir(parents=True, exist_ok=True)
    paths, tiles = [], np.zeros((n, tile, tile, 3), np.uint8)
    for k in range(n):
        src = sources[k % len(sources)]
        h = int(rng.uniform(0.25, 1.0) * src.height)
        w = min(src.width, h * 4 // 3)
        x, y = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
        thumb = src.crop((x, y, x + w, y + h)).resize((thumb_px, thumb_px * 3 // 4), Image.Resampling.BILINEAR)
        paths.append(out / f"photo-{k:05d}.jpg")
        thumb.save(paths[-1], quality=85)
        tiles[k] = np.asarray(load_tile(paths[-1], tile))
    return paths, tiles


def link_photo_thumbnails(folder: Path, exp, thumb_rows, photo_paths: list[Path]) -> None:
    out = folder / "images" / "256"
    out.mkdir(parents=True, exist_ok=True)
    for r in thumb_rows:
        target = out / f"{exp.ids[r]}.jpg"
        if not target.exists():
            target.hardlink_to(photo_paths[exp.photo[r]])


def write_thumbnails(folder, exp, thumb_rows, thumb_px: int = 256, distinct: int | None = None) -> None:
    """Thumbnails for `thumb_rows`. With `distinct`, only that many images are encoded and the rows
    share them through hard links (cheap for a million rows); otherwise each row gets its own colour."""
    encoded = {}
    out = folder / "images" / "256"
    out.mkdir(parents=True, exist_ok=True)
    for r in thumb_rows:
        rid = exp.ids[r]
        rgb = id_colour(rid) if distinct is None else id_colour(row_id(int(rid[:6], 16) % distinct, "shared"))
        target = out / f"{rid}.jpg"
        if target.exists():
            continue
        if rgb in encoded:
            target.hardlink_to(encoded[rgb])
        else:
            Image.new("RGB", (thumb_px, thumb_px * 3 // 4), rgb).save(target, quality=85)
            encoded[rgb] = target


def copy_viewer(folder: Path) -> list[str]:
    names = []
    for src in sorted(WEB_DIR.rglob("*")):
        if src.is_file():
            rel = src.relative_to(WEB_DIR)
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / rel)
            names.append(rel.as_posix())
    return names


def make_export(folder: Path, rows: int = 400, seed: int = 0, clusters: int = 4, spread: float = 0.06,
                special: dict | None = None, centres_in: tuple = (0.15, 0.85), photos: int = 0,
                thumbs: str | np.ndarray = "all", thumb_files: np.ndarray | None = None, shared_thumbs: int | None = None,
                thumb_px: int = 256, title: str = "Test city", list_thumbnails: bool = False,
                manifest_overrides: dict | None = None) -> Export:
    """Write a complete export under `folder`.

    special: {row number: {"caption"|"url"|"domain"|"category"|"x"|"y": value}} overrides generated rows.
    thumbs: "all", "none", or a boolean mask of the rows that have a thumbnail (as step 07 sees it).
    thumb_files: a mask of the rows whose thumbnail file is actually written (default: all of `thumbs`);
    shared_thumbs: see write_thumbnails. photos: that many distinct photographs instead of flat
    colours (see make_photos). centres_in: the range the cluster centres are drawn from. list_thumbnails: name every thumbnail in the manifest's file
    list (step 07 leaves them out: at a million rows the names alone are ~35 MB).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("sprites", "rows", "images"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x, y, label = _positions(rng, rows, clusters, spread, centres_in)
    ids = [row_id(n, str(seed)) for n in range(rows)]
    cats = [CATEGORIES[v] for v in rng.integers(0, len(CATEGORIES), size=rows).tolist()]
    exp = Export(folder, ids, x, y, _captions(rng, rows), [f"https://img{n % 7}.example.org/p/{n}.jpg" for n in range(rows)],
                 [f"img{n % 7}.example.org" for n in range(rows)], cats, label.astype(np.int64))
    plural = {"caption": "captions", "url": "urls", "domain": "domains", "category": "categories"}
    for r, fields in (special or {}).items():
        for k, v in fields.items():
            getattr(exp, plural.get(k, k))[r] = v
    has = np.ones(rows, bool) if isinstance(thumbs, str) and thumbs == "all" else \
        np.zeros(rows, bool) if isinstance(thumbs, str) else np.asarray(thumbs, bool)
    exp.has_thumb = has
    photo_paths = []
    if photos:
        photo_paths, exp.photo_tiles = make_photos(folder, photos, SPRITE_TILE, thumb_px)
        exp.photo = np.array([int(i[:8], 16) % photos for i in ids])
    reps = _representatives(exp.x, exp.y, has, LEVELS)
    sprites = _write_grids(folder, exp, reps, SPRITE_TILE, SPRITE_COLUMNS)
    files = [f"grid_{L}.json" for L in LEVELS] + [s for v in sprites.values() for s in v["sheets"]]
    files += _write_row_tiles(folder, exp)
    written = has if thumb_files is None else has & np.asarray(thumb_files, bool)
    if photos:
        link_photo_thumbnails(folder, exp, np.flatnonzero(written).tolist(), photo_paths)
    else:
        write_thumbnails(folder, exp, np.flatnonzero(written).tolist(), thumb_px, shared_thumbs)
    if list_thumbnails:
        files += [f"images/256/{exp.ids[r]}.jpg" for r in np.flatnonzero(has).tolist()]
    files += copy_viewer(folder)
    names = {c: f"{WORDS[c % len(WORDS)]} cluster {c}" for c in range(clusters)}
    cl_list = []
    for c in range(clusters):
        sel = exp.clusters == c
        if sel.any():
            cl_list.append({"cluster": c, "label": names[c], "x": float(np.median(exp.x[sel])),
                            "y": float(np.median(exp.y[sel])), "count": int(sel.sum())})
    manifest = {"version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "title": title, "rows": rows, "levels": list(LEVELS),
                "extent": [round(float(v), 6) for v in (x.min(), y.min(), x.max(), y.max())],
                "grids": {str(L): f"grid_{L}.json" for L in LEVELS},
                "thumbs": {"dir": "images/256", "size": 256}, "sprites": sprites,
                "row_tiles": {"n": ROW_TILES, "pattern": "rows/{tx}_{ty}.json"},
                "clusters": cl_list, "categories": sorted(set(exp.categories)),
                "parameters": {"generator": "tests/export_fixture.py", "seed": seed}, "files": files}
    manifest.update(manifest_overrides or {})
    _write_json(folder / "manifest.json", manifest)
    return exp
