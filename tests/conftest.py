"""Shared test set-up: the repository on sys.path, numbered steps loadable, network only on loopback."""
from __future__ import annotations

import contextlib
import importlib
import ipaddress
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def load_step(name: str):
    """Import a numbered step script, e.g. load_step("01_download_and_filter")."""
    return importlib.import_module(name)


def in_ci() -> bool:
    """True when the CI variable is set (as CI services set it, and .ci/run does)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str) -> None:
    """A tool a test needs is not here: skip on a researcher's machine, fail in CI, where a skipped
    test would let the run pass without the code under test ever running."""
    if in_ci():
        pytest.fail(f"CI is set, so this cannot be skipped: {what}", pytrace=False)
    pytest.skip(what)


@contextlib.contextmanager
def polling(step, every: float):
    """Call step() every `every` seconds in a thread while the block runs, until it returns True."""
    stop = threading.Event()

    def loop():
        while not stop.is_set() and not step():
            stop.wait(every)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):  # unix sockets and the like
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Tests never reach the internet: a connection to anything but 127.0.0.1/::1 fails loudly."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(address):
        if getattr(address, "__len__", None) and not _is_loopback(address):
            raise OSError(f"test tried to reach {address!r}: only loopback is allowed in tests")

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield
