"""bench/bench_ray.py's many-host mode: names under .bench.test reach the loopback host in the step
it times (a child process with bench/loopback_names on PYTHONPATH), and nowhere else."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx2

from tests.image_server import ImageHost

NAMES = Path(__file__).resolve().parent.parent / "bench" / "loopback_names"
RESOLVE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)[0][4][0])
    except socket.gaierror:
        print(name, "unresolved")
"""


def resolve_in_child(*names: str, names_on_path: bool = True) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NAMES)] if names_on_path else [])}
    out = subprocess.run([sys.executable, "-c", RESOLVE, *names], env=env, capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split() for line in out.splitlines())


def test_bench_test_names_resolve_to_loopback_only_with_the_folder_on_the_path():
    got = resolve_in_child("h0.bench.test", "H17.Bench.Test.", "h1.bench.test.example", "other.test")
    assert got == {"h0.bench.test": "127.0.0.1", "H17.Bench.Test.": "127.0.0.1",
                   "h1.bench.test.example": "unresolved", "other.test": "unresolved"}
    assert resolve_in_child("h0.bench.test", names_on_path=False) == {"h0.bench.test": "unresolved"}


def test_image_urls_spread_over_host_names_that_the_image_host_counts_apart():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ray", NAMES.parent / "bench_ray.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    host = ImageHost(latency=(0.0, 0.0)).start()
    try:
        urls = [bench.image_url(host, i, hosts=3) for i in range(6)]
        assert {u.split("/")[2].split(":")[0] for u in urls} == {"h0.bench.test", "h1.bench.test", "h2.bench.test"}
        assert bench.image_url(host, 5, hosts=1) == host.url("/bench/5.jpg")
        for url in urls[:3]:  # the Host header names the host; the connection goes to 127.0.0.1
            port = url.split("/")[2].split(":")[1]
            r = httpx2.get(f"http://127.0.0.1:{port}/bench/{url.rsplit('/', 1)[1]}",
                           headers={"Host": url.split("/")[2]})
            assert r.status_code == 200
        assert set(host.peak_per_host) == {"h0.bench.test", "h1.bench.test", "h2.bench.test"}
    finally:
        host.stop()
