"""Step 01 on JSON Lines collections (.jsonl, .ndjson, gzipped or not), as pandas, DuckDB, jq and
scrapers write them: top-level keys are columns, a dot path reaches a nested field, every value is
read as text, and a line that is not a JSON object is counted and skipped, never the whole file."""
from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from common.paths import DataTree
from tests.conftest import load_step

step = load_step("01_download_and_filter")

A1, A2, B1 = "https://pbs.test/a1.jpg", "https://pbs.test/a2.jpg", "https://pbs.test/b1.jpg"


def run(tmp_path, source, *extra) -> int:
    return step.main(["--data-dir", str(tmp_path / "d"), "--keywords", "Lisbon", "--source", str(source), *extra])


def rows(tmp_path) -> list[dict]:
    return pq.read_table(DataTree(tmp_path / "d").metadata_part(0)).to_pylist()


def stats(tmp_path) -> dict:
    return json.loads((DataTree(tmp_path / "d").metadata / "_stats.json").read_text())


def write_lines(path, lines: list) -> None:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines) + "\n"
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write(text)


@pytest.mark.parametrize("name", ["posts.jsonl", "posts.ndjson", "posts.jsonl.gz"])
def test_flat_records_are_read_like_a_csv(tmp_path, name):
    src = tmp_path / name
    write_lines(src, [{"url": A1, "caption": "Lisbon at dusk", "likes": 3, "tags": ["tram", "river"]},
                      {"url": B1, "caption": "Porto", "likes": 1},
                      {"url": A2, "caption": ["Lisbon", "again"], "verified": True}])
    assert run(tmp_path, src) == 0
    got = rows(tmp_path)
    # a caption stored as a list of words reads as its words, as a parquet list column's does
    assert [(r["url"], r["caption"]) for r in got] == [(A1, "Lisbon at dusk"), (A2, "Lisbon again")]
    # every value as text: numbers and lists as their JSON, a key a record lacks as null
    assert got[0]["likes"] == "3" and json.loads(got[0]["tags"]) == ["tram", "river"] and got[0]["verified"] is None
    assert got[1]["verified"] == "true"


def test_a_dot_path_names_a_nested_field_and_a_list_of_media_gives_a_row_each(tmp_path):
    src = tmp_path / "scrape.jsonl"
    write_lines(src, [{"id": 1, "post": {"text": "Lisbon trams"}, "media": [{"url": A1}, {"url": A2, "kind": "photo"}]},
                      {"id": 2, "post": {"text": "Porto"}, "media": [{"url": B1}]},
                      {"id": 3, "post": "no object here", "media": []}])
    assert run(tmp_path, src, "--caption-column", "post.text", "--url-column", "media") == 0
    got = rows(tmp_path)
    assert [r["url"] for r in got] == [A1, A2] and {r["caption"] for r in got} == {"Lisbon trams"}


def test_broken_lines_are_counted_and_the_rest_is_read(tmp_path, capsys):
    src = tmp_path / "posts.jsonl"
    write_lines(src, [{"url": A1, "caption": "Lisbon 1"}, '{"url": "https://pbs.test/x.jpg", "caption": "Lis',
                      "[1, 2, 3]", "", "  ", '"just a string"', "[" * 100_000,
                      '{"url": "%s", "caption": "Lisbon \\ud800 2"}' % A2,  # a lone surrogate, escaped
                      b"\xff\xfe".decode("latin-1")])
    assert run(tmp_path, src) == 0
    got = rows(tmp_path)
    assert [r["url"] for r in got] == [A1, A2] and got[1]["caption"] == "Lisbon \ufffd 2"
    # the cut line, the list, the string, the deep one, the non-JSON bytes (blank lines are no rows)
    assert stats(tmp_path)["dropped"]["malformed_csv_line"] == 5 and stats(tmp_path)["rows_in"] == 7
    assert "Traceback" not in capsys.readouterr().err


def test_a_file_without_the_columns_or_without_objects_says_what_to_do(tmp_path, capsys):
    src = tmp_path / "posts.jsonl"
    write_lines(src, [{"link": A1, "text": "Lisbon"}])
    assert run(tmp_path, src) == 2
    err = capsys.readouterr().err
    assert "(it has: link, text): pass --url-column NAME" in err and "Traceback" not in err
    assert run(tmp_path, src, "--url-column", "link", "--caption-column", "post.text") == 2
    assert "column 'post.text' is not in" in capsys.readouterr().err  # a dot path no object holds
    array = tmp_path / "array.ndjson"
    array.write_text(json.dumps([{"url": A1, "caption": "Lisbon"}]), encoding="utf-8")  # one JSON array
    assert run(tmp_path, array) == 2  # skipped with its reason; with no other file, the run has nothing
    err = capsys.readouterr().err
    assert "skipped" in err and "one JSON array is not JSON Lines" in err and "Traceback" not in err


def test_a_folder_picks_up_json_lines_files_among_the_others(tmp_path):
    folder = tmp_path / "collection"
    folder.mkdir()
    write_lines(folder / "a.jsonl", [{"url": A1, "caption": "Lisbon"}])
    (folder / "b.csv").write_text(f"url,caption\n{A2},Lisbon too\n", encoding="utf-8")
    (folder / "notes.json").write_text("{}", encoding="utf-8")  # not a collection file: not read
    assert run(tmp_path, folder) == 0
    parts = DataTree(tmp_path / "d").metadata
    urls = sorted(r["url"] for p in sorted(parts.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist())
    assert urls == [A1, A2]
