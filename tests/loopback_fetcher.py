"""The real fetcher with every connection sent to a loopback host, for property tests on odd URLs.

Name resolution is replaced by one that answers 127.0.0.1 for any host that encodes (a host
ending in .invalid does not resolve), and every connection goes to the loopback image host,
whatever the URL's host and port: all of a URL's handling runs for real, nothing leaves the machine.
"""
from __future__ import annotations

import contextlib
import socket

import pytest

from common.fetch import Fetcher
from tests.image_server import ImageHost


class LoopbackFetcher(Fetcher):
    def __init__(self, port: int):
        super().__init__(timeout=0.5, retries=0, allow_private_hosts=True, backoff=0.01)
        self.port = port

    def _pool(self, scheme, host, port, address):
        return super()._pool("http", host, self.port, "127.0.0.1")


def fake_getaddrinfo(host, port, *args, **kwargs):
    if isinstance(host, str):
        host.encode("idna")  # what the real one does first (UnicodeError for a host that does not encode)
        if host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@contextlib.contextmanager
def loopback_fetcher(host: ImageHost):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", fake_getaddrinfo)
        fetcher = LoopbackFetcher(host.server.server_address[1])
        try:
            yield fetcher
        finally:
            fetcher.close()
