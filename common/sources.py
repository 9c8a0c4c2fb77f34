"""Image-URL collections on disk: RE-LAION parquet shards, other parquet files, CSV exports.

Step 01 reads each file in bounded batches and hands on only the rows whose caption matched.

A parquet file takes one of two paths, with identical results:
- polars (when installed and every keyword has a literal "needle", see common.caption_filter):
  its reader evaluates the needle on the caption column and decodes the other columns only for
  the rows that pass, so most of the file is never decoded; RE2 then decides on those rows.
- pyarrow otherwise (or with CITY_IDENTITY_PARQUET_ENGINE=pyarrow): the caption column of each
  row group first, the other columns of that row group only when some caption in it matched;
  two row groups are read and matched at once.
A CSV file (e.g. a TCAT export, with `media_url` and `text`) is parsed in blocks of all-string
columns.
"""
from __future__ import annotations

import glob
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from common.caption_filter import CaptionMatcher
from common.cli import UserError
from common.columns import find_column

PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
BATCH_ROWS = 100_000  # rows per read (whole row groups): bounds memory whatever the file's size
READ_AHEAD = 2  # batches of one file in flight at once (pyarrow path)
POLARS_WINDOW_ROWS = 1_000_000  # rows per polars query (whole row groups)
ENGINE_VARIABLE = "CITY_IDENTITY_PARQUET_ENGINE"  # "pyarrow" switches the polars path off
CSV_BLOCK_BYTES = 16 << 20


class SourceError(Exception):
    """A file that cannot be read (corrupt, truncated, not what its name says): it is skipped."""


class Stopped(Exception):
    """Another part of the run asked this file's reader to stop (Ctrl-C or a fatal error)."""


@dataclass(frozen=True)
class SourceFile:
    index: int   # position in the sorted list of all source files: names its output part
    name: str    # recorded in each output row's `source_file`

    @property
    def is_csv(self) -> bool:
        return self.name.lower().endswith(CSV_SUFFIXES)


@dataclass
class Batch:
    scanned: int                       # rows read in this batch
    table: pa.Table | None = None      # the matching rows, source column names
    which: np.ndarray | None = None    # index of the keyword each matching row named


def prefer_jemalloc() -> str:
    """Use Arrow's jemalloc pool when it is built in and the user has not chosen one.

    Streaming allocates and frees one batch after another; on the 01 benchmark jemalloc reused
    that memory with fewer page faults than the default pool (less CPU, lower peak RSS).
    Returns the name of the pool in use.
    """
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:
            pass  # this pyarrow build has no jemalloc: keep the default
    return pa.default_memory_pool().backend_name


def is_data_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)


def expand_local(specs: list[str], exclude: Path | None = None) -> list[SourceFile]:
    """Files, folders (searched recursively) and globs -> sorted source files, stable indexes."""
    found: set[Path] = set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if is_data_file(p))
        elif path.is_file():
            found.add(path)
        elif glob.has_magic(spec):
            found.update(p for p in map(Path, glob.glob(spec, recursive=True)) if is_data_file(p))
        else:
            raise UserError(f"--source {spec}: no such file or folder")
    if exclude is not None:  # never read this step's own output back in
        found = {p for p in found if not p.resolve().is_relative_to(exclude.resolve())}
    if not found:
        raise UserError(f"no parquet or CSV files in --source {' '.join(specs)}: "
                        f"give files, folders or globs of {', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)} files")
    return [SourceFile(i, str(p)) for i, p in enumerate(sorted(found, key=str))]


def pick_columns(names: list[str], source: str, url_column: str | None,
                 caption_column: str | None) -> tuple[str, str]:
    """(url column, caption column) of a source, or a UserError that lists what it has."""
    url = find_column(names, "url", url_column)
    caption = find_column(names, "caption", caption_column)
    for found, what, flag, given in ((url, "image URL", "--url-column", url_column),
                                     (caption, "caption", "--caption-column", caption_column)):
        if found is None:
            told = f"column {given!r} is not" if given else f"no {what} column is"
            raise UserError(f"{told} in {source} (it has: {', '.join(names)}): pass {flag} NAME")
    return url, caption


def read_matches(path: Path, name: str, matcher: CaptionMatcher, url_column: str | None = None,
                 caption_column: str | None = None, stop: threading.Event | None = None,
                 batch_rows: int = BATCH_ROWS) -> Iterator[Batch]:
    """Stream a parquet or CSV file, yielding each batch's matching rows."""
    reader = _csv_batches if name.lower().endswith(CSV_SUFFIXES) else _parquet_batches
    for batch in reader(path, name, matcher, url_column, caption_column, batch_rows):
        if stop is not None and stop.is_set():
            raise Stopped(name)
        yield batch


def source_schema(path: Path, name: str) -> pa.Schema:
    """The file's columns and types as they will be read (CSV columns are read as strings)."""
    try:
        if name.lower().endswith(CSV_SUFFIXES):
            return pa.schema([(n, pa.string()) for n in _csv_names(path, name)])
        return pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SourceError(_reason(e)) from None


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"[:300]


def _row_group_runs(pf: pq.ParquetFile, batch_rows: int) -> Iterator[list[int]]:
    run, rows = [], 0
    for i in range(pf.metadata.num_row_groups):
        run.append(i)
        rows += pf.metadata.row_group(i).num_rows
        if rows >= batch_rows:
            yield run
            run, rows = [], 0
    if run:
        yield run


def _parquet_batches(path, name, matcher, url_column, caption_column, batch_rows) -> Iterator[Batch]:
    try:
        pf = pq.ParquetFile(path)
        _, caption = pick_columns(pf.schema_arrow.names, name, url_column, caption_column)
        prefilter = matcher.prefilter_regex()
        if prefilter is not None and _polars_reads_as(path, pf.schema_arrow):
            yield from _polars_batches(path, pf, caption, matcher, prefilter, batch_rows)
            return
        runs = list(_row_group_runs(pf, batch_rows))
        # READ_AHEAD batches are read and matched at once (parquet decoding, numpy and RE2 all
        # release the GIL), so both cores work even on a single file; results stay in file order
        with ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="01-read") as pool:
            pending: deque = deque()
            for groups in runs:
                pending.append(pool.submit(_read_batch, path, pf.metadata, groups, caption, matcher))
                if len(pending) >= READ_AHEAD:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    except (pa.ArrowException, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, pa.ArrowException) and e.errno is not None:
            raise  # a real I/O error (disk, permissions), not a malformed file
        raise SourceError(_reason(e)) from None


def _polars():
    """polars when installed and not switched off (CITY_IDENTITY_PARQUET_ENGINE=pyarrow), else None."""
    if os.environ.get(ENGINE_VARIABLE, "").lower() == "pyarrow":
        return None
    try:
        import polars
    except ImportError:
        return None
    return polars if hasattr(polars.LazyFrame, "collect_batches") else None  # streaming batches: polars >= 1.3x


def _polars_reads_as(path, schema: pa.Schema) -> bool:
    """Whether polars is usable here and its columns convert back to the file's own types."""
    pl = _polars()
    if pl is None:
        return False
    try:
        empty = pl.scan_parquet(path).head(0).collect().to_arrow()
        empty.cast(schema)
    except (pa.ArrowException, pl.exceptions.PolarsError, ValueError, TypeError):
        return False  # an unusual type: the pyarrow path reads it as it is
    return True


def _polars_batches(path, pf, caption: str, matcher: CaptionMatcher, prefilter: str,
                    batch_rows: int) -> Iterator[Batch]:
    """polars' parquet reader evaluates the needle pre-filter on the caption column and decodes
    the other columns only for the rows that pass (late materialisation: most of a file is never
    decoded); RE2 then decides on those few rows, exactly as on the pyarrow path.

    The file is queried one window of whole row groups at a time, so memory is bounded by a
    window's candidates whatever the file's size (one streaming query over the whole file would
    queue candidates faster than they are written).
    """
    pl = _polars()
    schema, start = pf.schema_arrow, 0
    try:
        for groups in _row_group_runs(pf, POLARS_WINDOW_ROWS):
            n = sum(pf.metadata.row_group(g).num_rows for g in groups)
            window = pl.scan_parquet(path).slice(start, n).filter(pl.col(caption).str.contains(prefilter))
            table = window.collect().to_arrow().cast(schema)
            start += n
            rows, which = matcher.match(table[caption])
            yield Batch(n, table.take(pa.array(rows)), which) if len(rows) else Batch(n)
    except pl.exceptions.PolarsError as e:
        raise SourceError(_reason(e)) from None


def _read_batch(path, metadata, groups: list[int], caption: str, matcher: CaptionMatcher) -> Batch:
    pf = pq.ParquetFile(path, metadata=metadata)  # one reader per thread: readers are not shared
    captions = pf.read_row_groups(groups, columns=[caption], use_threads=True)[caption]
    rows, which = matcher.match(captions)
    if len(rows) == 0:
        return Batch(len(captions))
    names = pf.schema_arrow.names
    others = [n for n in names if n != caption]
    rest = pf.read_row_groups(groups, columns=others, use_threads=True) if others else None
    return Batch(len(captions), _assemble(names, caption, captions, rest).take(pa.array(rows)), which)


def _assemble(names, caption, captions, rest) -> pa.Table:
    columns = {caption: captions}
    if rest is not None:
        columns.update({n: rest[n] for n in rest.column_names})
    return pa.table({n: columns[n] for n in names})


def _csv_options(path: Path, name: str, names: list[str] | None = None):
    tab = name.lower().endswith((".tsv", ".tsv.gz"))
    parse = pv.ParseOptions(delimiter="\t" if tab else ",", newlines_in_values=True)
    read = pv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    convert = pv.ConvertOptions(column_types={n: pa.string() for n in names or ()}, strings_can_be_null=True)
    return read, parse, convert


def _csv_names(path: Path, name: str) -> list[str]:
    read, parse, convert = _csv_options(path, name)
    with pv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
        return reader.schema.names


def _csv_batches(path, name, matcher, url_column, caption_column, batch_rows) -> Iterator[Batch]:
    try:
        names = _csv_names(path, name)
        _, caption = pick_columns(names, name, url_column, caption_column)
        read, parse, convert = _csv_options(path, name, names)
        with pv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
            for block in reader:
                rows, which = matcher.match(block.column(caption))
                table = pa.Table.from_batches([block]).take(pa.array(rows)) if len(rows) else None
                yield Batch(block.num_rows, table, which if len(rows) else None)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        if isinstance(e, OSError) and not isinstance(e, pa.ArrowException) and e.errno is not None:
            raise
        raise SourceError(_reason(e)) from None
