"""Step 01's fast path: one polars streaming query per parquet file, from source file to part.

polars' parquet reader searches the caption column first and decodes the other columns only for
the rows that pass (late materialisation), and the same query streams the matching rows into the
part, so most of a file is never decoded, memory stays bounded whatever the file's size, and
reading, matching and writing overlap on every core.

Matching runs in two stages, as on the pyarrow path: a literal search for the keywords while the
file is read, then the exact patterns of common.match on the rows it lets through. Rust's regex
engine (polars) reads the word-mode and substring-mode patterns exactly as RE2 (the pyarrow
path) does; `--match regex` keeps to the pyarrow path, where a pattern means what RE2 says.

Everything else the part needs is added in the query: the output column names, `id` (a small
Python function over each batch of matched URLs, which also counts the rows per keyword and the
rows without a URL), `source_file` and `matched_keyword`. The counts go into the part's footer
through the writer's metadata callback, which polars calls once the last row is written; the
footer is checked against the written rows afterwards, and a file whose footer does not add up
is redone on the pyarrow path.
"""
from __future__ import annotations

import inspect
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from common.caption_filter import CaptionMatcher
from common.columns import row_ids
from common.files import atomic_path
from common.metadata_parts import INFO_KEY, read_part_info
from common.sources import Stopped
from common.url_lists import split_cell

ENGINE_VARIABLE = "CITY_IDENTITY_PARQUET_ENGINE"  # "pyarrow" switches this path off
_KEYWORD = "__matched_keyword"  # working column names, never written
_ID = "__id"
_POST, _INDEX = "__post_id", "__image_index"


class _Fallback(Exception):
    """This file is for the pyarrow path after all."""


def polars():
    """polars when installed, recent enough and not switched off, else None."""
    if os.environ.get(ENGINE_VARIABLE, "").lower() == "pyarrow":
        return None
    try:
        import polars as pl
    except ImportError:
        return None
    needed = {"metadata", "arrow_schema"}  # the footer callback and exact output types (polars >= 1.3x)
    return pl if needed <= set(inspect.signature(pl.LazyFrame.sink_parquet).parameters) else None


def usable(path: Path, matcher: CaptionMatcher, out_schema: pa.Schema, renames: dict[str, str]) -> bool:
    """Whether this file can take the polars path: word or substring matching, and columns whose
    types polars reads back as the part's own (an unusual type keeps to the pyarrow path)."""
    pl = polars()
    if pl is None or matcher.mode == "regex":
        return False
    try:
        read = pl.scan_parquet(path).head(0).collect().to_arrow().schema
    except (pl.exceptions.PolarsError, OSError, ValueError):
        return False  # unreadable: the pyarrow path reports why
    as_written = {renames.get(f.name, f.name): f.type for f in read}
    return all(as_written[f.name] == f.type for f in out_schema if f.name in as_written)


def write_part(path: Path, source_name: str, part: Path, matcher: CaptionMatcher, caption: str, url: str,
               renames: dict[str, str], out_schema: pa.Schema, info: Callable[[dict], dict],
               stop: threading.Event | None = None, subset: str | None = None,
               url_separator: str | None = None) -> dict | None:
    """Filter `path` into `part` in one streaming query; the counts, or None when polars could
    not do it (a file it cannot read, a footer that does not match the rows): the caller then
    redoes the file on the pyarrow path, which reads what polars cannot or says why the file is
    unreadable.

    `info(counts)` turns the counts into the dict recorded in the part's footer; counts are
    rows_scanned, matched (per keyword), no_url and rows_written. `subset`, when given, fills the
    `subset` column. With a `url_separator`, each picture of a many-picture cell gets its own row
    (common.url_lists), as on the pyarrow path.
    """
    pl = polars()
    keywords = matcher.keywords
    counts = {"rows_scanned": pq.read_metadata(path).num_rows, "matched": Counter({k: 0 for k in keywords}),
              "no_url": 0, "rows_written": 0}
    lock = threading.Lock()

    def ids(batch):
        """`id` for a batch of matched rows (null where there is no URL), counting as it goes."""
        if stop is not None and stop.is_set():
            raise Stopped(source_name)
        found = batch.struct.field(_KEYWORD).value_counts()
        out = row_ids(batch.struct.field(url).to_list())
        with lock:
            for keyword, n in found.iter_rows():
                counts["matched"][keyword] += n
            missing = out.count(None)
            counts["no_url"] += missing
            counts["rows_written"] += len(out) - missing
        return pl.Series(out, dtype=pl.String)

    def footer(_context) -> dict[str, str]:
        """Called by polars once every row is written."""
        with lock:
            return {INFO_KEY.decode(): json.dumps(info(_snapshot(counts)), ensure_ascii=False)}

    def posts(batch):
        """The image URLs of each matched row (null where there is none), counting rows as it goes."""
        if stop is not None and stop.is_set():
            raise Stopped(source_name)
        found = batch.struct.field(_KEYWORD).value_counts()
        pieces = [split_cell(c, url_separator) or None for c in batch.struct.field(url).to_list()]
        with lock:
            for keyword, n in found.iter_rows():
                counts["matched"][keyword] += n
            counts["no_url"] += pieces.count(None)
        return pl.Series(pieces, dtype=pl.List(pl.String))

    def image_ids(urls):
        out = row_ids(urls.to_list())
        with lock:
            counts["rows_written"] += len(out)
        return pl.Series(out, dtype=pl.String)

    col = pl.col(caption)
    which = pl.when(col.str.contains(matcher.patterns[0].re2)).then(pl.lit(keywords[0]))
    for p in matcher.patterns[1:]:  # the first keyword, in the order given, that the caption names
        which = which.when(col.str.contains(p.re2)).then(pl.lit(p.keyword))
    query = (pl.scan_parquet(path)
             # the reader runs the fast literal search and decodes other columns only where it hits;
             # the exact patterns then run on those few rows (a column computed after the scan, so
             # the optimiser does not fold them into the reader's predicate, which would run them on every row)
             .filter(col.str.contains(matcher.literal_re()))
             .with_columns(which.alias(_KEYWORD))
             .filter(pl.col(_KEYWORD).is_not_null()))
    if url_separator is None:
        # an empty URL is no URL (when/then streams; `replace` would hold the whole column)
        query = (query.with_columns(pl.struct(pl.when(pl.col(url) != "").then(pl.col(url)), _KEYWORD)
                                    .map_batches(ids, return_dtype=pl.String, is_elementwise=True).alias(_ID))
                 .filter(pl.col(_ID).is_not_null()))
        added = []
    else:
        query = _one_row_per_image(pl, query, url, posts, image_ids)
        added = [pl.col(_POST).alias("post_id"), pl.col(_INDEX).alias("image_index")]
    query = (query.rename(renames)
             .select(pl.exclude(_ID, _KEYWORD, _POST, _INDEX), pl.col(_ID).alias("id"),
                     pl.lit(source_name, pl.String).alias("source_file"),
                     *([pl.lit(subset, pl.String).alias("subset")] if subset is not None else []),
                     pl.col(_KEYWORD).alias("matched_keyword"), *added))
    try:
        with atomic_path(part) as tmp:
            try:
                query.sink_parquet(tmp, compression="zstd", metadata=footer, arrow_schema=out_schema)
            except pl.exceptions.PolarsError as e:  # a file polars cannot read, a full disk: the pyarrow
                raise _Fallback(str(e)) from None       # path reads it, or says why in one line
            recorded = read_part_info(tmp) or {}
            if recorded.get("rows_written") != pq.read_metadata(tmp).num_rows or recorded != info(_snapshot(counts)):
                raise _Fallback("the footer does not match the rows written")
    except _Fallback:
        return None  # atomic_path has removed the half-made part
    return _snapshot(counts)


def _one_row_per_image(pl, query, url: str, posts, image_ids):
    """Split each URL cell into its pictures (post_id: hash of the cell; image_index: place in it)."""
    pieces = "__pieces"
    return (query
            .with_columns(pl.struct(url, _KEYWORD).map_batches(posts, return_dtype=pl.List(pl.String),
                                                               is_elementwise=True).alias(pieces),
                          pl.col(url).map_batches(lambda s: pl.Series(row_ids(s.to_list()), dtype=pl.String),
                                                  return_dtype=pl.String, is_elementwise=True).alias(_POST))
            .filter(pl.col(pieces).is_not_null())
            .with_columns(pl.int_ranges(0, pl.col(pieces).list.len(), dtype=pl.Int64).alias(_INDEX))
            .explode([pieces, _INDEX])
            .with_columns(pl.col(pieces).alias(url),
                          pl.col(pieces).map_batches(image_ids, return_dtype=pl.String, is_elementwise=True).alias(_ID))
            .drop(pieces))


def _snapshot(counts: dict) -> dict:
    return {**counts, "matched": dict(counts["matched"])}
