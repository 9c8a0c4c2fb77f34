"""A loopback image host with the web's faults, for step 05's tests and download benchmark.

Routes (all under http://127.0.0.1:PORT):
  /img/<name>            a file added with `add(name, body, content_type, headers)`
  /status/<code>         that HTTP status, always (404, 403, 410, 500, ...)
  /once429/<key>         429 with Retry-After: 1 the first time per key, then a good JPEG
  /once500/<key>         500 the first time per key, then a good JPEG
  /slow                  waits `slow_seconds` before answering (past a short client timeout)
  /truncated             promises 20,000 bytes of JPEG, sends 1,000, closes
  /html                  an HTML page served as image/jpeg
  /bomb                  a PNG whose header claims 100 megapixels
  /loop/a, /loop/b       redirect to each other for ever
  /to-private            redirect to a private address (10.255.255.1)
  /redirect-to?<loc>     redirect to whatever the percent-decoded query says, sent as raw UTF-8 bytes
  /noai                  a good JPEG with `X-Robots-Tag: noai`
  /hold/<key>            a JPEG (one of 64, chosen by key) after `hold_seconds`: slow, distinct pictures
  /bench/<i>.jpg         benchmark images: latency drawn from `latency`, every `fail_every`-th fails
Every request is logged (path, headers, time) and the peak number of requests in flight kept,
in all (`peak_in_flight`) and per host the client named in its Host header (`peak_per_host`).
"""
from __future__ import annotations

import random
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sample import images as sample_images

GOOD_COLOUR = (30, 60, 210)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients hanging up mid-request is what these routes provoke


class ImageHost:
    def __init__(self, slow_seconds: float = 3.0, hold_seconds: float = 0.1,
                 latency: tuple[float, float] = (0.0, 0.0), fail_every: int = 0, bench_size=(640, 480)):
        self.files: dict[str, tuple[bytes, str, dict]] = {}
        self.requests: list[tuple[str, dict, float]] = []
        self.slow_seconds, self.hold_seconds = slow_seconds, hold_seconds
        self.latency, self.fail_every, self.bench_size = latency, fail_every, bench_size
        self.good = sample_images.jpeg(GOOD_COLOUR)
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.peak_in_flight = 0
        self._in_flight_per_host: dict[str, int] = {}
        self.peak_per_host: dict[str, int] = {}
        self._stop = threading.Event()
        self._bench_cache: dict[int, bytes] = {}
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # ------------------------------------------------------------------ control
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, name: str, body: bytes, content_type: str = "image/jpeg", headers: dict | None = None) -> str:
        self.files[name] = (body, content_type, headers or {})
        return self.url(f"/img/{name}")

    def hits(self, prefix: str) -> list[tuple[str, dict, float]]:
        with self._lock:
            return [r for r in self.requests if r[0].startswith(prefix)]

    def start(self) -> "ImageHost":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def first_time(self, key: str) -> bool:
        with self._lock:
            new = key not in self._seen
            self._seen.add(key)
            return new

    def enter(self, path: str, headers: dict) -> str:
        """Count a request in; returns the host it named, for `leave`."""
        host = urllib.parse.urlsplit(f"//{headers.get('Host', '')}").hostname or ""
        with self._lock:
            self.requests.append((path, headers, time.monotonic()))
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            now = self._in_flight_per_host[host] = self._in_flight_per_host.get(host, 0) + 1
            self.peak_per_host[host] = max(self.peak_per_host.get(host, 0), now)
        return host

    def leave(self, host: str) -> None:
        with self._lock:
            self._in_flight -= 1
            self._in_flight_per_host[host] -= 1

    def reset_peaks(self) -> None:
        with self._lock:
            self.peak_in_flight, self.peak_per_host = self._in_flight, dict(self._in_flight_per_host)

    def bench_image(self, i: int) -> bytes:
        """One of 64 distinct pictures (bench_size) for index i."""
        with self._lock:
            body = self._bench_cache.get(i % 64)
        if body is None:
            body = sample_images.demo_image(i % 64, self.bench_size)
            with self._lock:
                self._bench_cache[i % 64] = body
        return body


def _handler(host: ImageHost):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # headers and body in one write: no Nagle + delayed-ACK stalls

        def log_message(self, *args):  # keep test output quiet
            pass

        def send(self, code: int, body: bytes = b"", content_type: str = "image/jpeg", headers: dict | None = None):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def redirect(self, location: str):
            self.send(302, b"", "text/plain", {"Location": location})

        def redirect_raw(self, location: str):
            """Any Location a server may send: its UTF-8 bytes as they are (headers are latin-1 text)."""
            clean = location.replace("\r", "").replace("\n", "")
            self.redirect(clean.encode("utf-8", "replace").decode("latin-1"))

        def do_GET(self):
            named = host.enter(self.path, dict(self.headers))
            try:
                if self.path.startswith("/redirect-to?"):
                    self.redirect_raw(urllib.parse.unquote(self.path.split("?", 1)[1]))
                else:
                    self.route(self.path.split("?", 1)[0])
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                host.leave(named)

        def route(self, path: str):
            parts = path.strip("/").split("/")
            head, rest = parts[0], "/".join(parts[1:])
            if head == "img" and rest in host.files:
                body, ctype, headers = host.files[rest]
                self.send(200, body, ctype, headers)
            elif head == "status":
                self.send(int(rest), b"nope", "text/plain")
            elif head in ("once429", "once500"):
                if host.first_time(path):
                    code = 429 if head == "once429" else 500
                    self.send(code, b"later", "text/plain", {"Retry-After": "1"} if code == 429 else {})
                else:
                    self.send(200, host.good)
            elif head == "slow":
                host._stop.wait(host.slow_seconds)
                self.send(200, host.good)
            elif head == "truncated":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "20000")
                self.end_headers()
                self.wfile.write(host.good[:1000])
                self.close_connection = True
            elif head == "html":
                self.send(200, b"<!doctype html><html><body>Not found</body></html>", "image/jpeg")
            elif head == "bomb":
                self.send(200, sample_images.bomb_png(10_000, 10_000), "image/png")
            elif head == "loop":
                self.redirect("/loop/b" if rest == "a" else "/loop/a")
            elif head == "to-private":
                self.redirect("http://10.255.255.1/secret.jpg")
            elif head == "noai":
                self.send(200, host.good, "image/jpeg", {"X-Robots-Tag": "noai"})
            elif head == "hold":
                host._stop.wait(host.hold_seconds)
                self.send(200, host.bench_image(zlib.crc32(rest.encode())))
            elif head == "bench":
                self.bench(rest)
            else:
                self.send(404, b"no such route", "text/plain")

        def bench(self, name: str):
            i = int(name.split(".")[0])
            lo, hi = host.latency
            rnd = random.Random(zlib.crc32(name.encode()))
            host._stop.wait(rnd.uniform(lo, hi))
            if host.fail_every and i % host.fail_every == 0:
                self.send(404, b"gone", "text/plain")
            elif host.fail_every and i % host.fail_every == 1:
                self.send(200, b"<html>moved</html>", "image/jpeg")
            else:
                self.send(200, host.bench_image(i))

    return Handler


@pytest.fixture
def image_server():
    host = ImageHost(slow_seconds=3.0).start()
    yield host
    host.stop()
