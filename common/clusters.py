"""Clusters on the 2D map (scikit-learn's HDBSCAN) and a name for each.

A cluster's name has two parts, both scored:
- concepts: the vocabulary concepts whose CLIP text embedding points the same way as the cluster's
  centroid *minus the whole collection's mean* (cosine). Subtracting the mean is what keeps a
  concept that matches every image of the collection ("city", "building") from naming every
  cluster: only what sets the cluster apart counts.
- terms: its most distinctive caption words by c-TF-IDF (a cluster's captions taken as one
  document; tf = the word's share of the cluster's words, idf = log(1 + A / f), with A the mean
  word count per cluster and f the word's count over all clusters; each caption counts a word
  once; a word must be in 2+ of the cluster's captions, and in a larger share of them than of
  all clustered captions).

scikit-learn's HDBSCAN builds its spanning tree in O(n^2) (80k points: ~50 s here; 1M: hours),
so past `sample` points it clusters a seeded random sample and gives every other point the
cluster of its nearest sampled neighbour on the map.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

NOISE = -1
CHUNK = 65_536
# languages whose function words are dropped from the caption terms (RE-LAION "multi" is mostly these)
STOP_LANGUAGES = ("english", "spanish", "french", "german", "italian", "portuguese", "dutch", "catalan",
                  "polish", "russian", "swedish", "danish", "norwegian", "turkish")
TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"  # words of 3+ letters: no numbers, no ids, no "jpg"-like bits
# a term names a cluster only if its share there beats its share in the whole collection: the
# city's own name, in every caption, is never "distinctive" (the margin absorbs rounding)
OVER_REPRESENTED = 1.0 + 1e-9


@dataclass(frozen=True)
class HdbscanParams:
    min_cluster_size: int | None = None  # None: max(5, n // 200)
    min_samples: int | None = None
    epsilon: float = 0.0
    method: str = "eom"
    sample: int = 50_000
    seed: int | None = 42


@dataclass
class ClusterName:
    cluster: int
    size: int
    concepts: list[tuple[str, float]] = field(default_factory=list)
    terms: list[tuple[str, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        words = ", ".join(t for t, _ in self.terms)
        if self.concepts:
            return f"{self.concepts[0][0]}: {words}" if words else self.concepts[0][0]
        return words or f"cluster {self.cluster}"

    @property
    def score(self) -> float:
        return self.concepts[0][1] if self.concepts else float("nan")

    def as_dict(self) -> dict:
        return {"cluster": self.cluster, "size": self.size, "label": self.label,
                "concepts": [{"concept": c, "score": round(s, 4)} for c, s in self.concepts],
                "terms": [{"term": t, "score": round(s, 4)} for t, s in self.terms]}


# ---------------------------------------------------------------------------- clustering
def default_min_cluster_size(n: int) -> int:
    return max(5, n // 200)


def hdbscan_clusters(xy: np.ndarray, p: HdbscanParams) -> np.ndarray:
    """Cluster id per point (-1 = noise), numbered by decreasing size."""
    from sklearn.cluster import HDBSCAN
    from sklearn.neighbors import KDTree

    n = len(xy)
    if n < 2:
        return np.full(n, NOISE, np.int64)
    mcs = p.min_cluster_size or default_min_cluster_size(n)
    sample = np.arange(n)
    if n > p.sample:
        sample = np.sort(np.random.default_rng(p.seed).choice(n, p.sample, replace=False))
        mcs = max(2, round(mcs * p.sample / n))  # the size asked for is in images of the whole map
    model = HDBSCAN(min_cluster_size=max(2, min(mcs, len(sample))), min_samples=p.min_samples,
                    cluster_selection_epsilon=p.epsilon, cluster_selection_method=p.method, copy=True)
    labels = model.fit_predict(xy[sample])
    if len(sample) < n:
        nearest = KDTree(xy[sample]).query(xy, k=1, return_distance=False)[:, 0]
        labels = labels[nearest]
    return renumber_by_size(labels)


def renumber_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster 0 is the largest: stable, readable ids whatever order HDBSCAN found them in."""
    out = np.full(len(labels), NOISE, np.int64)
    found = labels >= 0
    if not found.any():
        return out
    ids, counts = np.unique(labels[found], return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    remap = np.full(labels.max() + 1, NOISE, np.int64)
    remap[order] = np.arange(len(order))
    out[found] = remap[labels[found]]
    return out


# ---------------------------------------------------------------------------- concepts
def centroids(vectors: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, dim) cluster means and the collection mean, float64, summed a chunk at a time."""
    sums = np.zeros((k, vectors.shape[1]), np.float64)
    total = np.zeros(vectors.shape[1], np.float64)
    for start in range(0, len(vectors), CHUNK):
        chunk = np.asarray(vectors[start:start + CHUNK], dtype=np.float64)
        lab = labels[start:start + CHUNK]
        total += chunk.sum(axis=0)
        inside = lab >= 0
        if inside.any():
            onehot = sp.csr_matrix((np.ones(inside.sum()), (lab[inside], np.flatnonzero(inside))),
                                   shape=(k, len(chunk)))
            sums += onehot @ chunk
    counts = np.bincount(labels[labels >= 0], minlength=k)
    return sums / np.maximum(counts, 1)[:, None], total / max(len(vectors), 1)


def concept_scores(cluster_means: np.ndarray, collection_mean: np.ndarray, concept_vectors: np.ndarray) -> np.ndarray:
    """(k, n_concepts) cosine between each concept and (cluster mean - collection mean)."""
    direction = cluster_means - collection_mean[None, :]
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    concepts = np.asarray(concept_vectors, np.float64)
    concepts = concepts / np.maximum(np.linalg.norm(concepts, axis=1, keepdims=True), 1e-12)
    return direction @ concepts.T


def top_concepts(scores: np.ndarray, concepts: list[str], top: int) -> list[list[tuple[str, float]]]:
    out = []
    for row in scores:
        best = np.argsort(-row, kind="stable")[:top]
        out.append([(concepts[i], float(row[i])) for i in best])
    return out


# ---------------------------------------------------------------------------- caption terms
def stop_words() -> list[str]:
    """Function words of STOP_LANGUAGES, cut into tokens the way captions are ("don't" -> "don")."""
    import re

    from stop_words import get_stop_words

    words = set()
    for language in STOP_LANGUAGES:
        for w in get_stop_words(language):
            words.update(re.findall(TOKEN_PATTERN, w.lower()))
    return sorted(words)


def ctfidf_terms(captions: list[str | None], labels: np.ndarray, k: int, top: int,
                 min_captions: int = 2) -> list[list[tuple[str, float]]]:
    """The `top` most distinctive words of each cluster, with their c-TF-IDF scores."""
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [c or "" for c in captions]
    if k == 0 or top <= 0:
        return [[] for _ in range(k)]
    vectorizer = CountVectorizer(lowercase=True, token_pattern=TOKEN_PATTERN, stop_words=stop_words(), binary=True)
    try:
        x = vectorizer.fit_transform(docs)
    except ValueError:  # no word anywhere: every caption empty or made of stop words
        return [[] for _ in range(k)]
    inside = np.flatnonzero(labels >= 0)
    onehot = sp.csr_matrix((np.ones(len(inside)), (labels[inside], inside)), shape=(k, len(docs)))
    sizes = np.bincount(labels[inside], minlength=k)
    vocab = vectorizer.get_feature_names_out()
    if k * x.shape[1] > 50_000_000:
        return _ctfidf_sparse(onehot @ x, sizes, vocab, top, min_captions)
    return _ctfidf_dense((onehot @ x).toarray(), sizes, vocab, top, min_captions)


def _ctfidf_dense(counts: np.ndarray, sizes: np.ndarray, vocab, top: int,
                  min_captions: int) -> list[list[tuple[str, float]]]:
    """counts[c, t] = captions of cluster c with word t; sizes[c] = captions in cluster c."""
    totals = counts.sum(axis=0)
    avg_words = counts.sum() / max(len(counts), 1)
    idf = np.log1p(avg_words / np.maximum(totals, 1))
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    # share of the cluster's captions with the word vs share of all clustered captions
    over = counts / np.maximum(sizes, 1)[:, None] > totals / max(sizes.sum(), 1) * OVER_REPRESENTED
    score = np.where((counts >= min_captions) & over, tf * idf, 0.0)
    out = []
    for row in score:
        best = [i for i in np.argsort(-row, kind="stable")[:top] if row[i] > 0]
        out.append([(str(vocab[i]), float(row[i])) for i in best])
    return out


def _ctfidf_sparse(counts: sp.csr_matrix, sizes: np.ndarray, vocab, top: int,
                   min_captions: int) -> list[list[tuple[str, float]]]:
    """Same as the dense form, one cluster row at a time, for huge vocabularies x many clusters."""
    counts = sp.csr_matrix(counts)
    totals = np.asarray(counts.sum(axis=0)).ravel()
    avg_words = counts.sum() / max(counts.shape[0], 1)
    idf = np.log1p(avg_words / np.maximum(totals, 1))
    out = []
    for i in range(counts.shape[0]):
        row = counts.getrow(i)
        cols, vals = row.indices, row.data
        tf = vals / max(vals.sum(), 1)
        over = vals / max(sizes[i], 1) > totals[cols] / max(sizes.sum(), 1) * OVER_REPRESENTED
        score = np.where((vals >= min_captions) & over, tf * idf[cols], 0.0)
        best = [j for j in np.argsort(-score, kind="stable")[:top] if score[j] > 0]
        out.append([(str(vocab[cols[j]]), float(score[j])) for j in best])
    return out


# ---------------------------------------------------------------------------- names
def name_clusters(labels: np.ndarray, vectors: np.ndarray, captions: list[str | None],
                  concepts: list[str] | None, concept_vectors: np.ndarray | None,
                  top_concepts_n: int = 3, top_terms_n: int = 3) -> list[ClusterName]:
    """One ClusterName per cluster id 0..k-1 (noise gets none)."""
    k = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    names = [ClusterName(c, int(sizes[c])) for c in range(k)]
    if k and concepts and concept_vectors is not None and top_concepts_n > 0:
        means, mean = centroids(vectors, labels, k)
        for name, best in zip(names, top_concepts(concept_scores(means, mean, concept_vectors), concepts,
                                                  top_concepts_n)):
            name.concepts = best
    for name, terms in zip(names, ctfidf_terms(captions, labels, k, top_terms_n)):
        name.terms = terms
    return names
