"""Step 05's --per-host under --ray holds for the whole run, not per fetch task.

A local Ray with 4 CPUs: the model actor holds one, so three fetch tasks run at once, each with
its own threads and connection pools, all fetching from one loopback host.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging

import pyarrow as pa
import pytest

from common import ray_runner
from common.fetch import Fetcher, LocalHostSlots
from common.host_slots import ClusterHostSlots, HostLimiter
from common.paths import DataTree
from tests.image_server import image_server  # noqa: F401
from tests.test_ray import kill_once, model_dir, run05, shards_of, write_input  # noqa: F401

PER_HOST = 2
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def ray_four_cpus():
    started = ray_runner.connect(None, num_cpus=4)
    import ray

    assert ray.cluster_resources()["CPU"] >= 4, "another Ray is running in this process: too few CPUs to test"
    yield ray
    if started:
        ray.shutdown()


def run_on_ray(image_server, model_dir, tmp_path, name: str) -> DataTree:
    image_server.hold_seconds = 0.4  # each request stays open a while: the fetch tasks overlap
    tree = DataTree(tmp_path / name)
    write_input(tree, [image_server.url(f"/hold/{name}-{i}") for i in range(36)])
    image_server.reset_peaks()
    assert run05(tree, model_dir, "--shard-size", "6", "--per-host", str(PER_HOST), "--ray") == 0
    return tree


def statuses(tree: DataTree) -> set:
    return set(pa.concat_tables([t for t, _ in shards_of(tree)]).column("status").to_pylist())


def test_05_under_ray_one_host_never_sees_more_than_per_host_requests(ray_four_cpus, image_server, model_dir,
                                                                      tmp_path, monkeypatch):
    monkeypatch.setattr(ray_runner, "CPUS_PER_LIMITER", 2)  # two limiters: each process must pick the same one
    tree = run_on_ray(image_server, model_dir, tmp_path, "capped")
    assert statuses(tree) == {"success"}
    assert image_server.peak_per_host[HOST] == PER_HOST


def test_05_under_ray_without_the_limiters_fetch_tasks_together_exceed_per_host(ray_four_cpus, image_server,
                                                                                model_dir, tmp_path,
                                                                                monkeypatch):
    """The set-up of the test above does run fetch tasks at once: each alone keeps to --per-host."""
    monkeypatch.setattr(ray_runner, "_host_limiters", lambda ray, args: [])
    tree = run_on_ray(image_server, model_dir, tmp_path, "uncapped")
    assert statuses(tree) == {"success"}
    assert image_server.peak_per_host[HOST] > PER_HOST


def test_05_a_limiter_killed_mid_run_restarts_and_every_image_arrives(ray_four_cpus, image_server, model_dir,
                                                                     tmp_path):
    with kill_once("ray::HostLimiter.acquire") as killed:
        tree = run_on_ray(image_server, model_dir, tmp_path, "killed")
    assert killed, "no limiter was running: the test did not test anything"
    assert statuses(tree) == {"success"}


def test_a_limiter_gone_for_good_leaves_each_process_its_own_cap(ray_four_cpus, image_server, caplog):
    ray = ray_four_cpus
    dead = ray.remote(num_cpus=0, max_restarts=0)(HostLimiter).remote(PER_HOST, 60.0)
    ray.kill(dead)
    image_server.hold_seconds = 0.2
    fetcher = Fetcher(allow_private_hosts={HOST}, per_host=PER_HOST,
                      host_slots=ClusterHostSlots([dead], LocalHostSlots(PER_HOST)))
    image_server.reset_peaks()
    with caplog.at_level(logging.WARNING), cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(fetcher.fetch, [image_server.url(f"/hold/dead-{i}") for i in range(6)]))
    assert [r.status for r in results] == ["success"] * 6
    assert image_server.peak_per_host[HOST] <= PER_HOST
    assert sum("per-host limiter is gone" in r.getMessage() for r in caplog.records) == 1
