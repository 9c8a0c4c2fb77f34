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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.cli import UserError
from common.columns import normalize, row_ids
from common.paths import DataTree, is_row_id

COORD_DECIMALS = 6
OTHER_CATEGORY = "other"
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
    _, first = np.unique(ids.astype(str), return_index=True)
    unique = np.zeros(n, bool)
    unique[first] = True
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


def _hosts(urls: np.ndarray) -> np.ndarray:
    """Lower-cased host of each URL ('' when there is none), without a per-row Python parse."""
    arr = pa.array(urls.tolist(), pa.string())
    host = pc.extract_regex(pc.utf8_lower(arr), r"^[a-z][a-z0-9+.\-]*://(?:[^/?#@]*@)?(?P<h>\[[^\]]*\]|[^/?#:]*)")
    return np.asarray(pc.fill_null(pc.struct_field(host, "h"), "").to_pylist(), dtype=object)


def registered_domains(urls: np.ndarray) -> np.ndarray:
    """Registered domain of each URL (bbc.co.uk for img.news.bbc.co.uk), from the bundled suffix list.

    Step 04's domain function is used when the project has one; otherwise tldextract runs offline
    (its bundled public suffix list, never a download), once per distinct host.
    """
    import tldextract

    hosts = _hosts(urls)
    uniq, inverse = np.unique(hosts.astype(str), return_inverse=True)
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    names = []
    for host in uniq.tolist():
        parts = extract(host) if host else None
        names.append((parts.top_domain_under_public_suffix or host) if parts else "")
    return np.asarray(names, dtype=object)[inverse]


def attach_domains(rows: ExportRows) -> str:
    """Fill rows.domain and rows.category; returns where the categories came from."""
    rows.domain = registered_domains(rows.url)
    rows.category = np.full(len(rows), OTHER_CATEGORY, dtype=object)
    return "none (every domain is 'other')"
