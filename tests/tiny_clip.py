"""Small CLIP stand-ins for the tests.

`register()` adds `tiny-test` (GELU) and `tiny-test-quickgelu` to open_clip's model registry: the
real open_clip code paths, milliseconds per batch. `checkpoint_files()` builds a seeded random
checkpoint in open_clip's Hub format. `ColourClip` is a hand-built model whose two towers agree
(an image and a colour name both embed as their RGB direction), with no torch at all.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

TINY = "tiny-test"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
_registered: list[Path] = []


def register() -> str:
    """Register the tiny configs once per process; returns the GELU config's name."""
    if not _registered:
        import open_clip

        folder = Path(tempfile.mkdtemp(prefix="tiny-clip-"))
        (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
        (folder / f"{TINY}-quickgelu.json").write_text(json.dumps({**TINY_CFG, "quick_gelu": True}))
        open_clip.add_model_config(folder)
        _registered.append(folder)
    return TINY


def checkpoint_files(seed: int = 7) -> tuple[dict[str, bytes], object]:
    """({file name: bytes} of an open_clip Hub repo, the model those weights make)."""
    import open_clip
    import torch
    from safetensors.torch import save

    torch.manual_seed(seed)
    model = open_clip.create_model(register(), pretrained=None, load_weights=False).eval()
    config = {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    return {"open_clip_config.json": json.dumps(config).encode(), "open_clip_model.safetensors": weights}, model


class ColourClip:
    """The `common.clip.Clip` interface step 05 uses, in numpy: embeddings are centred mean RGB."""

    pretrained, dim, input_size, logit_scale, device = "none", 3, 16, 100.0, "cpu"

    def __init__(self, name: str = "colour-test", colours: dict | None = None):
        from sample.images import COLOURS

        self.name, self.colours = name, colours or COLOURS

    @staticmethod
    def _unit(rgb) -> np.ndarray:
        v = np.asarray(rgb, np.float32) - 128.0
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._unit(pixels.reshape(len(pixels), -1, 3).mean(axis=1))

    def encode_concepts(self, concepts) -> np.ndarray:
        return self._unit([self.colours[c] for c in concepts])
