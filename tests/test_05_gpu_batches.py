"""Step 05's GPU path without a GPU: the CUDA batch code (common.device_batches.CudaBatches) run
against a recording stand-in for torch.cuda, so the order of uploads, kernels, copies back and
waits is checked; and the fp16/bf16 model that CUDA uses, run on the CPU against fp32."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from common.clip import load_clip, model_dtype
from common.download_embed import SUCCESS, Outcome, embed_images
from common.device_batches import CudaBatches, HostBatches
from tests.tiny_clip import register


class Recorder:
    """torch.cuda as CudaBatches sees it, on the CPU: streams and events are names, every call is
    written to `log`, and pinned buffers are plain CPU tensors."""

    def __init__(self):
        self.log: list[tuple] = []
        self.events = itertools.count()
        self.streams = itertools.count(1)
        self.current = "compute"

    def new_stream(self):
        return f"copy{next(self.streams)}"

    def current_stream(self):
        return self.current

    def using(self, stream):
        recorder = self

        class Using:
            def __enter__(self):
                recorder.before, recorder.current = recorder.current, stream

            def __exit__(self, *exc):
                recorder.current = recorder.before

        return Using()

    def record(self, stream):
        event = f"e{next(self.events)}"
        self.log.append(("record", stream, event))
        return event

    def wait_event(self, stream, event):
        self.log.append(("wait_event", stream, event))

    def record_stream(self, tensor, stream):
        self.log.append(("record_stream", stream))

    def pinned(self, shape, dtype):
        self.log.append(("pinned", tuple(shape), dtype))
        return torch.empty(shape, dtype=dtype)

    def synchronize(self, event):
        self.log.append(("synchronize", event))


@pytest.fixture(scope="module")
def tiny():
    return register()


def squares(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def traced_clip(tiny, recorder: Recorder):
    """The tiny model on the CPU with the CUDA batch code; its kernels and the caller's submit and
    collect calls written to the same log."""
    clip = load_clip(tiny, "none", "cpu")
    clip.batches = CudaBatches("cpu", cuda=recorder)
    encode_image, submit, collect = clip.model.encode_image, clip.submit_pixels, clip.collect
    batch = itertools.count()
    handles = {}

    def traced_encode(x):
        recorder.log.append(("kernels", recorder.current))
        return encode_image(x)

    def traced_submit(pixels):
        n = next(batch)
        recorder.log.append(("submit", n))
        handle = submit(pixels)
        handles[id(handle)] = n
        return handle

    def traced_collect(handle):
        recorder.log.append(("collect", handles[id(handle)]))
        return collect(handle)

    clip.model.encode_image, clip.submit_pixels, clip.collect = traced_encode, traced_submit, traced_collect
    return clip


class Squares:
    """An ImageSource stand-in: every row's model input is ready, nothing is fetched."""

    def __init__(self, pixels: dict[str, np.ndarray]):
        self.pixels = pixels

    def prepare(self, row_id, url):
        return Outcome(SUCCESS, cached=True), self.pixels[row_id]


def test_cuda_batch_path_overlaps_the_next_batch_with_the_previous_ones_copy_back(tiny):
    recorder = Recorder()
    clip = traced_clip(tiny, recorder)
    pixels = {f"r{i}": p for i, p in enumerate(squares(10, clip.input_size))}
    _, vectors, counts = embed_images([(k, "u") for k in pixels], Squares(pixels), clip, workers=2, batch_size=4)
    assert counts["cached"] == 10

    calls = [e for e in recorder.log if e[0] in ("submit", "collect")]
    # batch N+1 is handed to the device before batch N is collected; at most two are in flight
    assert calls == [("submit", 0), ("submit", 1), ("collect", 0), ("submit", 2), ("collect", 1), ("collect", 2)]

    for n, (start, end) in enumerate(spans(recorder.log)):
        part = recorder.log[start:end]
        kinds = [e[0] for e in part]
        # pixels: one pinned buffer, copied up on the copy stream; the model's stream waits for
        # that copy's event on the device, then the kernels run on the model's stream
        assert part[0] == ("submit", n) and part[1][0] == "pinned" and part[1][2] == torch.uint8
        copied = part[2]
        assert copied[:2] == ("record", "copy1")
        assert part[3] == ("wait_event", "compute", copied[2])
        assert part[4] == ("record_stream", "compute")
        assert kinds.index("kernels") > 3 and ("kernels", "compute") in part
        # results: a pinned buffer filled right behind the kernels, with an event on the model's stream
        assert part[-2][0] == "pinned" and part[-2][2] == torch.float32 and part[-1][:2] == ("record", "compute")

    # collecting batch N synchronises on batch N's own event and nothing else
    done = {n: recorder.log[end - 1][2] for n, (_, end) in enumerate(spans(recorder.log))}
    for i, entry in enumerate(recorder.log):
        if entry[0] == "collect":
            assert recorder.log[i + 1] == ("synchronize", done[entry[1]])
    assert sum(e[0] == "synchronize" for e in recorder.log) == 3

    # and the numbers are the CPU path's
    plain = load_clip(tiny, "none", "cpu")
    assert isinstance(plain.batches, HostBatches)
    expected = plain.encode_pixels(np.stack(list(pixels.values())))
    np.testing.assert_allclose(np.stack([vectors[k] for k in pixels]), expected, rtol=1e-5, atol=1e-6)


def spans(log: list[tuple]) -> list[tuple[int, int]]:
    """(start, end) of each submit's own entries in the log: from ("submit", n) to its last record."""
    out = []
    for i, entry in enumerate(log):
        if entry[0] == "submit":
            end = next(j for j in range(i + 1, len(log)) if log[j][0] == "record" and log[j][1] == "compute") + 1
            out.append((i, end))
    return out


def test_cpu_path_takes_a_list_or_an_array_and_gives_the_same_embeddings(tiny):
    clip = load_clip(tiny, "none", "cpu")
    batch = squares(5, clip.input_size, seed=3)
    from_list = clip.encode_pixels(batch)
    np.testing.assert_array_equal(from_list, clip.encode_pixels(np.stack(batch)))
    np.testing.assert_allclose(np.linalg.norm(from_list, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_model_matches_fp32_within_tolerance(tiny, dtype):
    """CUDA runs the model cast to fp16 (`model_dtype`), inputs scaled in fp16 on the device: the same
    code, here on the CPU in fp16 and bf16, against fp32."""
    assert model_dtype("cuda") == torch.float16 and model_dtype("cuda:1") == torch.float16
    assert model_dtype("cpu") == torch.float32
    full = load_clip(tiny, "none", "cpu")
    try:
        half = load_clip(tiny, "none", "cpu", dtype=dtype)
    except RuntimeError as e:  # an old torch without these CPU kernels
        pytest.skip(f"{dtype} does not run on this CPU build: {e}")
    seen = []
    encode_image = half.model.encode_image
    half.model.encode_image = lambda x: seen.append(x.dtype) or encode_image(x)
    assert {p.dtype for p in half.model.parameters()} == {dtype}

    batch = squares(8, full.input_size, seed=1)
    a, b = full.encode_pixels(batch), half.encode_pixels(batch)
    assert seen == [dtype] and b.dtype == np.float32
    cosine = (a * b).sum(axis=1)
    assert cosine.min() > (0.999 if dtype == torch.float16 else 0.99), cosine
    texts_a, texts_b = full.encode_concepts(["tram", "harbour"]), half.encode_concepts(["tram", "harbour"])
    assert (texts_a * texts_b).sum(axis=1).min() > 0.99
