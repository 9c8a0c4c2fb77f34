"""Step 07: no row stops the export. A missing thumbnail whose URL is odd, whose download fails in a
way nobody foresaw, or whose file cannot be written is counted under its reason; the map is made."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from common.export import thumbs as export_thumbs
from common.export.rows import registered_domains
from common.paths import DataTree
from sample import images as sample_images
from tests.conftest import load_step
from tests.image_server import ImageHost, image_server  # noqa: F401
from tests.loopback_fetcher import loopback_fetcher
from tests.odd_inputs import http_urls, urls
from tests.test_07_helpers import make_inputs

step = load_step("07_export_for_web")
DOWNLOAD_EXAMPLES = 100
DOMAIN_EXAMPLES = 100
PROPERTY = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fetcher():
    host = ImageHost().start()
    with loopback_fetcher(host) as f:
        yield f
    host.stop()


@settings(max_examples=DOWNLOAD_EXAMPLES, **PROPERTY)
@given(url=st.one_of(urls, http_urls, st.none()))
def test_no_url_makes_a_missing_thumbnail_download_raise(fetcher, tmp_path, url):
    status, error = export_thumbs.download_one(fetcher, url, tmp_path / "t.jpg")
    assert isinstance(status, str) and status and (status == "success" or error)


@settings(max_examples=DOMAIN_EXAMPLES, **PROPERTY)
@given(st.lists(st.one_of(urls, http_urls, st.none()), min_size=1, max_size=8))
def test_every_row_gets_a_domain_or_none(urls_):
    names = registered_domains(np.asarray(urls_, dtype=object))
    assert len(names) == len(urls_) and all(isinstance(n, str) for n in names)


def test_odd_urls_and_unforeseen_failures_are_counted_and_the_export_is_made(tmp_path, image_server, monkeypatch):
    good = [image_server.add(f"r{i}.jpg", sample_images.jpeg((20 * i, 90, 200))) for i in range(4)]
    odd = ["http://[::1", "http://[::1]:99999/x.jpg", "http://a..b/x.jpg", "javascript:alert(1)"]
    real = export_thumbs.save_thumbnail

    def fails_for_the_first(img, dst, size):
        if dst.stem == gen.ids[0]:
            raise RuntimeError("injected")
        return real(img, dst, size)

    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=8, seed=3, tags=False, thumbs=False, urls=good + odd)
    monkeypatch.setattr(export_thumbs, "save_thumbnail", fails_for_the_first)
    code = step.main(["--data-dir", str(tree.root), "--allow-private-hosts", "--poster-size", "0", "--levels", "16",
                      "--retries", "0", "--timeout", "5", "--no-gephi"])
    assert code == 0 and tree.manifest_file.exists()
    thumbs = json.loads((tree.export / "_stats.json").read_text())["thumbnails"]
    assert thumbs["download success"] == 3 and thumbs["download write_error"] == 1 and thumbs["download bad_url"] == 4
    errors = thumbs["download errors, first of each"]
    assert errors["write_error"] == f"{good[0]}: RuntimeError: injected" and "bad_url" in errors
    assert [tree.export_thumbnail(i).exists() for i in gen.ids] == [False, True, True, True] + [False] * 4


def test_an_unreadable_cached_thumbnail_is_counted_and_the_export_is_made(tmp_path, capsys):
    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=6, seed=4, tags=False, thumbs=False)
    tree.images.mkdir(parents=True, exist_ok=True)
    for i in gen.ids:  # larger than the export size, so each is shrunk (decoded), not linked
        tree.thumbnail(i).write_bytes(sample_images.jpeg((200, 40, 40), (300, 200)))
    tree.thumbnail(gen.ids[2]).write_bytes(b"\xff\xd8 not a jpeg after all")
    code = step.main(["--data-dir", str(tree.root), "--no-download-missing", "--poster-size", "0",
                      "--levels", "16", "--no-gephi"])
    assert code == 0 and tree.manifest_file.exists()
    thumbs = json.loads((tree.export / "_stats.json").read_text())["thumbnails"]
    assert thumbs["unusable in step 05's cache"] == 1 and thumbs["without a thumbnail"] == 1
    assert [tree.export_thumbnail(i).exists() for i in gen.ids] == [True, True, False, True, True, True]
