"""Step 03: negative filtering by whole-word terms, the removed rows kept for audit, resumable."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import load_step

step = load_step("03_clean_metadata")

PART0 = [
    "Football!",                      # removed: football
    "#football fans at the stadium",  # removed: football (named first), also names stadium
    "REAL MADRID FOOTBALL",           # removed: any case
    "table-football in a bar",        # removed: hyphen is a word edge
    "footballer signs autograph",     # kept: not the whole word
    "Madrid skyline",                 # kept
    None,                             # kept: nothing to match
]
PART3 = ["Soccer jersey shop", "Retiro park", "stadium tour"]


def write_part(folder, n, captions, extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    cols = {"url": [f"https://example.com/{n}/{i}.jpg" for i in range(len(captions))],
            "caption": pa.array(captions, pa.string()), **(extra or {})}
    pq.write_table(pa.table(cols), folder / f"part-{n:05d}.parquet")


@pytest.fixture
def data(tmp_path):
    write_part(tmp_path / "metadata", 0, PART0, {"language": ["en"] * len(PART0)})
    write_part(tmp_path / "metadata", 3, PART3)  # no language column: schemas differ between parts
    return tmp_path


def run(data, *terms, extra=()):
    return step.main(["--exclude", *terms, "--data-dir", str(data), *extra])


def captions(path):
    return pq.read_table(path).column("caption").to_pylist()


def test_removes_whole_word_matches_in_any_case_and_keeps_part_numbers(data, capsys):
    assert run(data, "football", "stadium", "soccer") == 0
    out = data / "metadata_cleaned"
    assert captions(out / "part-00000.parquet") == ["footballer signs autograph", "Madrid skyline", None]
    assert captions(out / "part-00003.parquet") == ["Retiro park"]
    excluded = pq.read_table(out / "excluded.parquet").to_pydict()
    assert dict(zip(excluded["caption"], excluded["excluded_by"])) == {
        "Football!": "football", "#football fans at the stadium": "football", "REAL MADRID FOOTBALL": "football",
        "table-football in a bar": "football", "Soccer jersey shop": "soccer", "stadium tour": "stadium"}
    assert excluded["language"].count(None) == 2  # parts without the column: nulls, not a crash
    printed = capsys.readouterr().out
    assert "'football': 4 rows removed" in printed and "'stadium': 1 rows removed" in printed


def test_stats_count_removed_rows_per_term_and_every_match(data):
    run(data, "football", "stadium", "soccer")
    stats = json.loads((data / "metadata_cleaned" / "_stats.json").read_text())
    assert (stats["rows_in"], stats["rows_out"]) == (10, 4)
    assert stats["removed_by_term"] == {"football": 4, "stadium": 1, "soccer": 1}
    assert stats["matches_per_term"] == {"football": 4, "stadium": 2, "soccer": 1}
    assert stats["dropped"] == {"excluded_by:football": 4, "excluded_by:soccer": 1, "excluded_by:stadium": 1}


def test_dry_run_prints_counts_and_samples_and_writes_nothing(data, capsys):
    assert run(data, "football", "soccer", extra=["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "5 of 10 rows would be removed" in out
    assert "'football': removes 4 (names it: 4)" in out and "      Football!" in out
    assert "      Soccer jersey shop" in out
    assert not (data / "metadata_cleaned").exists()


def test_rerun_skips_finished_parts(data, capsys):
    run(data, "football")
    first = (data / "metadata_cleaned" / "part-00000.parquet").stat().st_mtime_ns
    capsys.readouterr()
    assert run(data, "football") == 0
    assert "skipping 2 parts already cleaned" in capsys.readouterr().out
    assert (data / "metadata_cleaned" / "part-00000.parquet").stat().st_mtime_ns == first


def test_resumed_run_cleans_only_new_parts_and_counts_all(data):
    (data / "metadata" / "part-00003.parquet").rename(data / "later.parquet")
    run(data, "football", "soccer")
    (data / "later.parquet").rename(data / "metadata" / "part-00003.parquet")
    assert run(data, "football", "soccer") == 0
    stats = json.loads((data / "metadata_cleaned" / "_stats.json").read_text())
    assert stats["removed_by_term"] == {"football": 4, "soccer": 1}
    assert "Soccer jersey shop" in captions(data / "metadata_cleaned" / "excluded.parquet")


def test_other_terms_need_overwrite(data, capsys):
    run(data, "football")
    capsys.readouterr()
    assert run(data, "soccer") == 2
    assert capsys.readouterr().err.strip().endswith("pass --overwrite to redo it with --exclude soccer")
    assert run(data, "soccer", extra=["--overwrite"]) == 0
    assert "Football!" in captions(data / "metadata_cleaned" / "part-00000.parquet")


def test_empty_terms_and_missing_input_are_one_line_errors(data, tmp_path, capsys):
    assert run(data, " ") == 2
    assert capsys.readouterr().err == "error: --exclude needs at least one non-empty term, e.g. --exclude football soccer\n"
    with pytest.raises(SystemExit) as exit_info:
        step.main(["--exclude", "--data-dir", str(data)])
    assert exit_info.value.code == 2 and "--exclude" in capsys.readouterr().err
    assert step.main(["--exclude", "x", "--data-dir", str(tmp_path / "nothing")]) == 2
    assert "no part-*.parquet files" in capsys.readouterr().err


def test_removing_every_row_exits_2(tmp_path, capsys):
    write_part(tmp_path / "metadata", 0, ["football", "Football"])
    assert run(tmp_path, "football") == 2
    assert "nothing is left" in capsys.readouterr().err
    assert pq.read_table(tmp_path / "metadata_cleaned" / "excluded.parquet").num_rows == 2


def test_cleaned_parts_without_an_input_part_need_overwrite(data, capsys):
    run(data, "football")
    (data / "metadata" / "part-00003.parquet").unlink()
    capsys.readouterr()
    assert run(data, "football") == 2
    assert "holds part-00003.parquet with no matching part" in capsys.readouterr().err
    assert run(data, "football", extra=["--overwrite"]) == 0
    assert sorted(p.name for p in (data / "metadata_cleaned").glob("part-*")) == ["part-00000.parquet"]
