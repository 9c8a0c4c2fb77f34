"""Keyword matching with one meaning everywhere (step 01 keeps rows, step 03 removes them).

`word` mode: the keyword as a whole word, Unicode-aware and case-insensitive by default, so
"Madrid's", "#madrid", "MADRID" and "Madrid-Barajas" match while "Madridista" does not.
Each pattern exists twice: as a Python `re` pattern and as an RE2 pattern for pyarrow.compute
(RE2's own \\b only knows ASCII letters, so the word edges are spelled out with \\p{L}).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MODES = ("word", "substring", "regex")
_RE2_WORD_CHAR = r"[\p{L}\p{N}\p{M}_]"


@dataclass(frozen=True)
class KeywordPattern:
    keyword: str
    python: re.Pattern
    re2: str
    ignore_case: bool

    def search(self, text: str | None) -> bool:
        return bool(text) and self.python.search(text) is not None


def compile_keyword(keyword: str, mode: str = "word", case_sensitive: bool = False) -> KeywordPattern:
    assert mode in MODES, f"unknown match mode {mode!r}"
    if mode == "regex":
        body_py = body_re2 = keyword
    else:
        body_py = body_re2 = re.escape(keyword)
    if mode == "word":
        py = rf"(?<!\w){body_py}(?!\w)"
        re2 = rf"(?:^|[^\p{{L}}\p{{N}}\p{{M}}_]){body_re2}(?:$|[^\p{{L}}\p{{N}}\p{{M}}_])"
    else:
        py, re2 = body_py, body_re2
    flags = 0 if case_sensitive else re.IGNORECASE
    prefix = "" if case_sensitive else "(?i)"
    return KeywordPattern(keyword, re.compile(py, flags), prefix + re2, not case_sensitive)


def compile_keywords(keywords, mode: str = "word", case_sensitive: bool = False) -> list[KeywordPattern]:
    """One pattern per distinct keyword, in the order given (case-insensitive duplicates folded)."""
    seen, out = set(), []
    for kw in keywords:
        key = kw if case_sensitive else kw.casefold()
        if kw.strip() and key not in seen:
            seen.add(key)
            out.append(compile_keyword(kw, mode, case_sensitive))
    return out


def first_match(patterns: list[KeywordPattern], text: str | None) -> str | None:
    for p in patterns:
        if p.search(text):
            return p.keyword
    return None
