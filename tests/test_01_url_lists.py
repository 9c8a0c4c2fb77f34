"""Step 01 on collections whose URL cell lists several images (4CAT-like exports): one row per image,
the post's columns kept, the post traceable; the same parts on the polars and the pyarrow path."""
from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import filter_file, metadata_parts
from common.columns import row_id
from common.paths import DataTree
from common.url_lists import split_cell
from tests.conftest import load_step
from tests.image_server import image_server  # noqa: F401

step = load_step("01_download_and_filter")

CDN = "https://res.cdn.test/image/upload/w_100,h_80/c.jpg"  # a comma inside one URL
POSTS = [  # a 4CAT-like export: the post's own id, its text, its author, its pictures
    {"id": "1001", "body": "Lisbon at dusk", "author": "ana",
     "images": "https://pbs.test/a1.jpg,https://pbs.test/a2.jpg, https://pbs.test/a3.jpg"},
    {"id": "1002", "body": "tram 28 in Lisbon", "author": "rui", "images": "https://pbs.test/b1.jpg"},
    {"id": "1003", "body": "Lisbon, no picture", "author": "eva", "images": ""},
    {"id": "1004", "body": "Porto bridges", "author": "ana", "images": "https://pbs.test/c1.jpg,https://pbs.test/c2.jpg"},
    {"id": "1005", "body": "Lisbon cdn", "author": "joe", "images": CDN},
    {"id": "1006", "body": "Lisbon again", "author": "rui", "images": "https://pbs.test/a2.jpg"},
]


def write_csv(path, posts=POSTS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(posts[0]))
        writer.writeheader()
        writer.writerows(posts)
    return path


def run(data_dir, source, *extra) -> int:
    return step.main(["--data-dir", str(data_dir), "--keywords", "Lisbon", "--source", str(source),
                      "--url-column", "images", "--caption-column", "body", *extra])


def part(data_dir) -> pa.Table:
    return pq.read_table(DataTree(data_dir).metadata_part(0))


def test_a_4cat_images_cell_gives_one_row_per_image_and_keeps_the_post(tmp_path):
    assert run(tmp_path / "d", write_csv(tmp_path / "export.csv")) == 0
    t = part(tmp_path / "d")
    assert t.column_names == ["source_id", "caption", "author", "url", "id", "source_file", "matched_keyword",
                              "post_id", "image_index"]
    rows = t.to_pylist()
    assert [(r["source_id"], r["url"], r["image_index"]) for r in rows] == [
        ("1001", "https://pbs.test/a1.jpg", 0), ("1001", "https://pbs.test/a2.jpg", 1),
        ("1001", "https://pbs.test/a3.jpg", 2), ("1002", "https://pbs.test/b1.jpg", 0), ("1005", CDN, 0),
        ("1006", "https://pbs.test/a2.jpg", 0)]
    assert all(r["id"] == row_id(r["url"]) for r in rows)  # id stays per image URL
    assert {r["post_id"] for r in rows[:3]} == {row_id(POSTS[0]["images"])}  # one post, one post_id
    assert rows[3]["post_id"] == rows[3]["id"]  # a one-picture post: post_id is the image's id
    assert all(r["author"] == "ana" and r["caption"] == "Lisbon at dusk" for r in rows[:3])
    info = metadata_parts.read_part_info(DataTree(tmp_path / "d").metadata_part(0))
    assert (info["rows_scanned"], info["matched"], info["no_url"], info["rows_written"]) == (6, {"Lisbon": 5}, 1, 6)


@pytest.mark.parametrize("separator, urls", [
    (" | ", ["https://pbs.test/x.jpg", "https://pbs.test/y.jpg"]),
    ("none", ["https://pbs.test/x.jpg | https://pbs.test/y.jpg"]),
])
def test_an_explicit_separator_splits_exactly_on_it_and_none_keeps_cells_whole(tmp_path, separator, urls):
    posts = [{"id": "1", "body": "Lisbon", "author": "a", "images": "https://pbs.test/x.jpg | https://pbs.test/y.jpg"}]
    assert run(tmp_path / "d", write_csv(tmp_path / "e.csv", posts), "--url-separator", separator) == 0
    t = part(tmp_path / "d")
    assert t["url"].to_pylist() == urls
    assert ("image_index" in t.column_names) == (separator != "none")


def test_polars_and_pyarrow_give_the_same_parts(tmp_path, monkeypatch):
    src = tmp_path / "src" / "export.parquet"
    src.parent.mkdir()
    posts = POSTS * 40  # several record batches' worth
    pq.write_table(pa.Table.from_pylist(posts), src, row_group_size=50)
    used = {}
    for engine in ("polars", "pyarrow"):
        monkeypatch.setenv("CITY_IDENTITY_PARQUET_ENGINE", engine)
        writers: list = []
        monkeypatch.setattr(filter_file, "PartWriter", lambda *a, seen=writers: seen.append(a) or metadata_parts.PartWriter(*a))
        assert run(tmp_path / engine, src) == 0
        used[engine] = "pyarrow" if writers else "polars"
    assert used == {"polars": "polars", "pyarrow": "pyarrow"}  # each path really ran
    a, b = pq.read_table(DataTree(tmp_path / "polars").metadata_part(0)), part(tmp_path / "pyarrow")
    assert a.schema == b.schema and a.to_pylist() == b.to_pylist() and len(a) == 6 * 40
    info = [metadata_parts.read_part_info(DataTree(tmp_path / e).metadata_part(0)) for e in ("polars", "pyarrow")]
    assert info[0] == info[1] and info[0]["no_url"] == 40


def test_url_separator_is_refused_for_hub_rows(tmp_path, capsys):
    assert step.main(["--data-dir", str(tmp_path), "--keywords", "Lisbon", "--url-separator", ","]) == 2
    assert "--url-separator is for --source collections" in capsys.readouterr().err


def test_auto_splits_only_lists_of_http_urls():
    assert split_cell("https://a.test/1.jpg,http://b.test/2.png", "auto") == ["https://a.test/1.jpg", "http://b.test/2.png"]
    assert split_cell(CDN, "auto") == [CDN]
    assert split_cell("https://a.test/1.jpg,ftp://b.test/2.png", "auto") == ["https://a.test/1.jpg,ftp://b.test/2.png"]
    assert split_cell("", "auto") == [] and split_cell(None, ",") == []
    assert split_cell("a.jpg;;b.jpg; ", ";") == ["a.jpg", "b.jpg"]


def test_steps_04_and_05_then_work_per_image_and_keep_the_post(tmp_path, image_server, monkeypatch):  # noqa: F811
    from tests.tiny_clip import ColourClip

    good, missing = image_server.url("/hold/1"), image_server.url("/status/404")
    posts = [{"id": "77", "body": "Lisbon", "author": "ana", "images": f"{good},{missing}"}]
    data = tmp_path / "d"
    assert run(data, write_csv(tmp_path / "e.csv", posts)) == 0
    assert load_step("04_analyze_urls").main(["--data-dir", str(data)]) == 0
    urls_stats = json.loads(DataTree(data).analysis_stats("urls").read_text(encoding="utf-8"))
    assert urls_stats["rows_in"] == 2  # step 04 counts images, not posts
    step05 = load_step("05_process_images")
    monkeypatch.setattr(step05, "load_clip", lambda *a, **kw: ColourClip("hf-hub:test/colour"))
    vocab = tmp_path / "v.txt"
    vocab.write_text("red\nblue\n", encoding="utf-8")
    assert step05.main(["--data-dir", str(data), "--model", "hf-hub:test/colour", "--pretrained", "none",
                        "--device", "cpu", "--allow-private-hosts", "127.0.0.1", "--timeout", "2",
                        "--tags-vocab", str(vocab)]) == 0
    index = pq.read_table(DataTree(data).index_file(0)).to_pylist()
    assert [(r["source_id"], r["image_index"], r["status"]) for r in index] == [("77", 0, "success"), ("77", 1, "http_404")]
    assert index[0]["post_id"] == index[1]["post_id"] != index[0]["id"]
