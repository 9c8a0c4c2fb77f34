"""A static file server on 127.0.0.1 for the viewer tests: serves one export folder, records every
request path, and can hold back chosen paths (to see what the viewer draws while they load)."""
from __future__ import annotations

import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests.append(self.path)
        for prefix, seconds in list(server.delays.items()):
            if self.path.startswith(prefix):
                time.sleep(seconds)
        super().do_GET()

    def handle(self):
        # A page closed mid-response (the tests close pages freely) is not a server failure.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def end_headers(self):
        # Always revalidate: a test that rewrites a file must not see a cached copy.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # keep test output clean
        pass


class LoopbackServer:
    def __init__(self, folder: Path):
        handler = functools.partial(_Handler, directory=str(folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.requests = []
        self.httpd.delays = {}
        self.httpd.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def requests(self) -> list[str]:
        with self.httpd.lock:
            return list(self.httpd.requests)

    def delay(self, prefix: str, seconds: float) -> None:
        self.httpd.delays[prefix] = seconds

    def clear(self) -> None:
        with self.httpd.lock:
            self.httpd.requests.clear()
        self.httpd.delays.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def web_server():
    """A factory: web_server(folder) -> LoopbackServer serving it; all are shut down after the module."""
    servers = []

    def serve(folder: Path) -> LoopbackServer:
        servers.append(LoopbackServer(folder))
        return servers[-1]

    yield serve
    for server in servers:
        server.close()
