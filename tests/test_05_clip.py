"""common.clip: model names (the QuickGELU trap), seeded random weights, Hub loading, vocabulary."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from common.cli import UserError
from common.clip import DEFAULT_VOCAB, load_clip, read_vocab, resolve_model
from common.images import model_square
from tests.hub_server import hub_server  # noqa: F401
from tests.tiny_clip import checkpoint_files, register


@pytest.fixture(scope="module")
def tiny():
    return register()


@pytest.mark.parametrize("model, pretrained, expected", [
    ("ViT-L/14@336px", None, ("ViT-L-14-336-quickgelu", "openai")),     # the seed's default
    ("ViT-L-14-336", "openai", ("ViT-L-14-336-quickgelu", "openai")),   # the trap: plain config + OpenAI weights
    ("ViT-B/32", None, ("ViT-B-32-quickgelu", "openai")),
    ("ViT-B-32", "laion400m_e31", ("ViT-B-32-quickgelu", "laion400m_e31")),  # also trained with QuickGELU
    ("ViT-B-32", "laion2b_s34b_b79k", ("ViT-B-32", "laion2b_s34b_b79k")),    # trained with GELU: unchanged
    ("ViT-L-14-336-quickgelu", "openai", ("ViT-L-14-336-quickgelu", "openai")),
    ("hf-hub:org/some-clip", None, ("hf-hub:org/some-clip", None)),
    ("ViT-L/14@336px", "none", ("ViT-L-14-336-quickgelu", "none")),
    ("ViT-B-32", "random", ("ViT-B-32", "none")),
])
def test_resolve_model_maps_openai_weights_to_quickgelu_configs(model, pretrained, expected):
    assert resolve_model(model, pretrained) == expected
    assert resolve_model(*expected) == expected  # step 06 re-resolves what step 05 recorded


@pytest.mark.parametrize("model, pretrained, message", [
    ("ViT-Q/99", None, "unknown CLIP model 'ViT-Q/99'"),
    ("ViT-B-32", None, "model 'ViT-B-32' needs --pretrained"),
    ("ViT-B-32", "not-a-tag", "no pretrained weights 'not-a-tag' for 'ViT-B-32'"),
])
def test_resolve_model_explains_bad_names(model, pretrained, message):
    with pytest.raises(UserError, match=message):
        resolve_model(model, pretrained)


def test_quickgelu_config_really_runs_quickgelu(tiny):
    plain = load_clip(tiny, "none", "cpu")
    quick = load_clip(f"{tiny}-quickgelu", "none", "cpu")
    names = {type(m).__name__ for m in quick.model.modules()}
    assert "QuickGELU" in names
    assert "QuickGELU" not in {type(m).__name__ for m in plain.model.modules()}


def test_random_weights_are_seeded_and_announced(tiny, capsys):
    a = load_clip(tiny, "none", "cpu")
    torch.manual_seed(12345)  # the caller's random state must not matter
    b = load_clip(tiny, "none", "cpu")
    texts = ["a red square", "a tram in the fog"]
    np.testing.assert_array_equal(a.encode_texts(texts), b.encode_texts(texts))
    assert "RANDOM weights" in capsys.readouterr().err
    assert a.pretrained == "none" and a.device == "cpu" and a.dtype == torch.float32


def test_embeddings_are_unit_length_and_concepts_average_templates(tiny):
    clip = load_clip(tiny, "none", "cpu")
    assert clip.dim == 32 and clip.input_size == 32
    images = clip.encode_pixels(np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8))
    concepts = clip.encode_concepts(["red", "tram"], templates=("a photo of {}.", "{}"))
    assert images.dtype == np.float32 and images.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    by_hand = clip.encode_texts(["a photo of red.", "a photo of tram.", "red", "tram"]).reshape(2, 2, -1).mean(0)
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_allclose(concepts, by_hand, atol=1e-6)


def test_text_embeddings_without_padding_equal_open_clip_encode_text(tiny):
    clip = load_clip(tiny, "none", "cpu")
    texts = ["a", "a photo of a red tram in the rain.", "#madrid"]
    tokens = clip.tokenizer(texts)
    with torch.inference_mode():
        full = clip.model.encode_text(tokens).float().numpy()
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    np.testing.assert_allclose(clip.encode_texts(texts), full, atol=1e-5)


def test_pixel_path_matches_open_clip_preprocess(tiny):
    clip = load_clip(tiny, "none", "cpu")
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(48, 64), (90, 30), (40, 40)]]
    reference = clip.encode_images(torch.stack([clip.preprocess(p) for p in pictures]))
    ours = clip.encode_pixels(np.stack([model_square(p, clip.input_size) for p in pictures]))
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_hub_checkpoint_loads_through_the_real_client(hub_server, tiny):
    files, reference = checkpoint_files(seed=7)
    hub_server.add_repo("city-test/tiny-clip", files, repo_type="model")
    clip = load_clip("hf-hub:city-test/tiny-clip", None, "cpu")
    assert (clip.name, clip.pretrained) == ("hf-hub:city-test/tiny-clip", None)
    assert clip.mean == (0.5, 0.5, 0.5)  # the repo's preprocessing, not the default
    tokens = clip.tokenizer(["a bridge at night"])
    with torch.no_grad():
        expected = reference.encode_text(tokens).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(clip.encode_texts(["a bridge at night"]), expected, atol=1e-5)
    assert any(p.endswith("open_clip_model.safetensors") for p in hub_server.paths_requested())


def test_missing_hub_repo_is_one_clear_error(hub_server, tiny):
    with pytest.raises(UserError, match="could not load CLIP weights"):
        load_clip("hf-hub:city-test/does-not-exist", None, "cpu")


def test_shipped_vocabulary_has_hundreds_of_concepts():
    concepts = read_vocab(DEFAULT_VOCAB)
    assert 200 <= len(concepts) <= 1000
    assert len({c.casefold() for c in concepts}) == len(concepts)
    assert not any(c.startswith("#") for c in concepts)


def test_vocabulary_skips_comments_and_duplicates(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("# colours\nred\n\nRed\nblue  # primary\n", encoding="utf-8")
    assert read_vocab(path) == ["red", "blue"]
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(UserError, match="has no concepts"):
        read_vocab(tmp_path / "empty.txt")
    with pytest.raises(UserError, match="not found"):
        read_vocab(tmp_path / "missing.txt")
