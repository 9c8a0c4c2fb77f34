"""Step 06's GPU path without a GPU: stand-in `cuml`/`cupy` packages (tests/stand_ins/) put on
sys.path, the backend choice, the exact call to cuML's UMAP, the fallbacks when cuML cannot import
or fails during the fit, and CLIP's memory freed before the layout starts."""
from __future__ import annotations

import contextlib
import gc
import io
import json
import sys
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import layout
from common.columns import row_id
from common.paths import DataTree, stats_file
from tests.conftest import load_step
from tests.tiny_clip import TINY_CFG, register

step = load_step("06_reduce_dimensionality")
STAND_INS = Path(__file__).resolve().parent / "stand_ins"
DIM = TINY_CFG["embed_dim"]


def _forget_stand_ins() -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in ("cuml", "cupy")]:
        del sys.modules[name]


@pytest.fixture
def stand_in(monkeypatch):
    """use(folder): that stand-in folder first on sys.path, nothing cuml/cupy imported before it;
    its modules are forgotten again after the test."""
    def use(folder: str):
        _forget_stand_ins()
        monkeypatch.syspath_prepend(str(STAND_INS / folder))

    yield use
    _forget_stand_ins()


@pytest.fixture
def cuml(stand_in):
    """The working stand-in: (cuml.manifold module, cupy module), state reset."""
    stand_in("cuml_runs")
    import cupy
    import cuml.manifold as manifold

    manifold.CALLS.clear()
    manifold.FAIL_FIT = None
    cupy.DEVICES, cupy.KERNEL_ERROR = 1, None
    cupy.KERNELS.clear()
    return manifold, cupy


def write_step05(root: Path, n: int = 60, model: str = "ViT-B-32") -> None:
    """One shard of step-05 output: n unit vectors in 3 clouds, with captions."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, DIM))
    x = centres[np.arange(n) % 3] + rng.normal(scale=0.05, size=(n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tree = DataTree.at(root)
    tree.embeddings.mkdir(parents=True)
    urls = [f"http://img.test/{i}.jpg" for i in range(n)]
    pq.write_table(pa.table({"id": [row_id(u) for u in urls], "url": urls,
                             "caption": [f"Lisbon tram {i % 3}" for i in range(n)],
                             "status": ["success"] * n, "error": [None] * n}), tree.index_file(0))
    np.save(tree.embeddings_file(0), x.astype(np.float16))
    stats_file(tree.embeddings).write_text(json.dumps({"model": model, "pretrained": "none"}))


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = step.main(argv)
    return code, out.getvalue(), err.getvalue()


def step_stats(root: Path) -> dict:
    return json.loads(stats_file(DataTree.at(root).projection).read_text())


# ---------------------------------------------------------------------------- the choice
def test_cuml_that_imports_and_runs_a_kernel_is_usable(cuml):
    _, cupy = cuml
    assert layout.cuml_status() == (True, "cuML with 1 CUDA GPU(s)")
    assert cupy.KERNELS == ["arange"]  # it really ran something on the device, not only counted GPUs
    assert layout.choose_backend("auto") == ("cuml", "cuML with 1 CUDA GPU(s)")


def test_cuml_that_fails_at_import_sends_auto_to_umap_learn_with_the_reason(stand_in):
    stand_in("cuml_broken")
    why = "cuML is installed but cannot run here (ImportError: libcuml++.so: cannot open shared object file: " \
          "No such file or directory)"
    assert layout.cuml_status() == (False, why)
    assert layout.choose_backend("auto") == ("umap", f"{why}, so umap-learn runs on the CPU")


def test_cuml_whose_kernel_fails_or_sees_no_gpu_is_not_usable(cuml):
    _, cupy = cuml
    cupy.KERNEL_ERROR = RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient\nmore")
    assert layout.cuml_status() == (False, "cuML is installed but cannot run here (RuntimeError: "
                                           "cudaErrorInsufficientDriver: CUDA driver version is insufficient)")
    cupy.KERNEL_ERROR, cupy.DEVICES = None, 0
    assert layout.cuml_status() == (False, "cuML is installed but no CUDA GPU is visible")


def test_backend_cuml_that_cannot_import_is_one_line_and_exit_2(stand_in, tmp_path, capsys):
    stand_in("cuml_broken")
    write_step05(tmp_path)
    assert step.main(["--data-dir", str(tmp_path), "--backend", "cuml", "--no-concepts"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: --backend cuml needs cuML and an NVIDIA GPU, but cuML is installed but cannot "
                          "run here (ImportError: libcuml++.so"), err


def test_metric_cuml_lacks_is_an_error_before_any_work(cuml, tmp_path, capsys):
    # no step-05 output at all: the metric must be refused before anything is read
    assert step.main(["--data-dir", str(tmp_path), "--backend", "cuml", "--metric", "haversine"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: --metric haversine is not one cuML's UMAP supports (canberra, "), err
    assert err.endswith("pick one of these, or use --backend umap")
    assert cuml[0].CALLS == []


def test_auto_with_a_metric_cuml_lacks_takes_umap_learn_and_says_so(cuml):
    assert layout.choose_backend("auto", metric="haversine") == (
        "umap", "cuML does not support --metric haversine, so umap-learn runs on the CPU")
    assert layout.choose_backend("auto", metric="cosine")[0] == "cuml"


# ---------------------------------------------------------------------------- the call and the fallback
def test_step06_calls_cumls_umap_with_its_real_keyword_arguments(cuml, tmp_path):
    manifold, _ = cuml
    write_step05(tmp_path)
    code, out, err = run(["--data-dir", str(tmp_path), "--backend", "cuml", "--no-concepts", "--neighbors", "12",
                          "--dist", "0.05", "--seed", "7"])
    assert code == 0, err
    assert manifold.CALLS == [{
        "init": {"n_neighbors": 12, "min_dist": 0.05, "metric": "cosine", "n_components": 2, "init": "spectral",
                 "random_state": 7, "output_type": "numpy"},
        "fit": {"shape": (60, DIM), "dtype": "float32", "contiguous": True}}]
    stats = step_stats(tmp_path)
    assert (stats["backend"], stats["backend_reason"], stats["init"]) == ("cuml", "cuML with 1 CUDA GPU(s)", "spectral")
    assert "backend: cuml (cuML with 1 CUDA GPU(s))" in out


def test_cuml_out_of_memory_during_the_fit_falls_back_to_umap_learn(cuml, tmp_path):
    manifold, _ = cuml
    manifold.FAIL_FIT = MemoryError("std::bad_alloc: out_of_memory: CUDA error at: rmm/mr/device/cuda_memory_resource.hpp")
    write_step05(tmp_path)
    code, out, err = run(["--data-dir", str(tmp_path), "--no-concepts", "--neighbors", "10"])
    assert code == 0, err
    assert len(manifold.CALLS) == 1 and "fit" in manifold.CALLS[0]  # cuML was tried first
    assert ("WARNING: cuML's UMAP failed (MemoryError: std::bad_alloc: out_of_memory: CUDA error at: "
            "rmm/mr/device/cuda_memory_resource.hpp); umap-learn makes the map on the CPU instead") in err
    stats = step_stats(tmp_path)
    assert stats["backend"] == "umap" and stats["backend_reason"] == "cuML failed during the fit, so umap-learn made the map"
    assert stats["init"] == "spectral" and stats["images"] == 60
    table = pq.read_table(DataTree.at(tmp_path).projection_file)
    assert table.num_rows == 60 and np.isfinite(table.column("x").to_numpy()).all()


def test_a_bug_in_the_call_is_not_hidden_by_the_fallback(cuml):
    manifold, _ = cuml
    manifold.FAIL_FIT = TypeError("fit_transform() got an unexpected keyword argument")
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(TypeError):
        layout.umap_layout(x, layout.UmapParams(neighbors=5), "cuml")


# ---------------------------------------------------------------------------- CLIP's memory
def test_clip_is_freed_before_the_layout_starts(monkeypatch, tmp_path):
    """Step 06 embeds its concept names with CLIP (on CUDA on a GPU machine), then cuML needs that
    memory: the model must be gone, and torch's cache emptied, by the time the layout begins."""
    import torch

    import common.clip as clip_module

    register()
    write_step05(tmp_path, model="tiny-test")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("tram\nharbour\ncastle\n", encoding="utf-8")
    models, emptied, seen = [], [], {}
    real_load = clip_module.load_clip

    def load_clip(*args, **kwargs):
        clip = real_load(*args, **kwargs)
        models.append(weakref.ref(clip.model))
        return clip

    def layout_spy(x, p, backend):
        gc.collect()
        seen.update(models_alive=[m() is not None for m in models], emptied=list(emptied))
        return x[:, :2].astype(np.float64), backend

    monkeypatch.setattr(clip_module, "load_clip", load_clip)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(layout, "umap_layout", layout_spy)
    code, out, err = run(["--data-dir", str(tmp_path), "--backend", "umap", "--vocab", str(vocab), "--device", "cpu"])
    assert code == 0, err
    assert "naming clusters with 3 concepts embedded by tiny-test (none)" in out
    assert seen == {"models_alive": [False], "emptied": [True]}
