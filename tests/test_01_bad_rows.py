"""Step 01: no row stops a file. Whatever a caption or URL cell holds (odd Unicode, bidi marks,
control characters, very long text, bytes that are not UTF-8) and however broken one CSV line
is, the file is filtered, every written row has a valid URL and its id, and the counts add up."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from common.caption_filter import build_matcher
from common.columns import row_id
from common.cells import percent_encode_bad_bytes
from tests.conftest import load_step
from tests.odd_inputs import captions, urls

step = load_step("01_download_and_filter")
MATCH_EXAMPLES = 150
PARQUET_EXAMPLES = 25
CSV_EXAMPLES = 25
PROPERTY = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])
FIXED = (b"Madrid at night", b"http://example.com/fixed.jpg")  # every file has one match
# a cell: odd text as UTF-8, or bytes that need not be UTF-8 at all, or nothing
cells = st.one_of(captions.map(lambda s: s.encode("utf-8")), urls.map(lambda s: s.encode("utf-8")),
                  st.binary(max_size=40), st.none())
# half the captions name the city (so odd URLs get written), the other half are anything at all
caption_cells = st.tuples(st.booleans(), st.sampled_from([b"Madrid ", b"#MADRID\xff", b"\x80madrid\xe2\x80\xae "]),
                          cells).map(lambda t: t[1] + (t[2] or b"") if t[0] else t[2])
url_cells = st.one_of(cells, st.binary(min_size=1, max_size=40).map(lambda b: b"http://example.com/" + b))
rows = st.lists(st.tuples(caption_cells, url_cells), min_size=1, max_size=12)


@settings(max_examples=MATCH_EXAMPLES, **PROPERTY)
@given(st.lists(st.one_of(captions, st.none()), max_size=20), st.sampled_from(["word", "substring"]))
def test_the_matcher_takes_any_caption(texts, mode):
    matcher = build_matcher(["Madrid", "São Paulo"], mode)
    found, which = matcher.match(pa.array(texts, pa.string()))
    assert list(found) == sorted(set(found.tolist())) and all(0 <= r < len(texts) for r in found)
    assert len(which) == len(found) and all(k in (0, 1) for k in which)


def check_part(tmp_path, n_rows: int) -> None:
    part = pq.read_table(tmp_path / "d" / "metadata" / "part-00000.parquet")
    for url, row_id_ in zip(part.column("url").to_pylist(), part.column("id").to_pylist()):
        assert isinstance(url, str) and url and row_id_ == row_id(url)
    assert FIXED[1].decode() in part.column("url").to_pylist()
    stats = json.loads((tmp_path / "d" / "metadata" / "_stats.json").read_text())
    assert stats["rows_in"] == n_rows + 1
    assert stats["rows_out"] + sum(stats["dropped"].values()) == stats["rows_in"]


def text_array(values: list[bytes | None]) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())  # as a file may hold them: unchecked


@pytest.mark.parametrize("engine", ["polars", "pyarrow"])
@settings(max_examples=PARQUET_EXAMPLES, **PROPERTY)
@given(data=rows)
def test_any_parquet_rows_are_filtered(tmp_path, monkeypatch, engine, data):
    monkeypatch.setenv("CITY_IDENTITY_PARQUET_ENGINE", engine)
    caps, links = zip(*([*data, FIXED]))
    pq.write_table(pa.table({"caption": text_array(list(caps)), "url": text_array(list(links))}), tmp_path / "s.parquet")
    args = ["--keywords", "Madrid", "--source", str(tmp_path / "s.parquet"), "--data-dir", str(tmp_path / "d")]
    assert step.main(args + ["--overwrite"]) == 0
    check_part(tmp_path, len(data))


def csv_field(value: bytes | None) -> bytes:
    return b"" if value is None else b'"' + value.replace(b'"', b'""') + b'"'


@settings(max_examples=CSV_EXAMPLES, **PROPERTY)
@given(data=rows)
def test_any_csv_rows_are_filtered(tmp_path, data):
    lines = [b"caption,url"] + [csv_field(c) + b"," + csv_field(u) for c, u in [*data, FIXED]]
    (tmp_path / "s.csv").write_bytes(b"\n".join(lines) + b"\n")
    args = ["--keywords", "Madrid", "--source", str(tmp_path / "s.csv"), "--data-dir", str(tmp_path / "d")]
    assert step.main(args + ["--overwrite"]) == 0
    check_part(tmp_path, len(data))


def test_bytes_that_are_not_utf8_are_repaired_not_fatal(tmp_path):
    pq.write_table(pa.table({"url": text_array([b"http://a.com/\xff.jpg", b"http://b.com/x.jpg"]),
                             "caption": text_array([b"Madrid \xfe", b"Madrid"])}), tmp_path / "s.parquet")
    assert step.main(["--keywords", "Madrid", "--source", str(tmp_path / "s.parquet"),
                      "--data-dir", str(tmp_path / "d")]) == 0
    part = pq.read_table(tmp_path / "d" / "metadata" / "part-00000.parquet")
    assert part.column("url").to_pylist() == ["http://a.com/%FF.jpg", "http://b.com/x.jpg"]
    assert part.column("caption").to_pylist() == ["Madrid \ufffd", "Madrid"]
    assert percent_encode_bad_bytes("http://x/ü".encode() + b"\x80") == "http://x/ü%80"


def test_a_malformed_csv_line_is_counted_and_the_file_is_read(tmp_path, capsys):
    (tmp_path / "s.csv").write_bytes(b"url,caption\nhttp://a.com/1.jpg,Madrid one\nhttp://a.com/2.jpg,Madrid,extra\n"
                                     b"http://a.com/3.jpg\nhttp://a.com/4.jpg,Madrid four\n")
    assert step.main(["--keywords", "Madrid", "--source", str(tmp_path / "s.csv"),
                      "--data-dir", str(tmp_path / "d")]) == 0
    part = pq.read_table(tmp_path / "d" / "metadata" / "part-00000.parquet")
    assert part.column("url").to_pylist() == ["http://a.com/1.jpg", "http://a.com/4.jpg"]
    stats = json.loads((tmp_path / "d" / "metadata" / "_stats.json").read_text())
    assert stats["dropped"]["malformed_csv_line"] == 2 and stats["rows_in"] == 4
    assert np.sum(list(stats["dropped"].values())) + stats["rows_out"] == 4
