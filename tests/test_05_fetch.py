"""common.fetch and common.images against the loopback image host: every fault ends in its status."""
from __future__ import annotations

import concurrent.futures as cf

import pytest

from common.fetch import USER_AGENT, Fetcher, is_public, retry_after_seconds, robots_forbid
from common.images import ImageRejected, decode
from sample import images as sample
from tests.image_server import GOOD_COLOUR, image_server  # noqa: F401

RED = (220, 30, 30)


def fetcher(**kw) -> Fetcher:
    options = dict(timeout=0.5, retries=2, allow_private_hosts={"127.0.0.1"}, backoff=0.01)
    return Fetcher(**{**options, **kw})


@pytest.mark.parametrize("route, status", [
    ("/status/404", "http_404"),
    ("/status/403", "http_403"),
    ("/status/410", "http_410"),
    ("/html", "not_an_image"),
    ("/bomb", "too_large"),
    ("/loop/a", "redirect_loop"),
    ("/to-private", "private_address"),
    ("/noai", "robots_noai"),
    ("/truncated", "truncated"),
])
def test_each_fault_ends_in_its_status(image_server, route, status):
    result = fetcher().fetch(image_server.url(route))
    assert (result.status, result.image) == (status, None)
    assert result.error


def test_gone_forbidden_and_missing_are_not_retried(image_server):
    f = fetcher()
    for code in (403, 404, 410):
        assert f.fetch(image_server.url(f"/status/{code}")).attempts == 1
        assert len(image_server.hits(f"/status/{code}")) == 1


def test_server_errors_are_retried_a_bounded_number_of_times(image_server):
    result = fetcher(retries=2).fetch(image_server.url("/status/503"))
    assert result.status == "http_503" and result.attempts == 3 and "after 3 attempts" in result.error
    assert len(image_server.hits("/status/503")) == 3


def test_429_waits_for_retry_after_then_succeeds(image_server):
    result = fetcher().fetch(image_server.url("/once429/k"))
    assert result.status == "success" and result.attempts == 2
    (_, _, first), (_, _, second) = image_server.hits("/once429/k")
    assert second - first >= 0.9  # the server said Retry-After: 1


def test_500_then_success(image_server):
    result = fetcher().fetch(image_server.url("/once500/k"))
    assert result.status == "success" and result.image.getpixel((5, 5)) == pytest.approx(GOOD_COLOUR, abs=3)


def test_slow_server_times_out(image_server):
    result = fetcher(retries=0).fetch(image_server.url("/slow"))
    assert result.status == "timeout"


def test_private_addresses_refused_unless_allowed(image_server):
    assert fetcher(allow_private_hosts=False).fetch(image_server.url("/img/x")).status == "private_address"
    assert image_server.hits("/img/x") == []  # refused before connecting
    assert fetcher(allow_private_hosts={"10.0.0.1"}).fetch(image_server.url("/x")).status == "private_address"
    assert fetcher(allow_private_hosts=True).fetch(image_server.url("/to-private")).status != "private_address"


@pytest.mark.parametrize("url, status", [
    ("ftp://example.org/a.jpg", "bad_url"),
    ("file:///etc/passwd", "bad_url"),
    ("http:///nohost.jpg", "bad_url"),
    ("http://169.254.169.254/latest/meta-data", "private_address"),
    ("http://[::1]:9/x.jpg", "private_address"),
])
def test_unsafe_urls_refused_without_a_request(url, status):
    assert Fetcher(allow_private_hosts=False).fetch(url).status == status


def test_noai_can_be_ignored_explicitly(image_server):
    assert fetcher(respect_noai=False).fetch(image_server.url("/noai")).status == "success"


def test_user_agent_names_the_project(image_server):
    url = image_server.add("ua.jpg", sample.jpeg())
    assert fetcher().fetch(url).ok
    (_, headers, _), = image_server.hits("/img/ua.jpg")
    assert headers["User-Agent"] == USER_AGENT and "CityIdentityExplorer" in USER_AGENT


def test_byte_cap_refuses_big_bodies(image_server):
    url = image_server.add("big.png", sample.png(size=(400, 400)), "image/png")
    result = fetcher(max_bytes=500).fetch(url)
    assert result.status == "too_large"


def test_content_decides_not_content_type(image_server):
    url = image_server.add("mislabelled", sample.png(RED), "text/html")
    result = fetcher().fetch(url)
    assert result.ok and result.image.getpixel((3, 3)) == RED


def test_per_host_cap_bounds_requests_in_flight(image_server):
    image_server.hold_seconds = 0.15
    f = fetcher(per_host=2, timeout=10)  # no client timeout: a retry would overlap the abandoned request
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(f.fetch, [image_server.url(f"/hold/{i}") for i in range(8)]))
    assert all(r.ok for r in results)
    assert image_server.peak_in_flight <= 2


@pytest.mark.parametrize("fmt", sample.FORMATS)
def test_every_image_form_decodes_to_rgb(fmt):
    img = decode(sample.in_format(fmt, RED, (64, 48)), max_pixels=10_000_000)
    assert img.mode == "RGB"
    expected_size = (48, 64) if fmt == "exif_rotated" else (64, 48)
    assert img.size == expected_size
    pixel = img.getpixel((2, 2))
    if fmt == "png16":
        assert pixel == pytest.approx((156, 156, 156), abs=1)  # 40000/65535 of white, not clipped to 255
    else:
        assert pixel == pytest.approx(RED, abs=4)


def test_transparent_pixels_become_white():
    img = decode(sample.alpha_png(RED, (64, 48)), max_pixels=10_000_000)
    assert img.getpixel((60, 10)) == (255, 255, 255)


def test_pixel_cap_checked_from_the_header():
    with pytest.raises(ImageRejected) as e:
        decode(sample.bomb_png(10_000, 10_000), max_pixels=60_000_000)
    assert e.value.status == "too_large"


@pytest.mark.parametrize("values, expected", [
    (["noai"], "noai"),
    (["noindex, noimageai"], "noimageai"),
    (["otherbot: noai"], None),
    (["cityidentityexplorer: noai"], "noai"),
    (["*: noimageai"], "noimageai"),
    (["noindex", "nofollow"], None),
])
def test_robots_directives_scoped_to_other_crawlers_do_not_apply(values, expected):
    assert robots_forbid(values) == expected


def test_retry_after_reads_seconds_and_dates():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None


def test_public_address_check():
    assert is_public("93.184.216.34") and not is_public("127.0.0.1") and not is_public("10.1.2.3")
    assert not is_public("::ffff:192.168.0.1") and not is_public("fe80::1") and not is_public("169.254.1.1")
