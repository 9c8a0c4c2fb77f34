"""On the CPU, step 05 says after its first batch how long the rows it has will take, and names the
faster model with what it costs in quality."""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import cpu_eta
from common.paths import DataTree
from sample import images as sample
from tests.conftest import load_step
from tests.image_server import image_server  # noqa: F401
from tests.tiny_clip import register


class FakeClip:
    name, pretrained, device, dim = "ViT-L-14-336", "openai", "cpu", 4

    def encode_pixels(self, pixels):
        return np.ones((len(pixels), self.dim), np.float32)


def timed(monkeypatch, rows: int, seconds: float):
    ticks = iter([100.0, 100.0 + seconds] + [200.0] * 10)
    monkeypatch.setattr(cpu_eta.time, "perf_counter", lambda: next(ticks))
    said = []
    return cpu_eta.TimedClip(FakeClip(), rows, said.append), said


def test_first_batch_gives_the_time_for_the_rows_left_from_the_measured_rate(monkeypatch):
    clip, said = timed(monkeypatch, rows=10_032, seconds=100.0)  # 32 images in 100 s: 0.32 images/s
    out = clip.encode_pixels(np.zeros((32, 8, 8, 3), np.uint8))
    assert out.shape == (32, 4)
    assert said[0] == ("first batch: 32 images in 100.0 s (0.32 images/s on the CPU); the 10,000 rows left "
                       "will take about 8 h 40 min (less where downloads fail)")


def test_the_estimate_is_said_once_and_names_the_faster_model_and_its_cost(monkeypatch):
    clip, said = timed(monkeypatch, rows=100, seconds=10.0)
    assert not hasattr(clip, "submit_pixels")  # FakeClip has none: step 05 then calls encode_pixels
    clip.encode_pixels(np.zeros((10, 8, 8, 3), np.uint8))
    clip.encode_pixels(np.zeros((10, 8, 8, 3), np.uint8))
    assert len(said) == 2
    assert said[1].startswith("faster on the CPU: --model ViT-B-32 --pretrained laion2b_s34b_b79k, about 27x less "
                              "compute per image; it costs quality: 66.6% zero-shot ImageNet accuracy against "
                              "76.6% for ViT-L-14-336 (openai)")
    assert clip.name == "ViT-L-14-336" and clip.dim == 4  # everything else is the model's own


def test_no_faster_model_is_offered_to_a_run_that_already_uses_it():
    assert cpu_eta.faster_choice("ViT-B-32", "laion2b_s34b_b79k") is None
    assert cpu_eta.faster_choice("ViT-B-32-quickgelu", "openai") is None
    other = cpu_eta.faster_choice("hf-hub:org/some-clip", None)
    assert other.startswith("faster on the CPU: --model ViT-B-32 --pretrained laion2b_s34b_b79k (15 GFLOPs")


def test_durations_read_as_a_person_would_say_them():
    assert [cpu_eta.duration(s) for s in (4, 59.6, 61, 3600, 3 * 3600 + 5 * 60, 3 * 86_400)] == \
        ["4 s", "1 min", "1 min", "1 h 00 min", "3 h 05 min", "3.0 days"]


def cpu_run_argv(image_server, tmp_path, rows: int) -> list[str]:  # noqa: F811
    """Step 05's command line on the CPU with the tiny model, over `rows` pictures from the image host."""
    register()
    urls = [image_server.add(f"p{i}.png", sample.in_format("png"), "image/png") for i in range(rows)]
    tree = DataTree(tmp_path / "d")
    tree.metadata.mkdir(parents=True)
    pq.write_table(pa.table({"url": urls, "caption": [f"c {i}" for i in range(rows)]}), tree.metadata_part(0))
    vocab = tmp_path / "tags.txt"
    vocab.write_text("red\nblue\n", encoding="utf-8")
    return ["--data-dir", str(tree.root), "--model", "tiny-test", "--pretrained", "none", "--device", "cpu",
            "--batch-size", "4", "--allow-private-hosts", "127.0.0.1", "--tags-vocab", str(vocab)]


def test_step_05_on_the_cpu_prints_the_estimate_after_its_first_batch(image_server, tmp_path, capsys):  # noqa: F811
    code = load_step("05_process_images").main(cpu_run_argv(image_server, tmp_path, 6))
    out = capsys.readouterr().out
    assert code == 0
    m = re.search(r"first batch: 4 images in [\d.,]+ s \([\d.,]+ images/s on the CPU\); the 2 rows left will "
                  r"take about [\d.]+ (s|min|h \d\d min|days) \(less where downloads fail\)", out)
    assert m, out
    assert "faster on the CPU: --model ViT-B-32 --pretrained laion2b_s34b_b79k (15 GFLOPs" in out
    assert out.count("first batch:") == 1


def test_the_estimate_counts_only_rows_that_earlier_runs_did_not_embed(image_server, tmp_path, capsys):  # noqa: F811
    step = load_step("05_process_images")
    argv = cpu_run_argv(image_server, tmp_path, 10)
    assert step.main([*argv, "--limit", "2"]) == 0
    capsys.readouterr()
    assert step.main(argv) == 0  # a trial of 2 rows, then all 10: 8 to embed, 4 left after the first batch
    out = capsys.readouterr().out
    assert "the 4 rows left will take about" in out, out
