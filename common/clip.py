"""CLIP models by name, loaded once, and the embeddings steps 05 and 06 compute with them.

Names: OpenAI's (`ViT-L/14@336px`, the seed's default), open_clip's (`ViT-L-14-336` with a
pretrained tag), `hf-hub:org/name`, or any of these with pretrained `none` (random weights,
seeded, so two steps that load the same name get the same model).

The QuickGELU trap: OpenAI's checkpoints (and a few others) were trained with QuickGELU, but
open_clip's plain configs (`ViT-L-14-336`) use GELU; loading OpenAI weights into them only warns,
and every embedding comes out subtly wrong. `resolve_model` maps such a pair to the `-quickgelu`
config, and `load_clip` forces QuickGELU when a pretrained tag asks for it and no such config exists.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import UserError

RANDOM = "none"  # the pretrained tag meaning "random weights"
RANDOM_SEED = 0
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"

# OpenAI's model names (as in the `clip` package and the seed) -> open_clip configs with QuickGELU
OPENAI_NAMES = {
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}

# Prompt ensemble for zero-shot concepts (CLIP paper, section 3.1.4): the mean over templates
# is more robust than any single phrasing.
TEMPLATES = (
    "a photo of {}.",
    "a picture of {}.",
    "an image of {}.",
    "a photo showing {}.",
    "a close-up photo of {}.",
    "a wide photo of {}.",
    "a blurry photo of {}.",
)

DEFAULT_VOCAB = Path(__file__).resolve().parent / "vocab" / "tags.txt"
_LIST_HINT = "run `python -c \"import open_clip; print(open_clip.list_models())\"` to see the names"


# ---------------------------------------------------------------------------- names
def _open_clip():
    import open_clip  # heavy (torch): imported only when a model is actually needed

    return open_clip


def _pretrained_cfg(model: str, tag: str) -> dict:
    from open_clip import pretrained as oc_pretrained

    return oc_pretrained.get_pretrained_cfg(model, tag) or {}


def resolve_model(model: str, pretrained: str | None) -> tuple[str, str | None]:
    """(open_clip model name, pretrained tag) for any accepted spelling; idempotent.

    pretrained None means "the default": `openai` for OpenAI names, the weights in the repo for
    `hf-hub:` ids. `none` means random weights.
    """
    model = (model or "").strip()
    if pretrained is not None:
        pretrained = pretrained.strip()
        if pretrained.lower() in ("none", "random", ""):
            pretrained = RANDOM
    if model.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        return model, (RANDOM if pretrained == RANDOM else None)
    if model in OPENAI_NAMES:
        return OPENAI_NAMES[model], pretrained or "openai"
    oc = _open_clip()
    if model not in oc.list_models():
        raise UserError(f"unknown CLIP model {model!r}: use an OpenAI name ({', '.join(OPENAI_NAMES)}), "
                        f"an open_clip name, or hf-hub:org/name; {_LIST_HINT}")
    if pretrained is None:
        tags = oc.list_pretrained_tags_by_model(model)
        raise UserError(f"model {model!r} needs --pretrained: one of {', '.join(tags) or '(none published)'}, "
                        f"a checkpoint file, or 'none' for random weights")
    if pretrained == RANDOM or os.path.isfile(pretrained):
        return model, pretrained
    tags = oc.list_pretrained_tags_by_model(model)
    if pretrained not in tags:
        raise UserError(f"no pretrained weights {pretrained!r} for {model!r}: use one of "
                        f"{', '.join(tags) or '(none published)'}, or 'none' for random weights")
    quick = f"{model}-quickgelu"
    if (_pretrained_cfg(model, pretrained).get("quick_gelu") and not model.endswith("-quickgelu")
            and quick in oc.list_models()):
        return quick, pretrained
    return model, pretrained


def needs_quick_gelu(model: str, pretrained: str | None) -> bool:
    """True when the weights were trained with QuickGELU but the config does not say so."""
    if not pretrained or pretrained == RANDOM or model.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        return False
    if model.endswith("-quickgelu") or os.path.isfile(pretrained):
        return False
    return bool(_pretrained_cfg(model, pretrained).get("quick_gelu"))


def pick_device(device: str = "auto") -> str:
    if device == "cpu":
        return device
    if device != "auto" and not device.startswith("cuda"):
        raise UserError(f"unknown device {device!r}: use auto, cpu or cuda")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is visible: use --device cpu (slow) or auto")
    return device


# ---------------------------------------------------------------------------- the model
@dataclass
class Clip:
    model: object
    preprocess: object
    tokenizer: object
    device: str
    dtype: object
    name: str
    pretrained: str | None
    dim: int
    logit_scale: float
    input_size: int = 224
    mean: tuple = (0.48145466, 0.4578275, 0.40821073)
    std: tuple = (0.26862954, 0.26130258, 0.27577711)

    @property
    def random(self) -> bool:
        return self.pretrained == RANDOM

    def encode_images(self, batch) -> np.ndarray:
        """A preprocessed image tensor batch (N, 3, H, W) -> (N, dim) float32, L2-normalised."""
        import torch

        with torch.inference_mode():
            x = batch.to(self.device, dtype=self.dtype, non_blocking=True)
            return _normalise(self.model.encode_image(x).float().cpu().numpy())

    batches: object = None  # how batches reach the device and come back (common.device_batches)

    def __post_init__(self):
        from common.device_batches import batches_for

        self.batches = self.batches or batches_for(self.device)
        self._scale = None

    def encode_pixels(self, pixels) -> np.ndarray:
        """uint8 (N, S, S, 3) squares from `images.model_square` -> embeddings; scaled on the device."""
        return self.collect(self.submit_pixels(pixels))

    def submit_pixels(self, pixels):
        """Start embedding a batch (an (N, S, S, 3) array or a list of squares); returns a handle
        without waiting for the device. The caller prepares the next batch, then calls `collect`."""
        import torch

        with torch.inference_mode():
            x = self.batches.upload(pixels).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            mean, std = self._normalisation()
            feats = self.model.encode_image((x - mean) / std).float()
            return self.batches.download(feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def collect(self, handle) -> np.ndarray:
        return self.batches.wait(handle)

    def _normalisation(self):
        """mean and std on the device, made once: a small tensor copied up from pageable memory
        every batch would make the host wait for the GPU each time."""
        if self._scale is None:
            import torch

            self._scale = tuple(torch.tensor(v, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
                                for v in (self.mean, self.std))
        return self._scale

    def encode_texts(self, texts, batch_size: int = 256) -> np.ndarray:
        import torch

        texts = list(texts)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
                out.append(_encode_text_trimmed(self.model, tokens).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return _normalise(np.concatenate(out))

    def encode_concepts(self, concepts, templates=TEMPLATES) -> np.ndarray:
        """One embedding per concept: the mean over the prompt templates, re-normalised."""
        concepts = list(concepts)
        prompts = [t.format(c) for t in templates for c in concepts]
        emb = self.encode_texts(prompts).reshape(len(templates), len(concepts), -1)
        return _normalise(emb.mean(axis=0))


def _encode_text_trimmed(model, tokens):
    """model.encode_text, without the padding past the longest prompt's pooled token.

    Prompts are ~10 tokens in a 77-token context. The text tower's attention is causal and it pools
    one token per prompt, so positions after the last pooled one cannot change the result: cutting
    them gives the same embeddings several times faster on the CPU. Models of another shape (no
    causal mask, other pooling) take the plain path.
    """
    import torch

    oc = _open_clip()
    pool = getattr(model, "text_pool_type", None)
    if not isinstance(model, oc.model.CLIP) or getattr(model, "attn_mask", None) is None or pool not in ("argmax", "eos"):
        return model.encode_text(tokens)
    if pool == "argmax":
        idx = tokens.argmax(dim=-1)
    else:
        idx = (tokens == model.text_eos_id).int().argmax(dim=-1)
    n = int(idx.max()) + 1
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :n]).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = x[torch.arange(x.shape[0], device=x.device), idx]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _create(name: str, pretrained: str | None):
    """Build on the CPU (so random weights are identical on every device), then return it."""
    import torch

    oc = _open_clip()
    kwargs = {"force_quick_gelu": needs_quick_gelu(name, pretrained)}
    if pretrained == RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            return oc.create_model_and_transforms(name, pretrained=None, load_weights=False, **kwargs)
    try:
        return oc.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:
        raise UserError(f"could not load CLIP weights {pretrained or name!r} for {name!r} ({e}); check the "
                        f"network, HF_TOKEN for gated repos, or use --pretrained none for random weights") from e


def model_dtype(device: str):
    """fp16 on CUDA (the model is cast with `.to(dtype)`, inputs likewise: no autocast), fp32 on the CPU."""
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def load_clip(model: str, pretrained: str | None, device: str = "auto", dtype=None) -> Clip:
    """Load a CLIP model once, in eval mode, in `dtype` (default: `model_dtype(device)`)."""
    name, pretrained = resolve_model(model, pretrained)
    device = pick_device(device)
    if pretrained == RANDOM:
        print(f"WARNING: {name} has RANDOM weights (--pretrained none): embeddings, tags and maps "
              "are meaningless; use this only for smoke tests", file=sys.stderr)
    net, _, preprocess = _create(name, pretrained)
    dtype = dtype or model_dtype(device)
    net = net.to(device=device, dtype=dtype).eval()
    tokenizer = _open_clip().get_tokenizer(name)
    scale = float(net.logit_scale.exp().item()) if hasattr(net, "logit_scale") else 100.0
    cfg = getattr(net.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(net.visual, "image_size", 224))
    clip = Clip(net, preprocess, tokenizer, device, dtype, name, pretrained, 0, scale,
                input_size=int(size[0] if isinstance(size, (tuple, list)) else size),
                mean=tuple(cfg.get("mean", Clip.mean)), std=tuple(cfg.get("std", Clip.std)))
    clip.dim = int(clip.encode_texts(["a"]).shape[1])  # works for every tower, HF text ones included
    return clip


def free_clip(clip: Clip) -> None:
    """Drop the model and hand torch's cached CUDA memory back, so that another library (cuML)
    can have it; the Clip cannot embed afterwards."""
    import gc

    import torch

    clip.model = clip.batches = clip._scale = None
    gc.collect()  # a module's parameters can sit in reference cycles: free them now, not later
    torch.cuda.empty_cache()  # a no-op when CUDA was never used


# ---------------------------------------------------------------------------- vocabulary
def read_vocab(path: Path | str = DEFAULT_VOCAB) -> list[str]:
    """Concepts, one per line; blank lines and `#` comments skipped; duplicates folded."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tag vocabulary {path} not found: pass --tags-vocab with a text file, one concept per line")
    seen, out = set(), []
    for line in path.read_text(encoding="utf-8").splitlines():
        concept = line.split("#", 1)[0].strip()
        if concept and concept.casefold() not in seen:
            seen.add(concept.casefold())
            out.append(concept)
    if not out:
        raise UserError(f"tag vocabulary {path} has no concepts: write one concept per line")
    return out
