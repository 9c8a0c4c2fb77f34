"""Step 04: registered domains offline, reasons for URLs without one, source types."""
from __future__ import annotations

import json
import socket

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import domains
from common.domains import category_of, category_of_url, registered_domain
from tests.conftest import load_step

step = load_step("04_analyze_urls")


@pytest.mark.parametrize("url, expected", [
    ("https://images.bbc.co.uk/news/a.jpg", "bbc.co.uk"),
    ("http://WWW.Shutterstock.COM/x.jpg", "shutterstock.com"),            # uppercase
    ("http://cdn.example.com:8080/x.jpg", "example.com"),                 # port
    ("https://user:secret@img.example.org/x", "example.org"),             # user info
    ("example.com:8080/a.jpg", "example.com"),                            # no scheme, with port
    ("//i.pinimg.com/originals/a.jpg", "pinimg.com"),                     # scheme-relative
    ("i.pinimg.com/a.jpg", "pinimg.com"),                                 # no scheme at all
    ("http://xn--mnchen-3ya.de/a.jpg", "münchen.de"),                     # punycode ...
    ("http://München.DE/b.jpg", "münchen.de"),                            # ... and Unicode: one domain
    ("https://xn--e1afmkfd.xn--p1ai/x", "пример.рф"),                     # punycode suffix too
    ("https://3.bp.blogspot.com/a.jpg", "blogspot.com"),                  # private suffixes not split off
    ("http://www.example.co.uk./x", "example.co.uk"),                     # trailing dot
])
def test_registered_domain_of_messy_urls(url, expected):
    assert registered_domain(url) == (expected, None)


@pytest.mark.parametrize("url, reason", [
    (None, "missing_url"), ("   ", "missing_url"),
    ("http://192.168.0.1/a.jpg", "ip_address"), ("10.0.0.1:8000/x", "ip_address"),
    ("http://[2001:db8::1]:443/x", "ip_address"),
    ("data:image/png;base64,AAAA", "not_http"), ("ftp://example.com/a.jpg", "not_http"),
    ("javascript:alert(1)", "not_http"),
    ("http:///a.jpg", "no_host"), ("http://exa mple.com/a", "bad_host"),
    ("http://localhost/a.jpg", "no_public_suffix"), ("garbage", "no_public_suffix"),
    ("http://co.uk/a.jpg", "no_public_suffix"),
])
def test_urls_without_a_domain_get_a_reason(url, reason):
    assert registered_domain(url) == (None, reason)


def test_domains_come_from_the_shipped_list_without_network_or_cache(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("domain lookup tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("TLDEXTRACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    domains._extractor.cache_clear()
    domains.domain_of_host.cache_clear()
    assert registered_domain("https://news.bbc.co.uk/a.jpg") == ("bbc.co.uk", None)
    assert registered_domain("https://a.b.example.com.au/x") == ("example.com.au", None)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "home").exists()


def test_categories_from_the_shipped_map_with_any_suffix_entries(tmp_path):
    assert category_of("shutterstock.com") == "stock photo"
    assert category_of("pinimg.com") == "social"
    assert category_of("amazon.co.uk") == "e-commerce" and category_of("amazon.de") == "e-commerce"
    assert category_of("bbc.co.uk") == "news" and category_of("blogspot.com") == "blog/hosting"
    assert category_of("example.com") == "other" and category_of(None) == "other"
    assert category_of_url("https://m.media-amazon.com/images/a.jpg") == "e-commerce"


URLS = (["https://i.pinimg.com/a.jpg"] * 4 + ["http://WWW.Shutterstock.com:443/x.jpg"] * 3
        + ["https://news.bbc.co.uk/1.jpg", "http://1.2.3.4/x.jpg", "garbage", None, "https://www.amazon.de/a.jpg"])


def write_part(folder, n, urls):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"url": pa.array(urls, pa.string()), "caption": ["Madrid"] * len(urls)}),
                   folder / f"part-{n:05d}.parquet")


@pytest.fixture
def data(tmp_path):
    write_part(tmp_path / "metadata", 0, URLS[:6])
    write_part(tmp_path / "metadata", 1, URLS[6:])
    return tmp_path


def test_main_writes_ranked_domains_with_shares_and_categories(data, capsys):
    assert step.main(["--data-dir", str(data)]) == 0
    top = pd.read_csv(data / "analysis" / "top_domains.csv")
    assert list(top.columns) == ["domain", "count", "share", "cumulative_share", "category"]
    assert top["domain"].tolist() == ["pinimg.com", "shutterstock.com", "amazon.de", "bbc.co.uk"]
    assert top["count"].tolist() == [4, 3, 1, 1]
    assert top["share"].tolist() == pytest.approx([4 / 12, 3 / 12, 1 / 12, 1 / 12], abs=1e-6)
    assert top["cumulative_share"].iloc[-1] == pytest.approx(9 / 12, abs=1e-6)  # 3 URLs have no domain
    assert top["category"].tolist() == ["social", "stock photo", "e-commerce", "news"]
    cats = pd.read_csv(data / "analysis" / "domain_categories.csv").set_index("category")
    assert cats.loc["social", "count"] == 4 and cats.loc["blog/hosting", "count"] == 0
    assert cats.loc["(no registered domain)", "count"] == 3
    assert cats["share"].sum() == pytest.approx(1.0, abs=1e-5)
    assert (data / "analysis" / "top_domains.png").read_bytes()[:4] == b"\x89PNG"
    stats = json.loads((data / "analysis" / "_stats_urls.json").read_text())
    assert (stats["rows_in"], stats["rows_out"]) == (12, 9)
    assert stats["dropped"] == {"ip_address": 1, "missing_url": 1, "no_public_suffix": 1}
    assert "4 domains" in capsys.readouterr().out


def test_rerun_skips_and_reads_cleaned_rows_once_step_03_finished(data, capsys):
    step.main(["--data-dir", str(data)])
    capsys.readouterr()
    assert step.main(["--data-dir", str(data)]) == 0
    assert "already analysed" in capsys.readouterr().out
    write_part(data / "metadata_cleaned", 0, ["https://static01.nyt.com/a.jpg"])
    (data / "metadata_cleaned" / "_stats.json").write_text("{}")
    assert step.main(["--data-dir", str(data)]) == 0
    top = pd.read_csv(data / "analysis" / "top_domains.csv")
    assert top["domain"].tolist() == ["nyt.com"] and top["category"].tolist() == ["news"]


def test_own_category_map(data, tmp_path):
    own = tmp_path / "mine.csv"
    own.write_text("# my map\ndomain,category\npinimg.com,blog/hosting\nbbc.*,news\n", encoding="utf-8")
    assert step.main(["--data-dir", str(data), "--categories", str(own)]) == 0
    top = pd.read_csv(data / "analysis" / "top_domains.csv").set_index("domain")
    assert top.loc["pinimg.com", "category"] == "blog/hosting"
    assert top.loc["shutterstock.com", "category"] == "other"


def test_user_mistakes_are_one_line_and_exit_2(data, tmp_path, capsys):
    assert step.main(["--data-dir", str(tmp_path / "none")]) == 2
    assert "no part-*.parquet files" in capsys.readouterr().err
    assert step.main(["--data-dir", str(data), "--categories", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("domain,category\nexample.com,tabloid\n", encoding="utf-8")
    assert step.main(["--data-dir", str(data), "--categories", str(bad)]) == 2
    assert "unknown categories ['tabloid']" in capsys.readouterr().err
