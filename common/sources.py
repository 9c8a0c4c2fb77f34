"""Image-URL collections on disk: RE-LAION parquet shards, other parquet files, CSV and JSON Lines exports.

Step 01 reads each file in bounded batches and hands on only the rows whose caption matched.
(Most parquet files go through common.polars_parts instead, which writes the part in one polars
query; this module is the path for everything else, with identical results.)

A parquet file is read a run of row groups at a time: the caption column first, the other
columns of those row groups only when some caption in them matched; two runs are read and
matched at once. A CSV file (e.g. a TCAT export, with `media_url` and `text`) is parsed in
blocks of all-string columns, and so is a JSON Lines file (common/jsonl.py).
"""
from __future__ import annotations

import glob
import gzip
import os
import re
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

from common import jsonl
from common.caption_filter import CaptionMatcher
from common.cli import UserError
from common.columns import find_column

PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
JSONL_SUFFIXES = jsonl.SUFFIXES
TEXT_SUFFIXES = CSV_SUFFIXES + JSONL_SUFFIXES  # read as all-string columns, never by polars
DATA_SUFFIXES = PARQUET_SUFFIXES + TEXT_SUFFIXES
BATCH_ROWS = 100_000  # rows per read (whole row groups): bounds memory whatever the file's size
READ_AHEAD = 2  # batches of one file in flight at once (pyarrow path)
CSV_BLOCK_BYTES = 16 << 20


class SourceError(Exception):
    """A file that cannot be read (corrupt, truncated, not what its name says): it is skipped."""


class Stopped(Exception):
    """Another part of the run asked this file's reader to stop (Ctrl-C or a fatal error)."""


@dataclass(frozen=True)
class SourceFile:
    index: int   # the output part's number (see common.metadata_parts.part_number)
    name: str    # recorded in each output row's `source_file`
    repo: str | None = None    # the Hub dataset repo the file is downloaded from; None = a local file
    subset: str | None = None  # the RE-LAION-5B subset it belongs to, recorded in each row's `subset`

    @property
    def is_text(self) -> bool:
        """CSV or JSON Lines: columns read as text."""
        return self.name.lower().endswith(TEXT_SUFFIXES)


@dataclass
class Batch:
    scanned: int                       # rows read in this batch
    table: pa.Table | None = None      # the matching rows, source column names
    which: np.ndarray | None = None    # index of the keyword each matching row named
    malformed: int = 0                 # CSV lines skipped since the last batch (wrong number of fields)


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
    return path.is_file() and path.name.lower().endswith(DATA_SUFFIXES)


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
        raise UserError(f"no parquet, CSV or JSON Lines files in --source {' '.join(specs)}: "
                        f"give files, folders or globs of {', '.join(DATA_SUFFIXES)} files")
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
    """Stream a parquet, CSV or JSON Lines file, yielding each batch's matching rows."""
    lower = name.lower()
    reader = _csv_batches if lower.endswith(CSV_SUFFIXES) else \
        _jsonl_batches if lower.endswith(JSONL_SUFFIXES) else _parquet_batches
    for batch in reader(path, name, matcher, url_column, caption_column, batch_rows):
        if stop is not None and stop.is_set():
            raise Stopped(name)
        yield batch


def source_schema(path: Path, name: str, wanted: tuple[str | None, ...] = ()) -> pa.Schema:
    """The file's columns and types as they will be read (CSV and JSON Lines columns are read as
    strings; `wanted`: the --url-column and --caption-column, which in JSON Lines may be dot paths)."""
    lower = name.lower()
    try:
        if lower.endswith(CSV_SUFFIXES):
            return pa.schema([(n, pa.string()) for n in _csv_names(path, name)])
        if lower.endswith(JSONL_SUFFIXES):
            return pa.schema([(n, pa.string()) for n in jsonl.column_names(path, name, wanted)])
        return pq.read_schema(path)
    except jsonl.BadFile as e:
        raise SourceError(str(e)) from None
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        raise SourceError(_reason(e) if lower.endswith(TEXT_SUFFIXES) else _not_parquet(name) or _reason(e)) \
            from None


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
        raise SourceError(_not_parquet(name) or _reason(e)) from None


def _not_parquet(name: str) -> str | None:
    """What to say of a file read as parquet whose name says it is something else."""
    if name.lower().endswith(PARQUET_SUFFIXES):
        return None
    return (f"not a parquet file: step 01 reads {', '.join(DATA_SUFFIXES)} files "
            "(save a spreadsheet as CSV, a JSON export as JSON Lines or CSV)")


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


def _csv_options(path: Path, name: str, names: list[str] | None = None, malformed: list | None = None):
    """Reader options; a line with the wrong number of fields is skipped and appended to `malformed`
    (one broken line must not cost the file), and text is not checked for UTF-8 here: the rows
    kept are repaired by common.cells.valid_text."""
    def skip(row) -> str:
        malformed.append(row.number)
        return "skip"

    parse = pv.ParseOptions(delimiter=_delimiter(path, name), newlines_in_values=True,
                            invalid_row_handler=skip if malformed is not None else None)
    read = pv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    convert = pv.ConvertOptions(column_types={n: pa.string() for n in names or ()}, strings_can_be_null=True,
                                check_utf8=False)
    return read, parse, convert


def _first_line(path: Path, name: str) -> bytes:
    opener = gzip.open if name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.readline(1 << 16)
    except (OSError, EOFError) as e:
        raise SourceError(_reason(e)) from None


def _delimiter(path: Path, name: str) -> str:
    """Tab for .tsv; for .csv a comma, or the `;` (a spreadsheet's export where the comma is the
    decimal mark), tab or `|` that the header line uses instead."""
    if name.lower().endswith((".tsv", ".tsv.gz")):
        return "\t"
    head = _first_line(path, name)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SourceError("the file is UTF-16 text (a spreadsheet's \"Unicode text\"): save it as CSV in UTF-8")
    header = re.sub(rb'"[^"]*"', b"", head)  # separators inside quoted names do not count
    if b"," in header:
        return ","
    counts = {sep: header.count(sep.encode()) for sep in (";", "\t", "|")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _csv_names(path: Path, name: str) -> list[str]:
    read, parse, convert = _csv_options(path, name, malformed=[])  # lines are counted when the file is read
    with pv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
        return reader.schema.names


def _jsonl_batches(path, name, matcher, url_column, caption_column, batch_rows) -> Iterator[Batch]:
    try:
        names = jsonl.column_names(path, name, (url_column, caption_column))
        _, caption = pick_columns(names, name, url_column, caption_column)
        for table, skipped in jsonl.tables(path, name, names, caption, batch_rows):
            rows, which = matcher.match(table.column(caption))
            yield Batch(table.num_rows, table.take(pa.array(rows)) if len(rows) else None,
                        which if len(rows) else None, skipped)
    except jsonl.BadFile as e:
        raise SourceError(str(e)) from None
    except (OSError, EOFError) as e:  # a truncated gzip, a file that vanished
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise SourceError(_reason(e)) from None


def _csv_batches(path, name, matcher, url_column, caption_column, batch_rows) -> Iterator[Batch]:
    try:
        names = _csv_names(path, name)
        _, caption = pick_columns(names, name, url_column, caption_column)
        malformed: list = []
        read, parse, convert = _csv_options(path, name, names, malformed)
        with pv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as reader:
            for block in reader:
                rows, which = matcher.match(block.column(caption))
                table = pa.Table.from_batches([block]).take(pa.array(rows)) if len(rows) else None
                skipped, malformed[:] = len(malformed), []
                yield Batch(block.num_rows, table, which if len(rows) else None, skipped)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        if isinstance(e, OSError) and not isinstance(e, pa.ArrowException) and e.errno is not None:
            raise
        raise SourceError(_reason(e)) from None
