"""The generated RE-LAION-like sample has the schema and the awkward rows the pipeline must face."""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq

from sample.relaion import BAD_URLS, hub_files, relaion_table, write_relaion_parquet


def test_schema_follows_relaion_research_columns(tmp_path):
    path = write_relaion_parquet(tmp_path / "s.parquet", 500, rows_per_group=200)
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow == pa.schema([
        ("url", pa.string()), ("similarity", pa.float32()), ("hash", pa.int64()), ("pwatermark", pa.float32()),
        ("punsafe", pa.float32()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
        ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("original_width", pa.int32()), ("original_height", pa.int32()), ("exif", pa.string()), ("md5", pa.string())])
    assert pf.metadata.num_rows == 500 and pf.metadata.num_row_groups == 3
    assert pf.metadata.row_group(0).column(0).compression == "SNAPPY"
    names = relaion_table(50, language=True).column_names
    assert names.index("language") == names.index("caption") + 1


def test_laion_download_run_columns_are_null_where_it_failed_and_sizes_otherwise():
    rows = relaion_table(3_000, seed=2).to_pylist()
    failed = [r for r in rows if r["status"] == "failed_to_download"]
    ok = [r for r in rows if r["status"] == "success"]
    assert len(failed) > 100 and len(ok) > 2_000
    assert all(r["error_message"] and r["width"] is None and r["original_width"] is None and r["md5"] is None
               for r in failed)
    assert all(r["error_message"] is None and len(r["md5"]) == 32 for r in ok)
    # LAION's resized copy is never larger than the source image
    assert all(r["width"] <= r["original_width"] and r["height"] <= r["original_height"] for r in ok)
    assert any(r["width"] < r["original_width"] for r in ok)
    assert [r["key"] for r in rows[:3]] == ["000000000", "000000001", "000000002"]


def test_hub_file_names_are_sparks_with_one_job_uuid():
    names = hub_files()
    assert len(names) == 128 and names == sorted(names)
    assert re.fullmatch(r"part-00000-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-c000\.snappy\.parquet", names[0])
    assert len({n[len("part-00000-"):] for n in names}) == 1 and names[127].startswith("part-00127-")


def test_sample_holds_spellings_near_misses_nulls_long_captions_duplicates_and_bad_urls():
    rows = relaion_table(2_000, seed=1, language=True).to_pylist()
    captions = [r["caption"] for r in rows]
    for text in ("Madrid's skyline at night", "#madrid #travel #europe", "MADRID CITY BREAK DEALS",
                 "Flights to Madrid-Barajas airport", "Madridista fan scarf, size L"):
        assert text in captions
    assert None in captions and "" in captions
    assert max(len(c or "") for c in captions) > 5_000
    pairs = [(r["url"], r["caption"]) for r in rows if r["url"]]
    assert len(pairs) > len(set(pairs))  # exact duplicates
    urls = {r["url"] for r in rows}
    assert set(BAD_URLS) <= urls
    assert len({r["language"] for r in rows}) >= 8


def test_same_seed_same_table_other_seed_other_rows():
    assert relaion_table(1_000, seed=7).equals(relaion_table(1_000, seed=7))
    assert not relaion_table(1_000, seed=7).equals(relaion_table(1_000, seed=8))


def test_image_base_url_points_web_urls_at_the_local_host_and_keeps_bad_ones():
    t = relaion_table(600, seed=2, image_base_url="http://127.0.0.1:8765/").to_pylist()
    web = [r["url"] for r in t if r["url"] and r["url"].startswith("http://127.0.0.1:8765/img/")]
    assert len(web) > 500
    assert {r["url"] for r in t} >= set(BAD_URLS)  # private, loopback and broken URLs stay as they are
    # rows that were duplicates in the source still share one URL
    by_caption = {}
    for r in t:
        if r["caption"] == "Flowers on a balcony in Madrid":
            by_caption.setdefault(r["caption"], set()).add(r["url"])
    assert [len(v) for v in by_caption.values()] == [1]
