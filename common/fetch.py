"""Polite, safe image downloads from the open web (step 05 fetches, step 07 fills gaps).

    fetcher = Fetcher(timeout=10, retries=2, allow_private_hosts=False)
    result = fetcher.fetch(url)          # thread-safe; never raises for network or content faults
    result.status                        # "success" or the reason: http_404, timeout, robots_noai, ...
    result.image                         # upright RGB PIL image when status == "success"

Safe: http(s) only; a URL that does not parse (an unclosed IPv6 bracket, a port out of range,
a host that is not a domain name under IDNA) is `bad_url`, a redirect to one `bad_redirect`;
the host is resolved once, every address is checked (private, loopback, link-local and reserved
ranges refused unless allowed), and the connection goes to the checked address, so a DNS answer
cannot change between check and use; redirects are followed by hand and checked the same way.
Bytes and pixels are capped; the content decides what it is.
Polite: a User-Agent naming the project, at most `per_host` requests to one host at a time
(in this process; `host_slots` can put the cap elsewhere, as common/host_slots.py does for a
whole Ray cluster), `X-Robots-Tag: noai` / `noimageai` respected, Retry-After honoured on 429/503.
Robust: `fetch` never raises for what one URL or one server does; an exception nobody foresaw
becomes the row's `fetch_error` (while downloading) or `decode_error` (while decoding), with its
type and message (see common.row_errors).
"""
from __future__ import annotations

import email.utils
import ipaddress
import random
import re
import socket
import threading
import time
from collections import OrderedDict
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from PIL import Image
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError, TimeoutError as Urllib3Timeout

from common.images import ImageRejected, decode, save_thumbnail  # noqa: F401  (save_thumbnail: for callers)
from common.row_errors import RowFailed, stage

USER_AGENT = "CityIdentityExplorer/0.1 (+https://github.com/city-identity-explorer; research image downloader)"
ROBOTS_DIRECTIVES = frozenset({"noai", "noimageai"})
NO_RETRY = {403, 404, 410}
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0  # a server asking for a longer pause gets recorded as a failure instead
CHUNK = 64 * 1024
MAX_POOLS = 256
# characters no host name has (checked before DNS, which would only say "not known")
_BAD_HOST_CHARS = re.compile(r'[\x00-\x20\x7f-\x9f\[\]@\\/<>^{|}"`]')


@dataclass
class FetchResult:
    url: str
    status: str
    error: str | None = None
    image: Image.Image | None = None
    data: bytes | None = field(default=None, repr=False)
    final_url: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Failure(RowFailed):
    """One attempt's outcome when it is not an image; `retry_after` set when trying again may help."""

    def __init__(self, status: str, message: str, retry_after: float | None = None):
        super().__init__(status, message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str   # ASCII (IDNA) form: what DNS, the Host header and TLS see
    port: int
    path: str   # path and query; urllib3 percent-encodes what HTTP does not allow


def parse_target(url: str) -> Target:
    """Where a URL points, or Failure("bad_url") saying why it points nowhere. No DNS."""
    if url is None or (isinstance(url, str) and not url.strip()):
        raise Failure("bad_url", "row has no URL")
    if not isinstance(url, str):
        raise Failure("bad_url", f"URL is not text ({type(url).__name__})")
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise Failure("bad_url", f"only http and https URLs are fetched, not {scheme or 'no scheme'!r}")
        host, port = parts.hostname, parts.port
    except ValueError as e:  # an unclosed IPv6 bracket, a port that is no number or out of range
        raise Failure("bad_url", f"malformed URL: {e}") from None
    if not host:
        raise Failure("bad_url", "URL has no host")
    if _BAD_HOST_CHARS.search(host):
        raise Failure("bad_url", f"host {host[:80]!r} has characters no host name has")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as e:
        raise Failure("bad_url", f"host {host[:80]!r} is not a domain name: {e}") from None
    if port == 0:
        raise Failure("bad_url", "port 0")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, ascii_host, port or (443 if scheme == "https" else 80), path)


# ---------------------------------------------------------------------------- small rules
def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def robots_forbid(values: list[str], agent_token: str = "cityidentityexplorer") -> str | None:
    """The noai directive that applies to us in X-Robots-Tag headers, or None.

    A value is either directives ("noai, noindex") or scoped to a crawler ("otherbot: noai");
    scoped ones apply only when the scope is us or "*".
    """
    for value in values:
        scope, _, rest = value.partition(":")
        if rest and scope.strip().lower() not in ROBOTS_DIRECTIVES and " " not in scope.strip():
            if scope.strip().lower() not in ("*", agent_token):
                continue
            value = rest
        for directive in value.split(","):
            if directive.strip().lower() in ROBOTS_DIRECTIVES:
                return directive.strip().lower()
    return None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# ---------------------------------------------------------------------------- the fetcher
def body_deadline(timeout: float) -> float:
    """Seconds a body may take in all: a trickling server could keep every read under `timeout` for ever."""
    return max(30.0, 3 * timeout)


def longest_slot_hold(timeout: float) -> float:
    """How long one request holds its host's slot at most, when reads keep to their timeout:
    connect, the headers, the body's deadline and the read that crosses it (DNS not counted)."""
    return 3 * timeout + body_deadline(timeout)


HostSlots = Callable[[str], AbstractContextManager]  # host -> held while one request to it is open


class LocalHostSlots:
    """At most `per_host` requests to one host at a time among the threads of this process."""

    def __init__(self, per_host: int):
        self.per_host = per_host
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._slots.setdefault(host, threading.BoundedSemaphore(self.per_host))


class Fetcher:
    def __init__(self, timeout: float = 10.0, retries: int = 2, allow_private_hosts=False,
                 respect_noai: bool = True, user_agent: str = USER_AGENT, max_bytes: int = 30_000_000,
                 max_pixels: int = 60_000_000, per_host: int = 8, max_redirects: int = 5,
                 backoff: float = 1.0, draft_size: int | None = None, keep_bytes: bool = False,
                 pool_size: int = 64, host_slots: HostSlots | None = None):
        self.timeout, self.retries = timeout, retries
        # True: every private address allowed; a collection of hosts/addresses: only those
        self.allow_private_hosts = allow_private_hosts if isinstance(allow_private_hosts, bool) \
            else frozenset(h.lower() for h in allow_private_hosts)
        self.respect_noai = respect_noai
        self.user_agent, self.max_bytes, self.max_pixels = user_agent, max_bytes, max_pixels
        self.per_host, self.max_redirects, self.backoff = per_host, max_redirects, backoff
        self.draft_size, self.keep_bytes = draft_size, keep_bytes
        self.deadline = body_deadline(timeout)
        # one connection pool per host, least recently used closed first: a LAION run meets a
        # million hosts, and idle keep-alive sockets must not pile up to the open-file limit
        self._pool_cache: OrderedDict[tuple, urllib3.connectionpool.HTTPConnectionPool] = OrderedDict()
        # default: the cap holds among this fetcher's threads
        self._host_slots = host_slots or LocalHostSlots(per_host)
        self._lock = threading.Lock()
        self._pool_size = pool_size

    # ------------------------------------------------------------------ public
    def fetch(self, url: str) -> FetchResult:
        """Download, check and decode one image, with bounded retries. Never raises for web faults."""
        attempts = 0
        while True:
            attempts += 1
            try:
                with stage("fetch_error"):
                    final_url, data = self._download(url)
                with stage("decode_error"):
                    image = decode(data, self.max_pixels, self.draft_size)
                return FetchResult(url, "success", None, image, data if self.keep_bytes else None,
                                   final_url, attempts)
            except Failure as e:
                if e.retry_after is None or attempts > self.retries:
                    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                    return FetchResult(url, e.status, f"{e}{suffix}", attempts=attempts)
                time.sleep(self._pause(e.retry_after, attempts))
            except RowFailed as e:  # the image was refused, or something unforeseen happened
                return FetchResult(url, e.status, e.message, attempts=attempts)

    def close(self) -> None:
        with self._lock:
            for pool in self._pool_cache.values():
                pool.close()
            self._pool_cache.clear()

    # ------------------------------------------------------------------ one attempt
    def _pause(self, retry_after: float, attempt: int) -> float:
        """Server's Retry-After when it gave one, else exponential backoff with jitter."""
        if retry_after > 0:
            return min(retry_after, MAX_RETRY_AFTER)
        return self.backoff * (2 ** (attempt - 1)) * (0.5 + random.random() / 2)

    def _download(self, url: str) -> tuple[str, bytes]:
        seen, target = {url}, parse_target(url)
        for _ in range(self.max_redirects + 1):
            # the host's slot covers the body too: the cap counts open connections, not requests started
            with self._host_slots(target.host):
                hop = self._hop(url, target, seen)
            if hop[1] is not None:
                return hop
            url, target = hop[0], hop[2]
        raise Failure("too_many_redirects", f"more than {self.max_redirects} redirects")

    def _hop(self, url: str, target: Target, seen: set) -> tuple:
        """(final url, body), or (redirect url, None, its target) to follow."""
        response = self._request(target)
        try:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise Failure(f"http_{response.status}", "redirect without a Location header")
                url, target = _redirect(url, location)
                if url in seen:
                    raise Failure("redirect_loop", f"redirect loop back to {url}")
                seen.add(url)
                return url, None, target
            return url, self._body(response)
        finally:
            _discard(response)

    def _resolve(self, host: str, port: int) -> str:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise Failure("dns_error", f"cannot resolve {host}: {e}") from e
        addresses = [info[4][0] for info in infos]
        if self.allow_private_hosts is not True:
            allowed = self.allow_private_hosts or frozenset()
            private = [a for a in addresses if not is_public(a) and host.lower() not in allowed and a not in allowed]
            if private:
                raise Failure("private_address", f"{host} resolves to non-public address {private[0]}")
        return addresses[0]

    def _pool(self, scheme: str, host: str, port: int, address: str):
        key = (scheme, host, port, address)
        size = min(self.per_host, self._pool_size)
        with self._lock:
            pool = self._pool_cache.get(key)
            if pool is not None:
                self._pool_cache.move_to_end(key)
                return pool
            if scheme == "https":
                pool = urllib3.HTTPSConnectionPool(address, port, maxsize=size, server_hostname=host,
                                                   assert_hostname=host, cert_reqs="CERT_REQUIRED",
                                                   ca_certs=certifi.where())
            else:
                pool = urllib3.HTTPConnectionPool(address, port, maxsize=size)
            self._pool_cache[key] = pool
            while len(self._pool_cache) > MAX_POOLS:
                # closing only drops idle sockets; a request still using one returns it closed
                self._pool_cache.popitem(last=False)[1].close()
            return pool

    def _request(self, target: Target):
        scheme, host, port, path = target.scheme, target.host, target.port, target.path
        address = self._resolve(host, port)
        default_port = 443 if scheme == "https" else 80
        headers = {"Host": host if port == default_port else f"{host}:{port}", "User-Agent": self.user_agent,
                   "Accept": "image/avif,image/webp,image/*,*/*;q=0.8"}
        try:
            response = self._pool(scheme, host, port, address).urlopen(
                "GET", path, headers=headers, redirect=False, retries=False, preload_content=False,
                timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout), enforce_content_length=True)
        except (Urllib3Timeout, socket.timeout) as e:
            raise Failure("timeout", f"no answer within {self.timeout:g}s", retry_after=0.0) from e
        except (HTTPError, OSError) as e:
            raise Failure("connection_error", _short(e), retry_after=0.0) from e
        self._check_status(response)
        return response

    def _check_status(self, response) -> None:
        code = response.status
        if code < 400 or code in (301, 302, 303, 307, 308):
            return
        _discard(response)
        if code in RETRY_STATUS and code not in NO_RETRY:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if wait is not None and wait > MAX_RETRY_AFTER:
                raise Failure(f"http_{code}", f"HTTP {code}, server asks to wait {wait:,.0f}s")
            raise Failure(f"http_{code}", f"HTTP {code}", retry_after=wait if wait is not None else 0.0)
        raise Failure(f"http_{code}", f"HTTP {code}")

    def _body(self, response) -> bytes:
        if self.respect_noai:
            directive = robots_forbid(response.headers.getlist("X-Robots-Tag"))
            if directive:
                raise Failure("robots_noai", f"X-Robots-Tag: {directive}")
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise Failure("too_large", f"{int(length):,} bytes is over the cap of {self.max_bytes:,}")
        chunks, total, started = [], 0, time.monotonic()
        try:
            for chunk in response.stream(CHUNK, decode_content=True):
                total += len(chunk)
                if total > self.max_bytes:
                    raise Failure("too_large", f"body over the cap of {self.max_bytes:,} bytes")
                if time.monotonic() - started > self.deadline:
                    raise Failure("timeout", f"body not complete after {self.deadline:g}s", retry_after=0.0)
                chunks.append(chunk)
        except (ReadTimeoutError, Urllib3Timeout, socket.timeout) as e:
            raise Failure("timeout", f"body stalled for {self.timeout:g}s", retry_after=0.0) from e
        except ProtocolError as e:
            raise Failure("truncated", f"connection closed mid-body: {_short(e)}", retry_after=0.0) from e
        except (HTTPError, OSError) as e:
            raise Failure("connection_error", _short(e), retry_after=0.0) from e
        if not chunks:
            raise Failure("empty_body", "server sent no bytes")
        return b"".join(chunks)


def _redirect(url: str, location: str) -> tuple[str, Target]:
    """The absolute URL a Location header points to, and its target; Failure("bad_redirect") if none."""
    try:
        target_url = urljoin(url, location)
        return target_url, parse_target(target_url)
    except (Failure, ValueError) as e:
        raise Failure("bad_redirect", f"redirect to {location[:200]!r}: {e}") from None


def _discard(response) -> None:
    """Hand the connection back reusable: drain a small unread body, else close the socket.

    Returning a connection with unread bytes would make the next request on it read garbage.
    """
    try:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) <= CHUNK and not response.closed:
            response.drain_conn()
        elif not response.isclosed():
            response.close()
    except (HTTPError, OSError):
        response.close()
    response.release_conn()


def _short(e: Exception) -> str:
    text = str(e).replace("\n", " ")
    return f"{type(e).__name__}: {text[:200]}"
