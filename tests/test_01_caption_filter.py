"""The fast caption matcher finds exactly the rows a plain Python regex finds."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from common.caption_filter import CaptionMatcher, _needle
from common.match import compile_keywords, first_match
from sample.relaion import relaion_table

TRICKY = [
    "Madrid", "madrid's", "#MADRID", "Madrid-Barajas", "xMadrid", "Madridista", "in Madrid.", None, "",
    "Stoc\u212aholm at dawn",            # KELVIN SIGN folds to k
    "PARI\u017f by night",               # LATIN SMALL LETTER LONG S folds to s
    "SÃO PAULO skyline", "são paulo", "Sao Paulo", "Kraków old town", "KRAKÓW", "krakow",
    "Zürich HB", "ZÜRICH", "Москва ночью", "МОСКВА", "москва", "madri", "dmadrid", "Madrid" * 3,
    "end of one caption Madr", "id start of the next",  # a needle across two rows is not a match
]
KEYWORD_SETS = [["Madrid"], ["Stockholm", "Paris"], ["São Paulo"], ["Kraków", "Zürich"], ["Москва"],
                ["madrid", "Madrid-Barajas"]]


def oracle(captions, keywords, mode="word", case_sensitive=False):
    patterns = compile_keywords(keywords, mode, case_sensitive)
    rows, which = [], []
    for i, c in enumerate(captions):
        kw = first_match(patterns, c)
        if kw is not None:
            rows.append(i)
            which.append([p.keyword for p in patterns].index(kw))
    return rows, which


def run(captions, keywords, mode="word", case_sensitive=False, arrow=None):
    m = CaptionMatcher(compile_keywords(keywords, mode, case_sensitive), mode, case_sensitive)
    rows, which = m.match(arrow if arrow is not None else pa.array(captions, pa.string()))
    return rows.tolist(), which.tolist()


@pytest.mark.parametrize("keywords", KEYWORD_SETS)
@pytest.mark.parametrize("mode, case_sensitive", [("word", False), ("word", True), ("substring", False)])
def test_matcher_equals_python_regex_on_tricky_captions(keywords, mode, case_sensitive):
    assert run(TRICKY, keywords, mode, case_sensitive) == oracle(TRICKY, keywords, mode, case_sensitive)


def test_matcher_equals_python_regex_on_generated_sample():
    captions = relaion_table(20_000, seed=3)["caption"].to_pylist()
    for keywords in (["Madrid"], ["Barajas", "madrid", "Sevilla"], ["München"]):
        assert run(captions, keywords) == oracle(captions, keywords)


@pytest.mark.parametrize("make", [
    lambda c: pa.array(["pad", "pad"] + c, pa.string()).slice(2),                  # offset into buffers
    lambda c: pa.array(c, pa.large_string()),
    lambda c: pa.chunked_array([pa.array(c[:7], pa.string()), pa.array(c[7:], pa.string())]),
    lambda c: pa.array(c, pa.string()).dictionary_encode(),
    lambda c: pa.array(c, pa.string_view()),
], ids=["sliced", "large_string", "chunked", "dictionary", "string_view"])
def test_every_arrow_string_layout_gives_the_same_rows(make):
    assert run(TRICKY, ["Madrid"], arrow=make(TRICKY)) == oracle(TRICKY, ["Madrid"])


def test_regex_mode_and_needle_free_keywords_check_every_row():
    assert _needle("Москва", "word", False) is None       # no ASCII letters to search for
    assert _needle("Zürich", "word", False) is None       # "Z", "r", "ch": too short once i is excluded
    assert _needle("Madrid", "word", False) == b"madr"    # stops before the i (Turkish dotted/dotless i)
    assert _needle("Madrid", "word", True) == b"Madrid"
    assert _needle("mad.*rid", "regex", False) is None
    assert run(TRICKY, ["mad+rid|Москва"], "regex") == oracle(TRICKY, ["mad+rid|Москва"], "regex")


def test_empty_and_all_null_columns_match_nothing():
    for arr in (pa.array([], pa.string()), pa.nulls(5, pa.string())):
        rows, which = CaptionMatcher(compile_keywords(["Madrid"])).match(arr)
        assert rows.dtype == np.int64 and len(rows) == 0 and len(which) == 0


@pytest.mark.parametrize("keywords", KEYWORD_SETS)
@pytest.mark.parametrize("case_sensitive", [False, True])
def test_polars_prefilter_lets_every_true_match_through(keywords, case_sensitive):
    pl = pytest.importorskip("polars")
    m = CaptionMatcher(compile_keywords(keywords, "word", case_sensitive), "word", case_sensitive)
    pattern = m.prefilter_regex()
    if pattern is None:
        pytest.skip("no needle: this keyword set takes the RE2-on-every-row path")
    kept = pl.DataFrame({"c": TRICKY, "row": range(len(TRICKY))}).filter(pl.col("c").str.contains(pattern))
    assert set(oracle(TRICKY, keywords, "word", case_sensitive)[0]) <= set(kept["row"].to_list())
