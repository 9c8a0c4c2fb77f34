"""Benchmarks only: every name under .bench.test resolves to 127.0.0.1.

bench/bench_ray.py puts this folder on PYTHONPATH of the step it times (and so of that step's Ray
workers) to spread step 05's images over many hosts, h0.bench.test, h1.bench.test, ..., that are
all one loopback image host: the per-host caps count each name as its own host, as on the web.
`.test` is reserved for testing (RFC 2606) and never resolves on a real network.
"""
import socket

_getaddrinfo = socket.getaddrinfo
SUFFIX = ".bench.test"


def _loopback_names(host, port, *args, **kwargs):
    if isinstance(host, str) and host.lower().rstrip(".").endswith(SUFFIX):
        host = "127.0.0.1"
    return _getaddrinfo(host, port, *args, **kwargs)


socket.getaddrinfo = _loopback_names
