"""Find the rows whose caption names a keyword, fast, in a column of millions of captions.

Running a Unicode-aware regex over every caption costs more than reading the file. Almost no
caption contains the keyword at all, so the work is split in two:

1. Pre-filter on raw bytes: the caption column's string data is one contiguous buffer; a literal
   search (`bytes.find`, memchr-fast) over the whole buffer finds every position where a
   "needle" taken from the keyword occurs, and the column's offsets turn positions into row
   numbers. For case-insensitive matching the buffer is ASCII-lower-cased first and the needle
   is the longest run of the keyword's ASCII letters whose case has no non-ASCII equivalent
   (RE2 and Python fold `k` with the Kelvin sign and `s` with the long s; Python also folds `i`
   with the Turkish dotted/dotless i), so every true match is among the candidates.
2. The exact RE2 pattern from `common.match` (word edges spelled out with \\p{L}), run by
   pyarrow.compute on the candidate rows only.

On parquet files step 01 usually hands the whole job to polars instead (common.polars_parts),
in the same two stages: `literal_re` (the keywords themselves) while the file is read, then the
exact patterns, which Rust's regex engine reads as RE2 does, on the rows that pass.

Keywords with no usable needle (all non-ASCII letters under case-insensitive matching, `regex`
mode, or a needle shorter than `MIN_NEEDLE`) fall back to the RE2 pattern on every row, which is
correct, only slower.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.cells import as_text
from common.cli import UserError
from common.match import MODES, KeywordPattern, compile_keywords

MIN_NEEDLE = 3
_UNSAFE_FOLD = set("iIkKsS")  # ASCII letters with a non-ASCII case-insensitive equivalent


def _needle(keyword: str, mode: str, case_sensitive: bool) -> bytes | None:
    """The literal every match must contain (as bytes of the searched buffer), or None."""
    if mode == "regex":
        return None
    if case_sensitive:
        return keyword.encode("utf-8")
    runs, run = [], []
    for ch in keyword:
        if ch.isascii() and ch not in _UNSAFE_FOLD:
            run.append(ch)
        else:
            runs.append("".join(run))
            run = []
    runs.append("".join(run))
    best = max(runs, key=len)
    return best.lower().encode("ascii") if len(best) >= MIN_NEEDLE else None


class CaptionMatcher:
    """Which keyword (first in the given order) each caption names, for whole arrays at once."""

    def __init__(self, patterns: list[KeywordPattern], mode: str = "word", case_sensitive: bool = False):
        assert patterns, "at least one keyword pattern is needed"
        self.patterns = patterns
        self.keywords = [p.keyword for p in patterns]
        self.mode = mode
        self.needles = [_needle(p.keyword, mode, case_sensitive) for p in patterns]
        self.lower = not case_sensitive

    def literal_re(self) -> str | None:
        """A pattern every match contains: the keywords as plain text, folded as the exact patterns
        fold case (so `(?i)` also finds the Kelvin sign for k). A literal search is several times
        faster than the word-edge pattern, whose Unicode classes slow every engine down, so it
        goes first. None in regex mode, where a keyword is not text."""
        if self.mode == "regex":
            return None
        return ("(?i)" if self.lower else "") + "(?:" + "|".join(re.escape(k) for k in self.keywords) + ")"

    def match(self, captions: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(row indices of matching captions, index of the keyword each matched), rows ascending."""
        arr = _as_plain_strings(captions)
        if len(arr) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        candidates = self._candidates(arr)
        subset = arr if candidates is None else arr.take(pa.array(candidates))
        which = np.full(len(subset), -1, np.int32)
        for k, pattern in enumerate(self.patterns):
            open_rows = which < 0
            if not open_rows.any():
                break
            hit = pc.fill_null(pc.match_substring_regex(subset, pattern.re2), False).to_numpy(zero_copy_only=False)
            which[open_rows & hit] = k
        keep = np.flatnonzero(which >= 0)
        rows = keep if candidates is None else candidates[keep]
        return rows.astype(np.int64), which[keep]

    def _candidates(self, arr: pa.Array) -> np.ndarray | None:
        """Sorted unique rows that may match, or None when every row must be checked."""
        if any(n is None for n in self.needles):
            return None
        _, offsets_buf, data_buf = arr.buffers()
        if data_buf is None:
            return np.empty(0, np.int64)
        offsets = np.frombuffer(offsets_buf, np.int64 if pa.types.is_large_string(arr.type) else np.int32)
        offsets = offsets[arr.offset: arr.offset + len(arr) + 1]
        data = np.frombuffer(data_buf, np.uint8)[int(offsets[0]): int(offsets[-1])]
        starts = np.unique(np.concatenate([_find_all(data, n, self.lower) for n in set(self.needles)]))
        if len(starts) == 0:
            return np.empty(0, np.int64)
        return np.unique(np.searchsorted(offsets, starts + int(offsets[0]), side="right") - 1)


def _find_all(data: np.ndarray, needle: bytes, fold: bool) -> np.ndarray:
    """Every start position of `needle` in `data` (a superset when `fold`), vectorised.

    The rarest byte of the needle is located with one pass over the buffer, then the other
    bytes are checked at the few surviving positions. With `fold`, a byte is compared with its
    0x20 bit set, which equates upper and lower case ASCII letters (and, harmlessly, a few
    punctuation pairs: extra candidates are removed by the exact pattern).
    """
    n = len(needle)
    if len(data) < n:
        return np.empty(0, np.int64)
    target = np.frombuffer(needle, np.uint8) | (0x20 if fold else 0)
    anchor = min(range(n), key=lambda j: _BYTE_RANK.get(int(target[j]), 0))
    window = data[anchor: len(data) - n + 1 + anchor]
    hits = np.flatnonzero((window | 0x20) == target[anchor] if fold else window == target[anchor])
    for j in range(n):
        if j != anchor and len(hits):
            got = data[hits + j]
            hits = hits[((got | 0x20) if fold else got) == target[j]]
    return hits.astype(np.int64)


# rough frequency rank of bytes in captions (higher = more common); the rarest byte anchors the search
_BYTE_RANK = {ord(c): 100 - i for i, c in enumerate(" eaoitnsrlhdcumpgfybvwk.,-'0123456789xjqz")}


def _as_plain_strings(captions) -> pa.Array:
    """One contiguous utf8/large_utf8 array."""
    if isinstance(captions, pa.ChunkedArray):
        captions = captions.combine_chunks() if captions.num_chunks != 1 else captions.chunk(0)
    return as_text(captions, caption=True)  # string views, dictionaries, bytes, lists (common.cells)


def build_matcher(keywords: list[str], mode: str = "word", case_sensitive: bool = False) -> CaptionMatcher:
    """A matcher for command-line keywords; a UserError for an unknown mode or a bad pattern."""
    if mode not in MODES:
        raise UserError(f"unknown --match {mode!r}: choose one of {', '.join(MODES)}")
    try:
        patterns = compile_keywords(keywords, mode, case_sensitive)
        for p in patterns:  # RE2 refuses some Python-valid patterns (look-arounds): say so now
            pc.match_substring_regex(pa.array([""]), p.re2)
    except (re.error, pa.ArrowInvalid) as e:
        raise UserError(f"--keywords is not a valid regular expression ({str(e).splitlines()[0]}): "
                        "fix it or use --match word") from None
    if not patterns:
        raise UserError("--keywords are all blank: give at least one word, e.g. --keywords Madrid")
    return CaptionMatcher(patterns, mode, case_sensitive)
