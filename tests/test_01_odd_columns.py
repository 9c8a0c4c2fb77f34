"""Step 01 on collections as researchers' tools and spreadsheets write them: URL or caption columns
that are not plain text (list columns of pictures, media objects, bytes with stray non-UTF-8, words in
a list, numbers, an empty column), and CSV exports with `;` or `|` between fields, UTF-16 text, or a
spreadsheet given as data. Each column is read as text (common.cells), none stops the run, and a
file that cannot be read says why in its skip reason.
"""
from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.columns import row_id
from common.paths import DataTree
from common.url_lists import split_cell
from tests.conftest import load_step

step = load_step("01_download_and_filter")

A1, A2, B1 = "https://pbs.test/a1.jpg", "https://pbs.test/a2.jpg", "https://pbs.test/b1.jpg"
CAPTIONS = ["Lisbon at dusk", "tram 28 in Lisbon", "Lisbon, no picture", "Porto bridges"]


def run(data_dir, source, *extra) -> int:
    return step.main(["--data-dir", str(data_dir), "--keywords", "Lisbon", "--source", str(source), *extra])


def write(tmp_path, url: pa.Array, caption: pa.Array | None = None):
    path = tmp_path / "src" / "export.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"url": url, "caption": caption if caption is not None else pa.array(CAPTIONS)}), path)
    return path


def rows(data_dir) -> list[dict]:
    return pq.read_table(DataTree(data_dir).metadata_part(0)).to_pylist()


@pytest.mark.parametrize("cell, urls", [
    (f'["{A1}", "{A2}"]', [A1, A2]),                       # JSON
    (f"['{A1}', '{A2}']", [A1, A2]),                       # a pandas list column written to CSV
    (f"{A1} {A2}", [A1, A2]), (f"{A1}\n{A2}", [A1, A2]),   # whitespace
    (f"{A1};{A2}", [A1, A2]), (f"{A1} | {A2}", [A1, A2]),  # semicolons, bars
    (f'[{{"url": "{A1}", "type": "photo"}}, {{"type": "video"}}]', [A1]),  # media objects
    (f'{{"media_url_https": "{A2}"}}', [A2]),
    ("[]", []), ("[1, 2]", []),
    ("https://x.test/a;b=1", ["https://x.test/a;b=1"]),   # a URL with a separator inside stays whole
    ("https://x.test/a,w_1/c.jpg", ["https://x.test/a,w_1/c.jpg"]),
    (f"https://x.test/a;b {A1}", ["https://x.test/a;b", A1]),
    ("[not json", ["[not json"]),                          # not a list: one (bad) URL, as written
])
def test_auto_reads_the_lists_that_collection_tools_write(cell, urls):
    assert split_cell(cell, "auto") == urls


def test_a_very_long_cell_is_not_parsed_as_a_list():
    cell = "[" + ", ".join(f'"{A1}"' for _ in range(60_000)) + "]"
    assert split_cell(cell, "auto") == [cell]


def test_a_pandas_csv_with_list_cells_gives_one_row_per_picture(tmp_path):
    src = tmp_path / "posts.csv"
    with open(src, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["caption", "media"])
        w.writerow([CAPTIONS[0], str([A1, A2])])           # what pandas writes for a list
        w.writerow([CAPTIONS[1], json.dumps([B1])])
    assert run(tmp_path / "d", src, "--url-column", "media") == 0
    assert [(r["url"], r["image_index"]) for r in rows(tmp_path / "d")] == [(A1, 0), (A2, 1), (B1, 0)]


@pytest.mark.parametrize("url", [
    pa.array([[A1, A2], [B1], None, []], pa.list_(pa.string())),
    pa.array([[A1, A2], [B1], None, []], pa.large_list(pa.large_string())),
    pa.array([[{"url": A1, "w": 1}, {"url": A2, "w": 2}], [{"url": B1, "w": 3}], None, []]),
], ids=["list", "large_list", "list_of_media_objects"])
def test_a_parquet_list_column_of_pictures_gives_one_row_per_picture(tmp_path, url):
    assert run(tmp_path / "d", write(tmp_path, url)) == 0
    out = rows(tmp_path / "d")
    assert [(r["url"], r["image_index"], r["caption"]) for r in out] == [
        (A1, 0, CAPTIONS[0]), (A2, 1, CAPTIONS[0]), (B1, 0, CAPTIONS[1])]
    assert all(r["id"] == row_id(r["url"]) for r in out)
    assert out[0]["post_id"] == out[1]["post_id"] != out[2]["post_id"]
    stats = json.loads((DataTree(tmp_path / "d").metadata / "_stats.json").read_text(encoding="utf-8"))
    assert stats["dropped"]["no_url"] == 1  # the post with None (the empty list's caption names no city)


def test_a_list_column_with_url_separator_none_skips_the_file_saying_why(tmp_path, capsys):
    assert run(tmp_path / "d", write(tmp_path, pa.array([[A1], [B1], None, []])), "--url-separator", "none") == 2
    err = capsys.readouterr().err
    assert "column url holds lists of URLs" in err and "leave --url-separator at auto" in err
    assert "Traceback" not in err


def test_urls_as_bytes_with_a_stray_byte_are_percent_encoded_and_the_others_kept(tmp_path):
    url = pa.array([b"https://pbs.test/caf\xe9.jpg", B1.encode(), None, b""], pa.binary())
    assert run(tmp_path / "d", write(tmp_path, url)) == 0
    assert [r["url"] for r in rows(tmp_path / "d")] == ["https://pbs.test/caf%E9.jpg", B1]


def test_captions_as_bytes_lists_or_dictionaries_are_matched_as_text(tmp_path):
    cases = {
        "bytes": pa.array([b"Lisbon \xff dusk", b"tram in Lisbon", None, b"Porto"], pa.binary()),
        "words": pa.array([["Lisbon", "dusk"], ["tram", "Lisbon"], None, ["Porto"]]),
        "dictionary": pa.array(["Lisbon dusk", "tram in Lisbon", None, "Porto"]).dictionary_encode(),
    }
    expected = {"bytes": ["Lisbon \ufffd dusk", "tram in Lisbon"], "words": ["Lisbon dusk", "tram Lisbon"],
                "dictionary": ["Lisbon dusk", "tram in Lisbon"]}
    for name, caption in cases.items():
        src = write(tmp_path / name, pa.array([A1, B1, A2, A2]), caption)
        assert run(tmp_path / name / "d", src) == 0, name
        assert [r["caption"] for r in rows(tmp_path / name / "d")] == expected[name], name


@pytest.mark.parametrize("url, expected", [
    (pa.array([1, 2, None, 4]), ["1", "2"]),  # numbers are kept as text: step 05 reports them as bad_url
    (pa.array([{"u": A1}, {"u": "x"}, None, None]), [A1]),
])
def test_other_url_types_are_read_as_text(tmp_path, url, expected):
    assert run(tmp_path / "d", write(tmp_path, url)) == 0
    assert [r["url"] for r in rows(tmp_path / "d")] == expected


def test_matches_without_any_url_say_to_check_the_url_column(tmp_path, capsys):
    assert run(tmp_path / "d", write(tmp_path, pa.nulls(4))) == 2
    err = capsys.readouterr().err
    assert "3 captions name Lisbon, but none of those rows has a URL" in err and "--url-column" in err


@pytest.mark.parametrize("sep", [";", "|", "\t"])
def test_a_csv_with_another_field_separator_is_read(tmp_path, sep):
    src = tmp_path / "export.csv"
    src.write_text(f'url{sep}"caption{sep} text"\n{A1}{sep}"Lisbon{sep} 1,5 km"\n{B1}{sep}Porto\n', encoding="utf-8")
    assert run(tmp_path / "d", src, "--caption-column", f"caption{sep} text") == 0
    assert [(r["url"], r["caption"]) for r in rows(tmp_path / "d")] == [(A1, f"Lisbon{sep} 1,5 km")]


@pytest.mark.parametrize("name, data, words", [
    ("u16.csv", f"url,caption\n{A1},Lisbon\n".encode("utf-16"), "UTF-16 text"),
    ("posts.xlsx", b"PK\x03\x04" + bytes(64), "not a parquet file: step 01 reads .parquet, .csv"),
    ("posts.json", json.dumps([{"url": A1, "caption": "Lisbon"}]).encode(), "a JSON export as JSON Lines or CSV"),
])
def test_a_file_step_01_cannot_read_says_what_to_do(tmp_path, capsys, name, data, words):
    src = tmp_path / name
    src.write_bytes(data)
    assert run(tmp_path / "d", src) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
