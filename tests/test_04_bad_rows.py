"""Step 04: no URL stops the count. Whatever a URL cell holds, it is a domain or a named reason."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings, strategies as st

from common import domains
from common.domains import REASONS, domain_or_reason
from tests.conftest import load_step
from tests.odd_inputs import http_urls, hosts, urls

step = load_step("04_analyze_urls")
DOMAIN_EXAMPLES = 300
PROPERTY = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(max_examples=DOMAIN_EXAMPLES, **PROPERTY)
@given(st.one_of(urls, http_urls, hosts.map(lambda h: f"http://{h}/a.jpg"), st.none(), st.binary(max_size=40)))
def test_every_url_cell_gives_a_domain_or_a_reason(url):
    domain, reason, error = domain_or_reason(url)
    assert (domain is None) != (reason is None)
    assert domain is None or (isinstance(domain, str) and domain)
    assert reason is None or reason in REASONS
    assert domains.category_of_url(url) in domains.CATEGORIES


def test_a_parser_failure_is_the_rows_reason_and_the_count_goes_on(tmp_path, monkeypatch, capsys):
    real = domains.host_of

    def breaks_on_one(url):
        if url == "http://[::1":
            raise ValueError("Invalid IPv6 URL")
        return real(url)

    monkeypatch.setattr(domains, "host_of", breaks_on_one)
    (tmp_path / "metadata").mkdir()
    urls_ = ["https://images.bbc.co.uk/a.jpg", "http://[::1", "https://cdn.example.com/b.jpg", None, "ftp://x.org/c"]
    pq.write_table(pa.table({"url": pa.array(urls_, pa.string()), "caption": ["Madrid"] * 5}),
                   tmp_path / "metadata" / "part-00000.parquet")
    assert step.main(["--data-dir", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "analysis" / "_stats_urls.json").read_text())
    assert stats["dropped"] == {"bad_url": 1, "missing_url": 1, "not_http": 1}
    assert stats["url_errors"] == [{"url": "http://[::1", "reason": "bad_url", "error": "ValueError: Invalid IPv6 URL"}]
    assert stats["rows_out"] == 2


def test_a_binary_url_column_is_read_as_text(tmp_path):
    (tmp_path / "metadata").mkdir()
    pq.write_table(pa.table({"url": pa.array([b"https://images.bbc.co.uk/a.jpg", b"http://\xff\xfe.com/x"]),
                             "caption": ["Madrid"] * 2}), tmp_path / "metadata" / "part-00000.parquet")
    assert step.main(["--data-dir", str(tmp_path)]) == 0
    stats = json.loads((tmp_path / "analysis" / "_stats_urls.json").read_text())
    assert stats["rows_out"] == 1 and stats["dropped"] == {"bad_host": 1}
