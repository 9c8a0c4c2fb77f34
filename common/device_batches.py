"""How CLIP's image batches travel between the host and the device, so that a GPU computes batch
N while the worker threads decode batch N+1 and the previous batch's embeddings come back.

Three things make the overlap real on CUDA (each one, left out, makes the host wait for the GPU):
- pixels go up from *pinned* host memory (a pageable copy blocks the host until the GPU, busy
  with the previous batch, has taken it), on a stream of their own, and the model's stream waits
  for that copy on the GPU, not on the host;
- embeddings come back into pinned memory, queued right after the batch's own kernels, and an
  event recorded there is all that `wait` synchronises on: collecting batch N-1 does not also
  wait for batch N, as `.cpu()` on the default stream did;
- pinned buffers come from torch's caching host allocator, which keeps a block until the copies
  that use it have finished: a buffer is never refilled while the GPU still reads it.

`HostBatches` is the CPU path (the model runs when called; nothing to overlap). `CudaBatches`
talks to CUDA only through a `TorchCuda`-shaped object, so a test can hand it a recording fake
and check the order of copies, waits and syncs without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def stack_into(pixels, out: np.ndarray) -> np.ndarray:
    """Equal-shaped uint8 squares (a list or an (N, S, S, 3) array) written into `out`, no extra copy."""
    if isinstance(pixels, np.ndarray):
        np.copyto(out, pixels)
    else:
        np.stack(pixels, out=out)
    return out


def batch_shape(pixels) -> tuple[int, ...]:
    first = pixels[0]
    return (len(pixels), *np.shape(first))


class HostBatches:
    """The CPU: the tensor the model reads is the stacked array itself; results are ready at once."""

    device = "cpu"

    def upload(self, pixels):
        import torch

        return torch.from_numpy(stack_into(pixels, np.empty(batch_shape(pixels), np.uint8)))

    def download(self, feats):
        return feats

    def wait(self, handle) -> np.ndarray:
        return handle.numpy().copy()


class TorchCuda:
    """The CUDA calls `CudaBatches` makes, in one place (a test swaps in a recording fake)."""

    def __init__(self, device: str):
        import torch

        self.torch, self.device = torch, device

    def new_stream(self):
        return self.torch.cuda.Stream(device=self.device)

    def current_stream(self):
        return self.torch.cuda.current_stream(self.device)

    def using(self, stream):
        return self.torch.cuda.stream(stream)

    def record(self, stream):
        event = self.torch.cuda.Event()
        event.record(stream)
        return event

    def wait_event(self, stream, event) -> None:
        stream.wait_event(event)

    def record_stream(self, tensor, stream) -> None:
        tensor.record_stream(stream)

    def pinned(self, shape, dtype):
        return self.torch.empty(shape, dtype=dtype, pin_memory=True)

    def synchronize(self, event) -> None:
        event.synchronize()


@dataclass
class Pending:
    """A batch in flight: its pinned result buffer and the event after which it is filled."""

    host: object
    done: object


class CudaBatches:
    """Pinned buffers, a copy stream for uploads, an event per batch for results."""

    def __init__(self, device: str, cuda=None):
        self.cuda = cuda or TorchCuda(device)
        self.device = device
        self.copy_stream = self.cuda.new_stream()

    def upload(self, pixels):
        """uint8 (N, S, S, 3) on the device; returns at once, the model's stream waits for the copy."""
        import torch

        host = self.cuda.pinned(batch_shape(pixels), torch.uint8)
        stack_into(pixels, host.numpy())
        compute = self.cuda.current_stream()
        with self.cuda.using(self.copy_stream):
            x = host.to(self.device, non_blocking=True)
            copied = self.cuda.record(self.copy_stream)
        self.cuda.wait_event(compute, copied)
        self.cuda.record_stream(x, compute)  # made on the copy stream, freed only after the model used it
        return x

    def download(self, feats) -> Pending:
        """Queue the copy back right behind this batch's kernels; nothing waits yet."""
        host = self.cuda.pinned(tuple(feats.shape), feats.dtype)
        host.copy_(feats, non_blocking=True)
        return Pending(host, self.cuda.record(self.cuda.current_stream()))

    def wait(self, handle: Pending) -> np.ndarray:
        """This batch's embeddings; later batches keep computing meanwhile."""
        self.cuda.synchronize(handle.done)
        return handle.host.numpy().copy()


def batches_for(device: str):
    return CudaBatches(device) if device.startswith("cuda") else HostBatches()
