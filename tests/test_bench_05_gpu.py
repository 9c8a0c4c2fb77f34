"""bench/bench_05_gpu.py runs end to end: its --smoke mode on the CPU (tiny model, 48 images), and
its install step refuses clearly when a package is missing and no wheels were brought."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_05_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_05_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_embeds_every_cached_thumbnail_and_reports_each_batch_size(bench, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert bench.main(["--smoke", "--profile", "--cache", str(tmp_path / "cache"), "--out", str(out), "--workers", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == 48 and result["device"] == "cpu" and result["host_images_per_s"] > 0
    assert [b["batch"] for b in result["batches"]] == [8, 16]
    for row in result["batches"]:
        assert row["images_per_s"] > 0 and row["model_alone_images_per_s"] > 0
        assert row["share_of_ceiling"] == round(row["images_per_s"] / bench.CEILING, 3)
        assert row["bottleneck"] in ("gpu", "host") and row["gpu_util_pct"] is None  # no GPU to sample here
    printed = capsys.readouterr().out
    assert "host alone: decode + square" in printed and "Self CPU" in printed  # the --profile table
    thumbs = list((tmp_path / "cache" / "images").rglob("*.jpg"))
    assert len(thumbs) == 48


def test_ceiling_is_about_2000_images_per_second(bench):
    assert 2000 < bench.CEILING < 2100


def test_missing_package_without_wheels_is_one_clear_error(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.NEEDED, "a_module_nobody_has", "a-dist-nobody-has")
    with pytest.raises(SystemExit, match="^error: a-dist-nobody-has not installed and no wheel folder .*nowheels"):
        bench.install_from_wheels(tmp_path / "nowheels")
