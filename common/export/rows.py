"""The projected rows step 07 exports: positions in screen coordinates, text, domain, thumbnail flag.

Everything is held column-wise in numpy arrays so that grids over a million rows are a handful of
vectorised passes. Positions are quantised to 6 decimals once, here, and every cell, tile and
JSON coordinate is computed from the quantised values: the viewer recomputes a row's cell from
the JSON with the same IEEE arithmetic and lands in the same cell.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common import domains
from common.cli import UserError
from common.columns import normalize, row_ids
from common.paths import DataTree, is_row_id
from common.row_errors import as_row_failure

COORD_DECIMALS = 6
_WANTED = ("id", "url", "caption", "x", "y", "cluster", "cluster_label")


@dataclass
class ExportRows:
    ids: np.ndarray            # object array of 16-hex row ids, unique
    url: np.ndarray            # object array of str
    caption: np.ndarray        # object array of str
    x: np.ndarray              # float64, 0..1, left to right
    sy: np.ndarray             # float64, 0..1, top to bottom (1 - y of the projection)
    cluster: np.ndarray        # int64, -1 = noise
    cluster_label: np.ndarray  # object array of str
    domain: np.ndarray = field(default=None)
    category: np.ndarray = field(default=None)
    has_thumb: np.ndarray = field(default=None)
    dropped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def _strings(table: pa.Table, name: str, n: int) -> np.ndarray:
    if name not in table.column_names:
        return np.full(n, "", dtype=object)
    col = pc.fill_null(table.column(name).cast(pa.string()), "")
    return np.asarray(col.to_pylist(), dtype=object)


def _read_projection(path: Path) -> pa.Table:
    if not path.is_file():
        raise UserError(f"no projection at {path}: run 06_reduce_dimensionality.py first "
                        "(or point --data-dir at the right data tree)")
    try:
        names = pq.ParquetFile(path).schema_arrow.names
        table = normalize(pq.read_table(path, columns=[c for c in names if c in _WANTED
                                                       or c.lower() in ("url", "text", "caption")]))
    except pa.ArrowInvalid as e:
        raise UserError(f"{path} is not a readable parquet file ({e}): re-run step 06") from e
    missing = [c for c in ("x", "y") if c not in table.column_names]
    if missing:
        raise UserError(f"{path} has no {' or '.join(missing)} column: re-run step 06 to write the map positions")
    if "id" not in table.column_names and "url" not in table.column_names:
        raise UserError(f"{path} has neither an id nor a url column: re-run step 06")
    return table


def _positions(table: pa.Table, notes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = table.column("x").cast(pa.float64()).to_numpy(zero_copy_only=False)
    y = table.column("y").cast(pa.float64()).to_numpy(zero_copy_only=False)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.any() and (x[ok].min() < 0 or x[ok].max() > 1 or y[ok].min() < 0 or y[ok].max() > 1):
        # the contract says 0..1; an older projection in raw units is rescaled with one scale for
        # both axes so the map keeps its aspect ratio
        lo = min(x[ok].min(), y[ok].min())
        span = max(x[ok].max() - x[ok].min(), y[ok].max() - y[ok].min()) or 1.0
        x = (x - x[ok].min()) / span
        y = (y - y[ok].min()) / span
        notes.append(f"positions were outside 0..1 (from {lo:.3g}); rescaled to 0..1 keeping the aspect ratio")
    x = np.clip(np.round(x, COORD_DECIMALS), 0.0, 1.0)
    sy = np.clip(np.round(1.0 - y, COORD_DECIMALS), 0.0, 1.0)
    return x, sy, ok


def load_rows(tree: DataTree) -> ExportRows:
    """Rows of step 06's projection that have a position, with unique ids; drops are counted."""
    table = _read_projection(tree.projection_file)
    n = table.num_rows
    notes: list[str] = []
    url = _strings(table, "url", n)
    ids = _strings(table, "id", n) if "id" in table.column_names else np.asarray(row_ids(url), dtype=object)
    x, sy, ok = _positions(table, notes)
    valid_id = np.fromiter((isinstance(i, str) and is_row_id(i) for i in ids), bool, n)
    unique = ~pd.Series(ids).duplicated(keep="first").to_numpy()
    dropped = {"no_position": int((~ok).sum()), "bad_id": int((ok & ~valid_id).sum()),
               "duplicate_id": int((ok & valid_id & ~unique).sum())}
    keep = ok & valid_id & unique
    cluster = (pc.fill_null(table.column("cluster").cast(pa.int64()), -1).to_numpy(zero_copy_only=False)
               if "cluster" in table.column_names else np.full(n, -1, np.int64))
    rows = ExportRows(ids=ids[keep], url=url[keep], caption=_strings(table, "caption", n)[keep],
                      x=x[keep], sy=sy[keep], cluster=cluster[keep],
                      cluster_label=_strings(table, "cluster_label", n)[keep],
                      dropped={k: v for k, v in dropped.items() if v}, notes=notes)
    if not len(rows):
        raise UserError(f"{tree.projection_file} has no row with a position and an id: re-run step 06")
    return rows


def cached_thumbnail_ids(folder: Path) -> set[str]:
    """Ids of the thumbnails in a folder, from one directory listing (no stat per file)."""
    if not folder.is_dir():
        return set()
    return {name[:-4] for name in os.listdir(folder) if name.endswith(".jpg") and is_row_id(name[:-4])}


def registered_domains(urls: np.ndarray) -> np.ndarray:
    """Registered domain of each URL as step 04 counts it (bbc.co.uk for img.news.bbc.co.uk); the
    bare host where there is none (an IP address), '' where there is no host at all."""
    hosts = [_per_row(lambda u: domains.host_of(u)[0] or "", u, "") for u in urls.tolist()]
    uniq, inverse = np.unique(np.asarray(hosts, dtype=object).astype(str), return_inverse=True)
    names = [_per_row(lambda h: domains.domain_of_host(h)[0] or h, h, h) if h else "" for h in uniq.tolist()]
    return np.asarray(names, dtype=object)[inverse]


def _per_row(func, value, default):
    """func(value), or `default` where one row's value breaks it (a URL that no parser foresaw)."""
    try:
        return func(value)
    except Exception as e:  # noqa: BLE001 (the row's boundary: see common.row_errors)
        as_row_failure(e, "bad_url")  # re-raises what is not the row's fault
        return default


def domain_categories(tree: DataTree, names: np.ndarray) -> tuple[np.ndarray, str]:
    """Source type of each domain: step 04's table when it exists (it applied the researcher's own
    --categories map), else the map shipped with the project; 'other' when neither knows it."""
    uniq, inverse = np.unique(names.astype(str), return_inverse=True)
    table = tree.analysis_csv("top_domains")
    from_step_04 = {}
    if table.is_file():
        df = pd.read_csv(table, usecols=lambda c: c in ("domain", "category"), dtype=str, keep_default_na=False)
        if {"domain", "category"} <= set(df.columns):
            from_step_04 = dict(zip(df["domain"], df["category"]))
    cats = [from_step_04.get(d) or domains.category_of(d) for d in uniq.tolist()]
    source = f"{table.name} of step 04, then {domains.DEFAULT_MAP.name}" if from_step_04 else domains.DEFAULT_MAP.name
    return np.asarray(cats, dtype=object)[inverse], source


def attach_domains(rows: ExportRows, tree: DataTree) -> str:
    """Fill rows.domain and rows.category; returns where the categories came from."""
    rows.domain = registered_domains(rows.url)
    rows.category, source = domain_categories(tree, rows.domain)
    return source
