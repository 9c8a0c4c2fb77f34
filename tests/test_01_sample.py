"""The generated RE-LAION-like sample has the schema and the awkward rows the pipeline must face."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from sample.relaion import BAD_URLS, relaion_table, write_relaion_parquet


def test_schema_follows_relaion_research_columns(tmp_path):
    path = write_relaion_parquet(tmp_path / "s.parquet", 500, rows_per_group=200)
    pf = pq.ParquetFile(path)
    assert pf.schema_arrow == pa.schema([("url", pa.string()), ("caption", pa.string()), ("similarity", pa.float64()),
                                         ("width", pa.int64()), ("height", pa.int64()), ("language", pa.string()),
                                         ("punsafe", pa.float64()), ("pwatermark", pa.float64())])
    assert pf.metadata.num_rows == 500 and pf.metadata.num_row_groups == 3
    assert "language" not in relaion_table(50, subset="en").column_names


def test_sample_holds_spellings_near_misses_nulls_long_captions_duplicates_and_bad_urls():
    rows = relaion_table(2_000, seed=1).to_pylist()
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
