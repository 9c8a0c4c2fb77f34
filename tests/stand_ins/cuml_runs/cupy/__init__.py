"""Stand-in for `cupy`: as many GPUs as DEVICES says; kernels fail when KERNEL_ERROR is set."""
from __future__ import annotations

import numpy as np

from . import cuda  # noqa: F401

float32 = np.float32
DEVICES = 1
KERNEL_ERROR: BaseException | None = None
KERNELS: list[str] = []


def arange(*args, **kwargs):
    KERNELS.append("arange")
    if KERNEL_ERROR is not None:
        raise KERNEL_ERROR
    return np.arange(*args, **kwargs)
