"""JSON Lines collections (.jsonl, .ndjson, gzipped or not): one JSON object per line.

What pandas (`to_json(orient="records", lines=True)`), DuckDB, jq and many scrapers write. A
file's columns are the keys of the objects in its first SCAN_LINES lines, in the order first
seen; `--url-column` and `--caption-column` may also name a field inside nested objects with a
dot path (`media.url`, `data.caption.text`). Every value is read as text, as common.cells reads
a parquet column: a string as it is, a number, boolean, list or object as its JSON (so a list of
URLs, or of media objects, is split into one row per picture by `--url-separator auto`), except
in the caption column, where a list or object gives its words.

A line that is not a JSON object (broken JSON, a bare value) is skipped and counted, like a CSV
line with the wrong number of fields; the rest of the file is read. Keys first seen after the
scanned lines are not columns.
"""
from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from common.cells import json_text, words_text

SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
SCAN_LINES = 1000  # lines whose keys name a file's columns
_SURROGATE = re.compile("[\ud800-\udfff]")  # left by a lone \ud800 escape (json pairs the others)


class BadFile(Exception):
    """The file has no JSON object to read columns from, or cannot be read at all."""


def _lines(path: Path, name: str) -> Iterator[bytes]:
    opener = gzip.open if name.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def _record(line: bytes):
    """The line's object; None for a blank line; ValueError for one that is not an object."""
    text = line.decode("utf-8", "replace").lstrip("\ufeff").strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except RecursionError:  # nested deeper than Python's stack: unreadable, like broken JSON
        raise ValueError("nested too deeply") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    return record


def _dig(record: dict, path: str):
    """The value at a dot path inside nested objects, or None."""
    value = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _get(record: dict, column: str):
    if column in record:
        return record[column]
    return _dig(record, column) if "." in column else None


def column_names(path: Path, name: str, wanted: tuple[str | None, ...] = ()) -> list[str]:
    """The keys of the first SCAN_LINES objects, then each `wanted` dot path that some of them hold."""
    names: dict[str, None] = {}
    paths = [w for w in wanted if w and "." in w]
    found: set[str] = set()
    seen = 0
    for line in _lines(path, name):
        try:
            record = _record(line)
        except ValueError:
            continue
        if record is None:
            continue
        names.update(dict.fromkeys(map(str, record)))
        found.update(p for p in paths if p not in found and _dig(record, p) is not None)
        seen += 1
        if seen >= SCAN_LINES:
            break
    if not names:
        raise BadFile("no JSON object on any line (JSON Lines holds one object per line; a file that is "
                      "one JSON array is not JSON Lines)")
    names.update(dict.fromkeys(p for p in paths if p in found and p not in names))
    return list(names)


def _text(value, caption: bool) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return words_text(value) if caption and isinstance(value, (list, dict)) else json_text(value)


def _column(values: list) -> pa.Array:
    try:
        return pa.array(values, pa.string())
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape: replaced, as bad UTF-8 is
        return pa.array([None if v is None else _SURROGATE.sub("\ufffd", v) for v in values], pa.string())


def tables(path: Path, name: str, names: list[str], caption: str,
           batch_rows: int) -> Iterator[tuple[pa.Table, int]]:
    """(a table of up to batch_rows rows of all-string columns, lines skipped since the last one)."""
    columns: dict[str, list] = {n: [] for n in names}
    rows = skipped = 0
    for line in _lines(path, name):
        try:
            record = _record(line)
        except ValueError:
            skipped += 1
            continue
        if record is None:
            continue
        for n in names:
            columns[n].append(_text(_get(record, n), n == caption))
        rows += 1
        if rows == batch_rows:
            yield pa.table({n: _column(v) for n, v in columns.items()}), skipped
            columns, rows, skipped = {n: [] for n in names}, 0, 0
    if rows or skipped:
        yield pa.table({n: _column(v) for n, v in columns.items()}), skipped
