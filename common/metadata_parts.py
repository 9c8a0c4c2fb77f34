"""Step 01's output parts: one `part-NNNNN.parquet` per source file, each describing itself.

A part holds the source's matching rows under internal column names plus `id` (stable hash of
the URL), `source_file` and `matched_keyword`. Its parquet footer records how it was made (the
keywords, match mode and source file) and what was counted (rows scanned, matches per keyword,
rows without a URL, bytes downloaded), so a re-run can tell a finished file from one made with
other settings, and `_stats.json` can be rebuilt from the parts alone after any interruption.
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

from common.columns import ALIASES, find_column, row_ids
from common.files import atomic_path, list_parts
from common.url_lists import POST_COLUMNS, explode

INFO_KEY = b"city_identity_explorer.step01"
ADDED_COLUMNS = ("id", "source_file", "matched_keyword", *POST_COLUMNS)


def rename_for_output(names: list[str], url_column: str | None, caption_column: str | None) -> dict[str, str]:
    """source name -> output name: the known columns get internal names; clashes get `source_`."""
    overrides = {"url": url_column, "caption": caption_column}
    chosen = {internal: find_column(names, internal, overrides.get(internal)) for internal in ALIASES}
    out = {}
    for n in names:
        # a column that means something else under a name we need (TCAT's tweet `id`, a page
        # `url` next to the chosen `media_url`) keeps its data under a prefixed name
        if n in ADDED_COLUMNS or chosen.get(n) not in (None, n):
            out[n] = f"source_{n}"
    out.update({src: internal for internal, src in chosen.items() if src is not None and src != internal})
    return out


def output_table(matched: pa.Table, which: np.ndarray, keywords: list[str], source_name: str,
                 renames: dict[str, str], url_separator: str | None = None) -> tuple[pa.Table, int]:
    """(rows to write, rows dropped for having no URL): renamed, with id/source_file/matched_keyword
    (and, with a `url_separator`, one row per image with post_id/image_index: common.url_lists)."""
    table = matched.rename_columns([renames.get(n, n) for n in matched.column_names])
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
    table = table.append_column("matched_keyword", pa.array(keywords, pa.string()).take(pa.array(which, pa.int32())))
    for name, column in post_columns.items():
        table = table.append_column(name, column)
    return table, dropped


def output_schema(source: pa.Schema, renames: dict[str, str], url_separator: str | None = None) -> pa.Schema:
    """The part's columns; text is large_string, as polars writes it, so every part has one schema."""
    empty = source.empty_table()
    table, _ = output_table(empty, np.empty(0, np.int32), [""], "", renames, url_separator)
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


def sum_parts(folder: Path, signature: dict, keywords: list[str]) -> dict:
    """Counts over every finished part made with these settings (this run's and earlier runs')."""
    t = {"files_done": 0, "rows_scanned": 0, "rows_written": 0, "no_url": 0, "bytes_downloaded": 0}
    matched = Counter({k: 0 for k in keywords})
    for part in list_parts(folder):
        info = read_part_info(part) or {}
        if info.get("signature") != signature:
            continue
        t["files_done"] += 1
        for key in ("rows_scanned", "rows_written", "no_url", "bytes_downloaded"):
            t[key] += info.get(key, 0)
        matched.update(info.get("matched", {}))
    t["matched_per_keyword"] = dict(matched)
    return t
