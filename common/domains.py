"""Image URL -> registered domain -> source type, offline (step 04 counts them, step 07 shows them).

The registered domain is the public suffix plus one label ("images.bbc.co.uk" -> "bbc.co.uk"),
from tldextract's snapshot of the Public Suffix List that ships inside the package: no list is
fetched and no cache is written. Private suffixes (blogspot.com, github.io) are not split off, so
every blog on a platform counts as that platform. Hosts are lowercased, ports and user info
dropped, punycode labels decoded ("xn--mnchen-3ya.de" and "münchen.de" are one domain).

A URL without a registered domain is not dropped silently: `registered_domain` returns the
reason, one of REASONS. `domain_or_reason` is the same at a row's boundary: it never raises for
what a URL holds (an unforeseen parser failure is `bad_url`, with the error).
"""
from __future__ import annotations

import csv
import functools
import ipaddress
import re
from pathlib import Path

from common.row_errors import as_row_failure

CATEGORIES = ("stock photo", "news", "social", "e-commerce", "blog/hosting", "other")
OTHER = "other"
DEFAULT_MAP = Path(__file__).with_name("domain_categories.csv")
REASONS = {
    "missing_url": "the url is empty or null",
    "bad_url": "the url is not text, or parsing it failed (the first errors are in _stats_urls.json)",
    "not_http": "another scheme (data:, ftp:, javascript:, ...)",
    "no_host": "nothing where the host name should be",
    "bad_host": "the host has characters no host name has",
    "ip_address": "the host is an IP address, not a name",
    "no_public_suffix": "the host ends in no public suffix (localhost, a bare word, a bare suffix)",
}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_OTHER_SCHEME_RE = re.compile(r"^(?:data|javascript|mailto|blob|file|about|ftp|tel|ws|wss):", re.IGNORECASE)
_AUTHORITY_END_RE = re.compile(r"[/?#\\]")
_HOST_RE = re.compile(r"^[\w\-.]+$")


@functools.lru_cache(maxsize=1)
def _extractor():
    import tldextract

    # suffix_list_urls=() never fetches; cache_dir=None never writes: the shipped snapshot only
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True,
                                 include_psl_private_domains=False)


def host_of(url: str | None) -> tuple[str | None, str | None]:
    """(lowercase host without port or user info, None) or (None, reason)."""
    if isinstance(url, (bytes, bytearray)):  # a binary URL column: its text, bad bytes replaced
        url = bytes(url).decode("utf-8", "replace")
    elif url is not None and not isinstance(url, str):
        return None, "bad_url"
    s = (url or "").strip()
    if not s:
        return None, "missing_url"
    m = _SCHEME_RE.match(s)
    if m:
        if m.group(1).lower() not in ("http", "https"):
            return None, "not_http"
        rest = s[m.end():]
    elif s.startswith("//"):
        rest = s[2:]
    elif _OTHER_SCHEME_RE.match(s):
        return None, "not_http"
    else:
        rest = s  # no scheme: "example.com/a.jpg"
    authority = _AUTHORITY_END_RE.split(rest, maxsplit=1)[0].rpartition("@")[2]
    if authority.startswith("["):
        host = authority[1:authority.find("]")] if "]" in authority else ""
    elif authority.count(":") == 1:
        host = authority.split(":")[0]
    else:
        host = authority  # no port, or a bare IPv6 address
    host = host.strip().rstrip(".").lower()
    return (host, None) if host else (None, "no_host")


def _decode_label(label: str) -> str:
    if label.startswith("xn--"):
        try:
            return label[4:].encode("ascii").decode("punycode")
        except (UnicodeError, ValueError):
            return label
    return label


@functools.lru_cache(maxsize=1 << 18)
def domain_of_host(host: str) -> tuple[str | None, str | None]:
    """(registered domain, None) or (None, reason) for a lowercase host."""
    try:
        ipaddress.ip_address(host)
        return None, "ip_address"
    except ValueError:
        pass
    if not _HOST_RE.match(host):
        return None, "bad_host"
    host = ".".join(_decode_label(label) for label in host.split("."))
    domain = _extractor()(host).top_domain_under_public_suffix
    return (domain.lower(), None) if domain else (None, "no_public_suffix")


def registered_domain(url: str | None) -> tuple[str | None, str | None]:
    """The registered domain of an image URL, or None and the reason there is none."""
    host, reason = host_of(url)
    return domain_of_host(host) if host else (None, reason)


def domain_or_reason(url) -> tuple[str | None, str | None, str | None]:
    """(domain, reason, error): `registered_domain` for one row, whatever the row holds."""
    try:
        return (*registered_domain(url), None)
    except Exception as e:  # noqa: BLE001 (the row's boundary: see common.row_errors)
        failure = as_row_failure(e, "bad_url")
        return None, failure.status, failure.message


@functools.lru_cache(maxsize=4)
def load_categories(path: Path = DEFAULT_MAP) -> dict[str, str]:
    """domain or 'name.*' -> category, from a CSV with domain,category ('#' lines are comments)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(line for line in f if line.strip() and not line.startswith("#"))
        mapping = {r["domain"].strip().lower(): r["category"].strip() for r in rows}
    unknown = sorted({c for c in mapping.values() if c not in CATEGORIES})
    if unknown:
        raise ValueError(f"{path}: unknown categories {unknown}; use one of {', '.join(CATEGORIES)}")
    return mapping


def category_of(domain: str | None, mapping: dict[str, str] | None = None) -> str:
    """Source type of a registered domain: the exact entry, else its 'name.*' entry, else 'other'."""
    if not domain:
        return OTHER
    mapping = load_categories() if mapping is None else mapping
    found = mapping.get(domain)
    if found is None:
        found = mapping.get(domain.split(".", 1)[0] + ".*")
    return found or OTHER


def category_of_url(url: str | None, mapping: dict[str, str] | None = None) -> str:
    return category_of(domain_or_reason(url)[0], mapping)
