"""Step 01 driven through main([...]): local parquet/CSV sources, matching, resume, errors."""
from __future__ import annotations

import contextlib
import csv
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import filter_file, metadata_parts, polars_parts
from common.columns import row_id
from common.match import compile_keywords, first_match
from sample.relaion import write_corrupt_parquet, write_relaion_parquet
from tests.conftest import load_step, missing

step = load_step("01_download_and_filter")
NO_POLARS = "polars is not installed (or too old for the fast path): pip install -r requirements.txt"


@pytest.fixture(params=["polars", "pyarrow"])
def engine(request, monkeypatch):
    """Run a test on both parquet paths: polars' late-materialising reader and pyarrow row groups."""
    monkeypatch.setenv("CITY_IDENTITY_PARQUET_ENGINE", request.param)
    if request.param == "polars" and polars_parts.polars() is None:
        missing(NO_POLARS)  # the step would quietly take the pyarrow path: the test would test nothing new
    return request.param


def make_sources(folder, n_files=2, rows=400, **kw):
    return [write_relaion_parquet(folder / f"shard-{i}.parquet", rows, seed=i, rows_per_group=150, **kw)
            for i in range(n_files)]


def read_parts(data_dir) -> pa.Table:
    parts = sorted((data_dir / "metadata").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


def expected_rows(paths, keywords, mode="word", case_sensitive=False) -> list[tuple[str, str, str]]:
    """(source_file, id, keyword) for every row a plain Python regex says must be kept."""
    patterns = compile_keywords(keywords, mode, case_sensitive)
    out = []
    for path in paths:
        for row in pq.read_table(path).to_pylist():
            kw = first_match(patterns, row["caption"])
            if kw and row["url"]:
                out.append((str(path), row_id(row["url"]), kw))
    return out


def kept_rows(data_dir) -> list[tuple[str, str, str]]:
    t = read_parts(data_dir)
    return list(zip(t["source_file"].to_pylist(), t["id"].to_pylist(), t["matched_keyword"].to_pylist()))


def error_line(capsys) -> str:
    """The last line on stderr (a progress bar may come before it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


def run(data_dir, *args):
    return step.main(["--data-dir", str(data_dir), *map(str, args)])


def test_word_match_keeps_every_spelling_and_drops_near_misses(engine, tmp_path):
    sources = make_sources(tmp_path / "src")
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    assert kept_rows(tmp_path / "d") == expected_rows(sources, ["Madrid"])
    captions = set(read_parts(tmp_path / "d")["caption"].to_pylist())
    for must in ("Madrid's skyline at night", "#madrid #travel #europe", "MADRID CITY BREAK DEALS",
                 "Flights to Madrid-Barajas airport", "Vista de Madrid desde el Palacio Real", "スペイン Madrid 旅行"):
        assert must in captions
    # word edges follow Unicode letters: a Latin name glued to kana is not a whole word
    assert "Madridの街並み" not in captions
    assert not any(c.startswith(("Madridista", "Los madridistas", "supermadrid", "madrid2024")) for c in captions)


def test_output_keeps_source_columns_and_adds_id_source_file_keyword(tmp_path):
    make_sources(tmp_path / "src", n_files=1)
    assert run(tmp_path / "d", "--keywords", "madrid", "--source", tmp_path / "src") == 0
    t = read_parts(tmp_path / "d")
    assert t.column_names == ["url", "similarity", "hash", "pwatermark", "punsafe", "caption", "key", "laion_status",
                              "laion_error_message", "laion_width", "laion_height", "width", "height", "exif", "md5",
                              "id", "source_file", "matched_keyword", "post_id", "image_index"]
    assert t["id"].to_pylist() == [row_id(u) for u in t["url"].to_pylist()]
    assert set(t["matched_keyword"].to_pylist()) == {"madrid"}


def test_relaion_download_run_columns_keep_their_values_under_names_that_do_not_clash(engine, tmp_path):
    """LAION's own status/error_message become laion_*; width/height are the source image's size
    (LAION's original_*), and LAION's resized copy's size is laion_width/laion_height."""
    sources = make_sources(tmp_path / "src", n_files=1, rows=600)
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    by_key = {r["key"]: r for r in pq.read_table(sources[0]).to_pylist()}
    got = read_parts(tmp_path / "d").to_pylist()
    assert {r["laion_status"] for r in got} == {"success", "failed_to_download"}
    for row in got:
        src = by_key[row["key"]]
        assert (row["laion_status"], row["laion_error_message"]) == (src["status"], src["error_message"])
        assert (row["width"], row["height"]) == (src["original_width"], src["original_height"])
        assert (row["laion_width"], row["laion_height"]) == (src["width"], src["height"])
    part = pq.read_schema(tmp_path / "d" / "metadata" / "part-00000.parquet")
    assert part.field("width").type == pa.int32() and part.field("similarity").type == pa.float32()


def test_each_keyword_is_credited_in_the_order_given(engine, tmp_path):
    sources = make_sources(tmp_path / "src", n_files=1, rows=300)
    keywords = ["Barajas", "Madrid", "Sevilla"]
    assert run(tmp_path / "d", "--keywords", *keywords, "--source", tmp_path / "src") == 0
    got = kept_rows(tmp_path / "d")
    assert got == expected_rows(sources, keywords)
    assert {kw for _, _, kw in got} == {"Barajas", "Madrid", "Sevilla"}


@pytest.mark.parametrize("flags", [["--match", "substring"], ["--case-sensitive"], ["--match", "regex"]])
def test_match_modes_agree_with_python_regex(engine, tmp_path, flags):
    sources = make_sources(tmp_path / "src", n_files=1, rows=300)
    keywords = ["madrid|sevilla"] if "regex" in flags else ["madrid"]
    assert run(tmp_path / "d", "--keywords", *keywords, "--source", tmp_path / "src", *flags) == 0
    mode = flags[1] if flags[0] == "--match" else "word"
    assert kept_rows(tmp_path / "d") == expected_rows(sources, keywords, mode, "--case-sensitive" in flags)


def test_stats_count_scanned_matched_dropped_and_unreadable_files(engine, tmp_path, capsys):
    sources = make_sources(tmp_path / "src", n_files=2, rows=300)
    write_corrupt_parquet(tmp_path / "src" / "shard-0b-truncated.parquet")
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    err = capsys.readouterr().err
    assert "skipped " + str(tmp_path / "src" / "shard-0b-truncated.parquet") + ": ArrowInvalid" in err
    doc = json.loads((tmp_path / "d" / "metadata" / "_stats.json").read_text())
    kept = expected_rows(sources, ["Madrid"])
    assert doc["rows_in"] == 600 and doc["rows_out"] == len(kept)
    assert doc["files_done"] == 2
    assert doc["files_failed"][0]["file"].endswith("shard-0b-truncated.parquet")
    assert "magic bytes" in doc["files_failed"][0]["reason"]
    no_url = doc["dropped"]["no_url"]
    assert no_url > 0 and doc["matched_per_keyword"] == {"Madrid": len(kept) + no_url}
    assert doc["dropped"]["caption_without_keyword"] == 600 - len(kept) - no_url
    # the broken file keeps its part number free: parts are named by place in the sorted list
    names = sorted(p.name for p in (tmp_path / "d" / "metadata").glob("part-*.parquet"))
    assert names == ["part-00000.parquet", "part-00002.parquet"]


def test_rerun_skips_finished_files_and_says_so(tmp_path, capsys):
    make_sources(tmp_path / "src")
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    part = tmp_path / "d" / "metadata" / "part-00000.parquet"
    before = part.stat().st_mtime_ns
    capsys.readouterr()
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    assert "skipping 2 finished file(s) of 2" in capsys.readouterr().out
    assert part.stat().st_mtime_ns == before
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src", "--overwrite") == 0
    assert part.stat().st_mtime_ns != before


def test_interrupt_after_first_file_then_resume_equals_clean_run(engine, tmp_path, monkeypatch, capsys):
    make_sources(tmp_path / "src", n_files=3)
    assert run(tmp_path / "clean", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    calls = []

    def interrupt(report):
        calls.append(report.source.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(step, "_after_file", interrupt)
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src", "--workers", "1") == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    meta = tmp_path / "d" / "metadata"
    assert len(list(meta.glob("part-*.parquet"))) == 1 and not list(meta.glob("*.tmp"))
    assert not (meta / "_stats.json").exists()
    monkeypatch.undo()
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    assert "skipping 1 finished file(s) of 3" in capsys.readouterr().out
    assert read_parts(tmp_path / "d").equals(read_parts(tmp_path / "clean"))


def test_parallel_workers_write_the_same_parts_as_one_worker(tmp_path):
    make_sources(tmp_path / "src", n_files=3)
    assert run(tmp_path / "one", "--keywords", "Madrid", "--source", tmp_path / "src", "--workers", "1") == 0
    assert run(tmp_path / "three", "--keywords", "Madrid", "--source", tmp_path / "src", "--workers", "3") == 0
    assert read_parts(tmp_path / "one").equals(read_parts(tmp_path / "three"))


def test_other_keywords_on_a_used_data_dir_need_overwrite(tmp_path, capsys):
    make_sources(tmp_path / "src", n_files=1)
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    capsys.readouterr()
    assert run(tmp_path / "d", "--keywords", "Sevilla", "--source", tmp_path / "src") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'd' / 'metadata' / 'part-00000.parquet'} was made from another file or with "
                   "other keywords/--match: pass --overwrite to redo it, or use another --data-dir")


def write_tcat_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_tcat_csv_export_keeps_tweet_id_apart_from_row_id(tmp_path):
    rows = [["1001", "Sunset over #Madrid\nwhat a view", "https://pbs.twimg.com/media/a.jpg", "ana"],
            ["1002", "Nothing to see here", "https://pbs.twimg.com/media/b.jpg", "bo"],
            ["1003", "MADRID derby tonight", "", "cy"],
            ["1004", "Madridista forever", "https://pbs.twimg.com/media/d.jpg", "di"]]
    src = write_tcat_csv(tmp_path / "tcat.csv", ["id", "text", "media_url", "from_user_name"], rows)
    assert run(tmp_path / "d", "--keywords", "madrid", "--source", src,
               "--url-column", "media_url", "--caption-column", "text") == 0
    t = read_parts(tmp_path / "d").to_pylist()
    assert len(t) == 1
    assert t[0]["caption"] == "Sunset over #Madrid\nwhat a view"
    assert t[0]["url"] == "https://pbs.twimg.com/media/a.jpg" and t[0]["id"] == row_id(t[0]["url"])
    assert t[0]["source_id"] == "1001" and t[0]["from_user_name"] == "ana"


def test_csv_without_known_columns_asks_for_the_column_flags(tmp_path, capsys):
    src = write_tcat_csv(tmp_path / "x.csv", ["link", "words"], [["https://a.example/1.jpg", "Madrid"]])
    assert run(tmp_path / "d", "--keywords", "madrid", "--source", src) == 2
    assert capsys.readouterr().err.strip() == (f"error: no image URL column is in {src} (it has: link, words): "
                                               "pass --url-column NAME")
    assert run(tmp_path / "d", "--keywords", "madrid", "--source", src, "--url-column", "link",
               "--caption-column", "words") == 0
    assert read_parts(tmp_path / "d")["url"].to_pylist() == ["https://a.example/1.jpg"]


def test_zero_matches_is_an_error_not_an_empty_success(tmp_path, capsys):
    make_sources(tmp_path / "src", n_files=1, rows=200)
    assert run(tmp_path / "d", "--keywords", "Zzyzx", "--source", tmp_path / "src") == 2
    assert error_line(capsys) == ("error: no caption names Zzyzx in 200 rows of 1 file(s): check the "
                                               "spelling, try --match substring, or read more files")
    assert not (tmp_path / "d" / "metadata" / "_stats.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--keywords", "Madrid", "--source", "nowhere/at/all.parquet"], "error: --source nowhere/at/all.parquet: no such file or folder"),
    (["--keywords", "Madrid", "--subset", "klingon"],
     "error: unknown subset 'klingon': choose one or more of multi, en, nolang, or all"),
    (["--keywords", "Madrid", "--subset", "en", "multi", "--source", "."],
     "error: --source files are copies of at most one subset: give one --subset with --source, or none"),
    (["--keywords", "Madrid", "--subset", "all", "--repo", "org/mirror"],
     "error: --repo reads one mirror of one subset: give one --subset with it"),
    (["--keywords", "Madrid", "--match", "fuzzy", "--source", "."], "error: unknown --match 'fuzzy': choose one of word, substring, regex"),
    (["--keywords", " ", "--source", "."], "error: --keywords are all blank: give at least one word, e.g. --keywords Madrid"),
    (["--keywords", "(?<=x)Madrid", "--match", "regex", "--source", "."], "error: --keywords is not a valid regular expression"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert run(tmp_path / "d", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_a_folder_without_data_files_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "empty") == 2
    assert "error: no parquet, CSV or JSON Lines files in --source" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, which refuses every write with ENOSPC")
def test_disk_full_while_writing_a_part_is_one_line(engine, tmp_path, monkeypatch, capsys):
    make_sources(tmp_path / "src", n_files=1)

    @contextlib.contextmanager
    def full_disk(path):  # every part's temporary file is /dev/full
        tmp = path.with_name(path.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.symlink_to("/dev/full")
        try:
            yield tmp
        finally:
            tmp.unlink()

    monkeypatch.setattr(polars_parts, "atomic_path", full_disk)
    monkeypatch.setattr(metadata_parts, "atomic_path", full_disk)
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 2
    err = error_line(capsys)
    assert err.startswith("error: disk full while writing part-00000.parquet.tmp")
    assert not list((tmp_path / "d" / "metadata").glob("part-*"))


def test_every_flag_has_help():
    for action in step.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_both_parquet_paths_write_identical_parts(tmp_path, monkeypatch):
    make_sources(tmp_path / "src", n_files=2, rows=600)
    keywords = ["Madrid", "Barajas", "São Paulo"]
    for name in ("polars", "pyarrow"):
        monkeypatch.setenv("CITY_IDENTITY_PARQUET_ENGINE", name)
        assert run(tmp_path / name, "--keywords", *keywords, "--source", tmp_path / "src") == 0
    assert read_parts(tmp_path / "polars").equals(read_parts(tmp_path / "pyarrow"))


def test_a_file_corrupt_inside_a_row_group_is_skipped_with_its_reason(engine, tmp_path, capsys):
    good = write_relaion_parquet(tmp_path / "src" / "a.parquet", 3_000, rows_per_group=1_000)
    bad = tmp_path / "src" / "b.parquet"
    data = bytearray(write_relaion_parquet(bad, 3_000, seed=5, rows_per_group=1_000).read_bytes())
    page = pq.read_metadata(bad).row_group(1).column(1).data_page_offset  # the caption column
    data[page + 40: page + 4_000] = bytes((i * 37) % 256 for i in range(3_960))
    bad.write_bytes(bytes(data))
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    doc = json.loads((tmp_path / "d" / "metadata" / "_stats.json").read_text())
    assert [f["file"] for f in doc["files_failed"]] == [str(bad)]
    assert "thrift" in doc["files_failed"][0]["reason"]
    assert kept_rows(tmp_path / "d") == expected_rows([good], ["Madrid"])
    assert not (tmp_path / "d" / "metadata" / "part-00001.parquet").exists()


def test_a_polars_part_whose_footer_does_not_add_up_is_redone_on_the_pyarrow_path(tmp_path, monkeypatch):
    """The footer's counts come from a polars callback run once the last row is written; should a
    polars version call it earlier, the check catches the mismatch and the file is redone."""
    if polars_parts.polars() is None:
        missing(NO_POLARS)
    sources = make_sources(tmp_path / "src", n_files=1)
    early = {}
    monkeypatch.setattr(polars_parts, "read_part_info", lambda path: early)  # as if written before any row
    redone = []
    monkeypatch.setattr(filter_file, "PartWriter", lambda *a: redone.append(a) or metadata_parts.PartWriter(*a))
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", tmp_path / "src") == 0
    assert len(redone) == 1
    assert kept_rows(tmp_path / "d") == expected_rows(sources, ["Madrid"])
    info = metadata_parts.read_part_info(tmp_path / "d" / "metadata" / "part-00000.parquet")
    assert info["rows_written"] == len(expected_rows(sources, ["Madrid"])) and info["rows_scanned"] == 400


def test_parquet_columns_that_clash_with_added_ones_keep_their_data_under_source_names(engine, tmp_path):
    src = tmp_path / "src" / "export.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"id": ["t1", "t2"], "media_url": ["http://a.test/x.jpg", "http://a.test/y.jpg"],
                             "text": ["Madrid!", "Paris"], "url": ["http://page.test/1", "http://page.test/2"],
                             "status": ["posted", "deleted"]}), src)
    assert run(tmp_path / "d", "--keywords", "Madrid", "--source", src,
               "--url-column", "media_url", "--caption-column", "text") == 0
    t = read_parts(tmp_path / "d")
    # step 05 writes `status` on every row: the source's own keeps its data as source_status
    assert t.column_names == ["source_id", "url", "caption", "source_url", "source_status", "id", "source_file",
                              "matched_keyword", "post_id", "image_index"]
    assert t.to_pylist() == [{"source_id": "t1", "url": "http://a.test/x.jpg", "caption": "Madrid!",
                              "source_url": "http://page.test/1", "source_status": "posted", "id": row_id("http://a.test/x.jpg"),
                              "source_file": str(src), "matched_keyword": "Madrid",
                              "post_id": row_id("http://a.test/x.jpg"), "image_index": 0}]
