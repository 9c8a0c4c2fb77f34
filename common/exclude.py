"""Negative filtering (step 03): which exclude term, if any, removes each row, in Arrow kernels.

Terms match like step 01's keywords (`common.match`, whole words, case-insensitive). A row that
names several terms is attributed to the first of them in the order given, so the per-term
removal counts add up to the rows removed; `matches` also counts every term on its own.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.match import KeywordPattern

REASON_COLUMN = "excluded_by"
META_TERMS = b"exclude_terms"
META_MATCHES = b"exclude_matches"


def term_masks(captions: pa.Array, patterns: list[KeywordPattern]) -> list[np.ndarray]:
    """One boolean array per term: does the caption name it? (null captions name nothing)"""
    return [pc.fill_null(pc.match_substring_regex(captions, p.re2), False).to_numpy(zero_copy_only=False)
            for p in patterns]


def first_terms(masks: list[np.ndarray], terms: list[str]) -> tuple[np.ndarray, pa.Array]:
    """Which rows go, and the first term (in the order given) that removes each of them."""
    n = len(masks[0]) if masks else 0
    which = np.full(n, -1, dtype=np.int32)
    for i in range(len(masks) - 1, -1, -1):  # backwards, so the earliest matching term wins
        which[masks[i]] = i
    removed = which >= 0
    labels = pa.array(terms, pa.string()).take(pa.array(which[removed]))
    return removed, labels


def terms_metadata(terms: list[str], matches: Counter | None = None) -> dict[bytes, bytes]:
    meta = {META_TERMS: json.dumps(terms, ensure_ascii=False).encode()}
    if matches is not None:
        meta[META_MATCHES] = json.dumps(dict(matches), ensure_ascii=False).encode()
    return meta


def recorded_terms(path: Path) -> list[str] | None:
    """The exclude terms a finished output part was made with (None if it does not say)."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_TERMS]) if META_TERMS in meta else None


def recorded_matches(path: Path) -> Counter:
    meta = pq.read_schema(path).metadata or {}
    return Counter(json.loads(meta[META_MATCHES])) if META_MATCHES in meta else Counter()


def align(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.Table:
    """A batch in the shape of a wider schema: missing columns as nulls, types promoted."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(len(table), f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def removed_counts(paths: list[Path]) -> Counter:
    """Rows removed per term, counted from the written excluded parts."""
    out: Counter = Counter()
    for path in paths:
        column = pq.read_table(path, columns=[REASON_COLUMN]).column(0)
        for row in pc.value_counts(column).to_pylist():
            out[row["values"]] += row["counts"]
    return out
