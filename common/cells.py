"""Source columns that are not plain text, as text: what a researcher's URL and caption columns hold.

RE-LAION's rows hold one URL and one caption as strings. A collection a researcher brings may not:
a parquet written from pandas or polars may hold a post's pictures as a list column (or a list of
media objects, `[{"url": ..., "type": "photo"}]`), URLs as bytes with a stray non-UTF-8 byte,
captions as bytes, lists of words, or numbers. Step 01 reads each of these as text here, so that
no such column stops a run:

    string                    as it is
    binary                    its bytes as text (valid_text, below, repairs bytes
                              that are not UTF-8: percent-encoded in a URL, U+FFFD in a caption)
    list, struct, map         URL column: JSON text, which common.url_lists splits into one row
                              per picture; caption column: its text pieces joined by spaces
    dictionary                its values, read as above
    null                      empty
    anything else             its usual text form (a number in a URL column is then a bad URL,
                              which step 05 reports for that row)
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

TEXT = pa.large_string()


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_nested(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
            or pa.types.is_struct(t) or pa.types.is_map(t))


def as_text(column: pa.Array | pa.ChunkedArray, caption: bool = False) -> pa.Array | pa.ChunkedArray:
    """The column as text (large_string unless it already is text); `caption`: nested values are
    joined as words, else written as JSON."""
    t = column.type
    if is_text(t):
        return column
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([_large(as_text(c, caption)) for c in column.chunks], TEXT)
    if pa.types.is_dictionary(t):
        return as_text(column.dictionary_decode(), caption)
    if pa.types.is_null(t):
        return pa.nulls(len(column), TEXT)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return column.cast(pa.large_binary()).view(TEXT)  # not checked here: valid_text repairs it
    if is_nested(t):
        write = words_text if caption else json_text
        return pa.array([None if v is None else write(v) for v in column.to_pylist()], TEXT)
    try:
        return pc.cast(column, TEXT)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], TEXT)


def _large(text: pa.Array) -> pa.Array:
    return text if text.type == TEXT else text.cast(TEXT)


def json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def words_text(value) -> str:
    """The text pieces of a nested value, in order, joined by spaces (keys of a map or struct left out)."""
    if isinstance(value, dict):
        value = list(value.values())
    elif isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        value = [v for _, v in value]  # a map arrives as (key, value) pairs
    if isinstance(value, (list, tuple)):
        return " ".join(w for w in (words_text(v) for v in value if v is not None) if w)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def readable(table: pa.Table) -> pa.Table:
    """`url` and `caption` as text whatever their type, and every text column valid UTF-8."""
    for name in ("url", "caption"):
        if name in table.column_names and not is_text(table.schema.field(name).type):
            k = table.column_names.index(name)
            table = table.set_column(k, pa.field(name, TEXT), as_text(table.column(k), caption=name == "caption"))
    return valid_text(table)


def percent_encode_bad_bytes(raw: bytes) -> str:
    """A URL's bytes as text: bytes that are not UTF-8 percent-encoded, as a browser requests them."""
    text = raw.decode("utf-8", "surrogateescape")
    return "".join(f"%{ord(c) - 0xDC00:02X}" if "\udc80" <= c <= "\udcff" else c for c in text)


def valid_text(table: pa.Table) -> pa.Table:
    """Every text column as valid UTF-8, for the later steps to read: a URL's stray bytes are
    percent-encoded (what a browser would request), other text gets U+FFFD for them.

    A parquet or CSV file may hold bytes that are not UTF-8 in one row; without this, that row
    would stop every later step that reads the column as text. Valid columns cost one check.
    """
    for k, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        raw = table.column(k).cast(pa.large_binary())
        try:
            raw.cast(pa.large_string())  # validates UTF-8
            continue
        except pa.ArrowInvalid:
            pass
        fix = percent_encode_bad_bytes if field.name == "url" else (lambda b: b.decode("utf-8", "replace"))
        fixed = pa.array([None if b is None else fix(b) for b in raw.to_pylist()], field.type)
        table = table.set_column(k, field, fixed)
    return table
