"""The fast caption matcher finds exactly the rows a plain Python regex finds."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import pyarrow.parquet as pq

from common import polars_parts
from tests.conftest import missing
from common.caption_filter import CaptionMatcher, _needle, build_matcher
from common.match import compile_keywords, first_match
from common.metadata_parts import output_schema
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
@pytest.mark.parametrize("mode, case_sensitive", [("word", False), ("word", True), ("substring", False)])
def test_polars_path_keeps_the_rows_python_regex_keeps(keywords, mode, case_sensitive, tmp_path):
    """Rust's regex engine (polars) reads the patterns as Python and RE2 do, keyword order included."""
    if polars_parts.polars() is None:
        missing("polars is not installed (or too old): the pyarrow path is the only one")
    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"url": [f"http://img.test/{i}.jpg" for i in range(len(TRICKY))], "caption": TRICKY}), src)
    matcher = build_matcher(keywords, mode, case_sensitive)
    schema = output_schema(pq.read_schema(src), {})
    assert polars_parts.usable(src, matcher, schema, {})
    counts = polars_parts.write_part(src, "src", tmp_path / "part.parquet", matcher, "caption", "url", {}, schema,
                                     lambda c: {"rows_written": c["rows_written"]})
    got = pq.read_table(tmp_path / "part.parquet")
    rows, which = oracle(TRICKY, keywords, mode, case_sensitive)
    assert got["url"].to_pylist() == [f"http://img.test/{i}.jpg" for i in rows]
    assert got["matched_keyword"].to_pylist() == [matcher.keywords[k] for k in which]
    assert counts["rows_written"] == len(rows) and sum(counts["matched"].values()) == len(rows)
