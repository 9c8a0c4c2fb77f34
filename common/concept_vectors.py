"""The CLIP text embeddings of the concepts that name step 06's clusters, computed once per
model and vocabulary.

A vocabulary of ~370 concepts in 7 prompt templates is ~2,600 prompts through the text tower:
seconds on a GPU, many minutes on a laptop CPU. Re-running step 06 with other map parameters must
not pay that again, so the vectors are kept beside the map, keyed by model, weights, templates and
the concepts themselves.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from common.files import atomic_path, read_json
from common.paths import DataTree, stats_file

CACHE_NAME = "concept_vectors.npz"


def cache_file(tree: DataTree) -> Path:
    """Step 06's copy, beside the map."""
    return tree.projection / CACHE_NAME


def tags_cache_file(tree: DataTree) -> Path:
    """Step 05's copy, written when it tags: step 06 reads it instead of encoding the same prompts again."""
    return tree.embeddings / CACHE_NAME


def default_vocab(tree: DataTree) -> Path:
    """Step 05's tag vocabulary when its _stats.json names one that still exists, else the shipped one."""
    from common.clip import DEFAULT_VOCAB

    path = stats_file(tree.embeddings)
    used = (read_json(path).get("tags") or {}).get("vocabulary") if path.is_file() else None
    return Path(used) if used and Path(used).is_file() else DEFAULT_VOCAB


def cache_key(model: str, pretrained: str | None, concepts: list[str], templates) -> str:
    blob = json.dumps([model, pretrained, list(templates), concepts], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def concept_vectors(tree: DataTree, model: str, pretrained: str | None, concepts: list[str],
                    encode: Callable[[], np.ndarray], templates, write_to: Path | None = None) -> tuple[np.ndarray, bool]:
    """(vectors, from_cache): cached vectors when a cache's key matches, else encode() and keep them.

    Both copies are read (step 05's and step 06's); only `write_to` (default: step 06's) is written,
    so each step writes only its own folder.
    """
    key = cache_key(model, pretrained, concepts, templates)
    write_to = write_to or cache_file(tree)
    for path in dict.fromkeys([write_to, tags_cache_file(tree), cache_file(tree)]):
        if path.is_file():
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["key"]) == key:
                    return cached["vectors"], True
    vectors = np.asarray(encode(), dtype=np.float32)
    with atomic_path(write_to) as tmp, open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), vectors=vectors)
    return vectors, False
