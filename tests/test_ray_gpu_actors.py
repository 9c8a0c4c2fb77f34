"""Step 05's model actors on a Ray cluster with GPUs: one actor per GPU, each holding its own.

A local Ray that declares 2 GPUs on a machine without any: Ray hands out GPU ids and sets
CUDA_VISIBLE_DEVICES for each actor exactly as on real GPUs. The actors are only placed and asked
where they run: loading a model on CUDA needs a real GPU (bench/bench_05_gpu.py measures that).
"""
from __future__ import annotations

import types

import pytest

from common import ray_runner
from common.cli import UserError
from common.paths import DataTree


@pytest.fixture(scope="module")
def ray_two_gpus():
    started = ray_runner.connect(None, num_cpus=2, num_gpus=2)
    import ray

    if ray.cluster_resources().get("GPU", 0) != 2:
        pytest.fail("another Ray without 2 GPUs is running in this process")
    yield ray
    if started:
        ray.shutdown()


def cuda_visible_devices(_actor) -> str | None:
    import os

    return os.environ.get("CUDA_VISIBLE_DEVICES")


def args(device: str):
    return types.SimpleNamespace(device=device)


def test_one_model_actor_per_gpu_each_with_a_gpu_of_its_own(ray_two_gpus, tmp_path):
    ray = ray_two_gpus
    actors = ray_runner._embedders(ray, args("auto"), DataTree(tmp_path), ("ViT-B-32", None), str(tmp_path))
    try:
        places = ray.get([a.placement.remote() for a in actors])
        visible = ray.get([a.__ray_call__.remote(cuda_visible_devices) for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    assert len(actors) == 2
    assert sorted(ids for _, _, ids in places) == [["0"], ["1"]]  # each its own GPU
    assert sorted(visible) == ["0", "1"]  # and torch in each sees only that one
    line = ray_runner.describe_placement(places)
    assert line.startswith("05: 2 model actor(s) on 1 node(s), GPU ") and "GPU 0 on 127.0.0.1" in line


def test_device_cpu_keeps_the_model_on_the_cpu_even_where_gpus_are(ray_two_gpus, tmp_path):
    ray = ray_two_gpus
    actors = ray_runner._embedders(ray, args("cpu"), DataTree(tmp_path), ("ViT-B-32", None), str(tmp_path))
    try:
        places = ray.get([a.placement.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    assert len(actors) == 1 and places[0][2] == []  # one per node, holding no GPU
    assert ray_runner.describe_placement(places) == "05: 1 model actor(s) on 1 node(s), on the CPU"


def test_device_cuda_on_a_cluster_without_gpus_is_one_line(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(cluster_resources=lambda: {"CPU": 4.0})
    with pytest.raises(UserError, match="this Ray cluster has no GPU"):
        ray_runner._embedders(fake, args("cuda"), DataTree(tmp_path), ("ViT-B-32", None), str(tmp_path))
