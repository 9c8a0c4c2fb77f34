"""Step 01's output parts: one `part-NNNNN.parquet` per source file, each describing itself.

A part holds the source's matching rows under internal column names plus `id` (stable hash of
the URL), `source_file`, `subset` (the RE-LAION-5B subset, when the rows come from one) and
`matched_keyword`. Its parquet footer records how it was made (the keywords, match mode, source
file, repo and subset) and what was counted (rows scanned, matches per keyword, rows without a
URL, bytes downloaded), so a re-run can tell a finished file from one made with other settings,
and `_stats.json` can be rebuilt from the parts alone after any interruption.

Part numbers: each RE-LAION-5B subset owns a block of `SUBSET_BLOCK` numbers (multi from 0, en
from 10000, nolang from 20000) and a file's number is its block's start plus its place in the
subset's sorted file list. Subsets added to a tree later never collide with the parts already
there, and the same file always lands in the same part. Files not from a subset (--source) are
numbered from 0 in their sorted order.
"""
from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.cells import readable
from common.cli import UserError
from common.columns import ALIASES, LATER_COLUMNS, RELAION_SUBSETS, compose, find_column, row_ids, variant_renames
from common.files import atomic_path, list_parts
from common.url_lists import POST_COLUMNS, explode

INFO_KEY = b"city_identity_explorer.step01"
ADDED_COLUMNS = ("id", "source_file", "subset", "matched_keyword", *POST_COLUMNS)
SUBSET_BLOCK = 10_000  # part numbers per RE-LAION-5B subset (each has 128 files)


def part_number(index: int, subset: str | None) -> int:
    """The part a source file fills: its place in the sorted list, in its subset's block."""
    if subset is None:
        return index
    if index >= SUBSET_BLOCK:
        raise UserError(f"the {subset} subset lists more than {SUBSET_BLOCK:,} parquet files: "
                        "read it in several --data-dir trees, or without --subset (--source)")
    return RELAION_SUBSETS.index(subset) * SUBSET_BLOCK + index


def rename_for_output(names: list[str], url_column: str | None, caption_column: str | None) -> dict[str, str]:
    """source name -> output name: a known layout's columns (RE-LAION's download run) get their
    names here, the known columns get internal names, and clashes get `source_`."""
    variant = variant_renames(names)
    renamed = [variant.get(n, n) for n in names]
    overrides = {"url": url_column, "caption": caption_column}
    chosen = {internal: find_column(renamed, internal, overrides.get(internal)) for internal in ALIASES}
    out = {}
    for n in renamed:
        # a column that means something else under a name we need (TCAT's tweet `id`, a page
        # `url` next to the chosen `media_url`, a `status` step 05 would overwrite) keeps its data
        # under a prefixed name
        if n in ADDED_COLUMNS + LATER_COLUMNS or chosen.get(n) not in (None, n):
            out[n] = f"source_{n}"
    out.update({src: internal for internal, src in chosen.items() if src is not None and src != internal})
    return compose(names, variant, out)


def output_table(matched: pa.Table, which: np.ndarray, keywords: list[str], source_name: str,
                 renames: dict[str, str], subset: str | None = None,
                 url_separator: str | None = None) -> tuple[pa.Table, int]:
    """(rows to write, rows dropped for having no URL): renamed, with id, source_file, subset (when
    the file is from one) and matched_keyword (and, with a `url_separator`, one row per image with
    post_id/image_index: common.url_lists)."""
    table = readable(matched.rename_columns([renames.get(n, n) for n in matched.column_names]))
    post_columns = {}
    if url_separator is not None:
        table, which, dropped, post_columns = explode(table, which, url_separator)
    else:
        url = table["url"]
        has_url = pc.fill_null(pc.and_(pc.is_valid(url), pc.not_equal(url, "")), False)
        dropped = len(table) - pc.sum(has_url).as_py() if len(table) else 0
        if dropped:
            table, which = table.filter(has_url), np.asarray(which)[has_url.to_numpy(zero_copy_only=False)]
    urls = table["url"].cast(pa.string()).to_pylist()
    table = table.append_column("id", pa.array(row_ids(urls), pa.string()))
    table = table.append_column("source_file", pa.array([source_name] * len(table), pa.string()))
    if subset is not None:
        table = table.append_column("subset", pa.array([subset] * len(table), pa.string()))
    table = table.append_column("matched_keyword", pa.array(keywords, pa.string()).take(pa.array(which, pa.int32())))
    for name, column in post_columns.items():
        table = table.append_column(name, column)
    return table, dropped


def output_schema(source: pa.Schema, renames: dict[str, str], subset: str | None = None,
                  url_separator: str | None = None) -> pa.Schema:
    """The part's columns; text is large_string, as polars writes it, so every part has one schema."""
    empty = source.empty_table()
    table, _ = output_table(empty, np.empty(0, np.int32), [""], "", renames, subset, url_separator)
    return pa.schema([f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema],
                     metadata=table.schema.metadata)


class PartWriter:
    """Streams one part to `<part>.tmp`; `finish(info)` records the info and renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = Path(path), schema
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            with self._naming_os_errors():
                self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)  # removes the temporary file
            raise
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if len(table):
            with self._naming_os_errors():
                self._writer.write_table(table.cast(self.schema))
            self.rows += len(table)

    def finish(self, info: dict) -> None:
        self._writer.add_key_value_metadata({INFO_KEY: json.dumps(info, ensure_ascii=False)})
        with self._naming_os_errors():
            self._writer.close()
        self._ctx.__exit__(None, None, None)

    @contextmanager
    def _naming_os_errors(self):
        """Arrow's I/O errors carry an errno but no file name: add the part's, for the one-line message."""
        try:
            yield
        except OSError as e:
            if e.errno is None or e.filename:
                raise
            raise OSError(e.errno, e.strerror or str(e), self._tmp.name) from None

    def abandon(self) -> None:
        """Drop the half-written part (the source will be redone on the next run)."""
        try:
            self._writer.close()
        finally:
            self._ctx.__exit__(RuntimeError, RuntimeError("abandoned"), None)


def read_part_info(path: Path) -> dict | None:
    """What a finished part records about itself, or None for a part without it."""
    meta = pq.read_metadata(path).metadata or {}
    raw = meta.get(INFO_KEY)
    return json.loads(raw) if raw else None


COUNTED = ("rows_scanned", "rows_written", "no_url", "malformed_rows", "bytes_downloaded")


def sum_parts(folder: Path, signature: dict, keywords: list[str]) -> dict:
    """Counts over every finished part made with these settings (this run's and earlier runs'),
    in total and, for parts from a RE-LAION-5B subset, per subset (`per_subset`)."""
    t = _zero(keywords)
    per_subset: dict[str, dict] = {}
    for part in list_parts(folder):
        info = read_part_info(part) or {}
        if info.get("signature") != signature:
            continue
        targets = [t]
        if info.get("subset"):
            targets.append(per_subset.setdefault(info["subset"], _zero(keywords)))
        for target in targets:
            target["files_done"] += 1
            for key in COUNTED:
                target[key] += info.get(key, 0)
            target["matched_per_keyword"].update(info.get("matched", {}))
    for target in [t, *per_subset.values()]:
        target["matched_per_keyword"] = dict(target["matched_per_keyword"])
    t["per_subset"] = {s: per_subset[s] for s in sorted(per_subset, key=_subset_order)}
    return t


def _zero(keywords: list[str]) -> dict:
    return {"files_done": 0, **{key: 0 for key in COUNTED}, "matched_per_keyword": Counter({k: 0 for k in keywords})}


def _subset_order(subset: str) -> tuple[int, str]:
    return (RELAION_SUBSETS.index(subset) if subset in RELAION_SUBSETS else len(RELAION_SUBSETS), subset)
