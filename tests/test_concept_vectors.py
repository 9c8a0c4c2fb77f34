"""The concepts' text embeddings are computed once: step 05 keeps them, step 06 reads them."""
from __future__ import annotations

import numpy as np
import pytest

from common.concept_vectors import cache_file, concept_vectors, tags_cache_file
from common.paths import DataTree

TEMPLATES = ("a photo of {}.",)


def test_step_06_reads_the_vectors_step_05_kept_and_writes_only_its_own_folder(tmp_path):
    tree = DataTree(tmp_path)
    vectors = np.eye(3, 4, dtype=np.float32)
    got, cached = concept_vectors(tree, "ViT-B-32", "none", ["a", "b", "c"], lambda: vectors, TEMPLATES,
                                  write_to=tags_cache_file(tree))
    assert not cached and tags_cache_file(tree).is_file() and not cache_file(tree).exists()

    def encode_again():
        raise AssertionError("encoded twice")

    got, cached = concept_vectors(tree, "ViT-B-32", "none", ["a", "b", "c"], encode_again, TEMPLATES)
    assert cached and not cache_file(tree).exists()
    np.testing.assert_array_equal(got, vectors)


@pytest.mark.parametrize("change", [{"model": "ViT-L-14"}, {"pretrained": "openai"}, {"concepts": ["a", "b"]}])
def test_another_model_or_vocabulary_is_encoded_anew(tmp_path, change):
    tree = DataTree(tmp_path)
    base = {"model": "ViT-B-32", "pretrained": "none", "concepts": ["a", "b", "c"]}
    concept_vectors(tree, *base.values(), lambda: np.ones((3, 4), np.float32), TEMPLATES,
                    write_to=tags_cache_file(tree))
    args = {**base, **change}
    fresh = np.zeros((len(args["concepts"]), 4), np.float32)
    got, cached = concept_vectors(tree, *args.values(), lambda: fresh, TEMPLATES)
    assert not cached and cache_file(tree).is_file()
    np.testing.assert_array_equal(got, fresh)
