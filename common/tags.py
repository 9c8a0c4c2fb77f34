"""Zero-shot tags: each image's top-k concepts from a vocabulary, with a calibrated confidence.

Confidence = softmax over the whole vocabulary of CLIP's cosine similarities times the model's
own logit scale (100 for OpenAI's CLIP), i.e. the probability CLIP's contrastive head assigns to
"this concept, rather than any other in the vocabulary". It sums to 1 over the vocabulary, so it
reads the same way for every image, and it depends on the vocabulary: a longer list spreads it.
The output is the second recipe's Gephi edge table: Source (image id), Target (tag), Weight.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.files import atomic_path

TAG_COLUMNS = ("Source", "Target", "Weight")


def tag_probabilities(image_emb: np.ndarray, concept_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """(N, V) softmax over the vocabulary of scaled cosine similarities (both inputs L2-normalised)."""
    logits = logit_scale * (np.asarray(image_emb, np.float32) @ np.asarray(concept_emb, np.float32).T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def top_tags(ids, image_emb: np.ndarray, concepts: list[str], concept_emb: np.ndarray,
             logit_scale: float, k: int, chunk: int = 8192):
    """Yield (id, concept, confidence) for each image's k most likely concepts, best first."""
    k = max(0, min(k, len(concepts)))
    ids = list(ids)
    for start in range(0, len(ids), chunk):
        probs = tag_probabilities(image_emb[start:start + chunk], concept_emb, logit_scale)
        best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        for row, image_id in enumerate(ids[start:start + chunk]):
            for j in best[row]:
                yield image_id, concepts[j], float(probs[row, j])


def write_tags_csv(rows, path: Path) -> int:
    """Stream the edge table to disk atomically (a million images make millions of edges)."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(TAG_COLUMNS)
        for source, target, weight in rows:
            writer.writerow((source, target, f"{weight:.6f}"))
            n += 1
    return n
