"""Counting words, bigrams and trigrams of millions of captions, fast and in bounded memory.

Each token gets an integer id (at most 2**21 live ids); an n-gram is its ids packed into one int64
(21 bits each), so counting is sorting integer arrays, not hashing Python strings. Per term two
counts are kept: `count` (occurrences, what scikit-learn's CountVectorizer sums) and `captions`
(how many captions contain it at least once).

Memory bound, and the error it costs: a table that grows past `max_terms` entries is pruned of
every entry whose count is <= t, t chosen so that at most half the cap remains; when the token
ids run out, the rarest tokens (total count <= t) are forgotten together with every n-gram that
contains them. The sum E of those thresholds is reported per table: every reported count is at
most E below the true count, and every term whose true count exceeds E is listed. While nothing
was pruned (E = 0, the usual case for one city) the counts are exact.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common.text import StopWords, tokenize_array

ID_BITS = 21
MAX_IDS = 1 << ID_BITS
ID_MASK = MAX_IDS - 1
DOC_BITS = 17
MAX_BATCH_CAPTIONS = 1 << DOC_BITS  # caption positions must fit the low bits of the duplicate check
ORDERS = (1, 2, 3)
DEFAULT_MAX_TERMS = 5_000_000
_EMPTY = np.zeros(0, dtype=np.int64)


def _run_starts(sorted_values: np.ndarray) -> np.ndarray:
    new = np.empty(len(sorted_values), dtype=bool)
    new[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    return np.flatnonzero(new)


def _repeats_within_captions(keys: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Keys of every extra occurrence of a term in a caption that already had it (exact).

    A cheap pass finds candidate captions (same 47-bit key hash in the same caption); only those
    captions get the exact, slower (key, caption) sort.
    """
    mixed = (keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & ~np.uint64(MAX_BATCH_CAPTIONS - 1)
    probe = np.sort(mixed | docs.astype(np.uint64))
    dup = probe[1:][probe[1:] == probe[:-1]]
    if not len(dup):
        return _EMPTY
    sub = np.isin(docs, np.unique(dup & np.uint64(MAX_BATCH_CAPTIONS - 1)).astype(docs.dtype))
    k, d = keys[sub], docs[sub]
    order = np.lexsort((k, d))
    k, d = k[order], d[order]
    again = (k[1:] == k[:-1]) & (d[1:] == d[:-1])
    return k[1:][again]


def _count_packed(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys of at most 46 bits: one sort of (key, caption) packed together gives all three counts."""
    packed = np.sort((keys << DOC_BITS) | docs)
    key_starts = _run_starts(packed >> DOC_BITS)
    pair_new = np.empty(len(packed), dtype=np.int64)
    pair_new[:1] = 1
    pair_new[1:] = packed[1:] != packed[:-1]
    occ = np.diff(np.append(key_starts, len(packed)))
    return packed[key_starts] >> DOC_BITS, occ, np.add.reduceat(pair_new, key_starts)


def count_batch(keys: np.ndarray, docs: np.ndarray, key_bits: int = 3 * ID_BITS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct keys (sorted), their occurrences, and in how many distinct captions each occurs."""
    if not len(keys):
        return _EMPTY, _EMPTY, _EMPTY
    if key_bits + DOC_BITS <= 63:
        return _count_packed(keys, docs)
    s = np.sort(keys)
    starts = _run_starts(s)
    uniq = s[starts]
    occ = np.diff(np.append(starts, len(s)))
    caps = occ.copy()
    extra = _repeats_within_captions(keys, docs)
    if len(extra):
        ek, ec = np.unique(extra, return_counts=True)
        caps[np.searchsorted(uniq, ek)] -= ec
    return uniq, occ, caps


class CountTable:
    """Sorted distinct int64 keys with their occurrence and caption counts."""

    def __init__(self):
        self.keys, self.counts, self.captions = _EMPTY, _EMPTY, _EMPTY
        self.error_bound = 0

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, keys: np.ndarray, counts: np.ndarray, captions: np.ndarray) -> None:
        """Merge sorted distinct batch counts: bump the keys we have, insert the new ones."""
        if not len(keys):
            return
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        self.counts[pos[found]] += counts[found]
        self.captions[pos[found]] += captions[found]
        new, at = ~found, pos[~found]
        self.keys = np.insert(self.keys, at, keys[new])
        self.counts = np.insert(self.counts, at, counts[new])
        self.captions = np.insert(self.captions, at, captions[new])

    def keep(self, mask: np.ndarray) -> None:
        self.keys, self.counts, self.captions = self.keys[mask], self.counts[mask], self.captions[mask]

    def prune_to(self, size: int) -> int:
        """Drop every entry with count <= t, t the smallest value that leaves at most `size`."""
        if len(self) <= size:
            return 0
        t = int(np.partition(self.counts, len(self) - size - 1)[len(self) - size - 1])
        self.keep(self.counts > t)
        self.error_bound += t
        return t

    def remap(self, order: int, new_ids: np.ndarray) -> None:
        """Renumber token ids after the vocabulary shrank; n-grams with a forgotten token go."""
        parts = [(self.keys >> (ID_BITS * (order - 1 - j))) & ID_MASK for j in range(order)]
        mapped = [new_ids[p] for p in parts]
        alive = np.logical_and.reduce([m >= 0 for m in mapped])
        keys = np.zeros(int(alive.sum()), dtype=np.int64)
        for m in mapped:
            keys = (keys << ID_BITS) | m[alive]
        sort = np.argsort(keys)
        self.keys = keys[sort]
        self.counts, self.captions = self.counts[alive][sort], self.captions[alive][sort]


class NgramCounter:
    """Streaming counts of unigrams, bigrams and trigrams over batches of captions.

    Unigrams skip stop words (in the caption's language) and the `exclude` tokens (the city name,
    the search keywords). Bigrams and trigrams keep every token but are dropped when they start or
    end with a function word, so "downtown madrid", "gran vía" and "plaza de españa" count while
    "of the" and "in madrid" do not.
    With `stop=None` and no `exclude`, counts equal CountVectorizer(ngram_range=(1, 3)).
    """

    def __init__(self, stop: StopWords | None = None, exclude: frozenset[str] = frozenset(),
                 max_terms: int = DEFAULT_MAX_TERMS):
        self.stop, self.exclude, self.max_terms = stop, frozenset(exclude), max_terms
        self.vocab: dict[str, int] = {}
        self.tokens: list[str] = []
        self.total = _EMPTY  # every occurrence of each token id, stop words included
        self.stop_ids = np.zeros(0, dtype=np.int32)
        self.excluded = np.zeros(0, dtype=bool)
        self.tables = {n: CountTable() for n in ORDERS}
        self.captions = 0
        self.vocab_error = 0

    # ------------------------------------------------------------------ vocabulary
    def _ids(self, tokens: list[str]) -> np.ndarray:
        if len(self.vocab) + len(tokens) > MAX_IDS:
            self._shrink_vocab(MAX_IDS // 2 - len(tokens))
        vocab, n0 = self.vocab, len(self.vocab)
        ids = np.fromiter((vocab.setdefault(t, len(vocab)) for t in tokens), np.int64, len(tokens))
        new = [t for t, i in zip(tokens, ids) if i >= n0]
        self.tokens.extend(new)
        self.total = np.concatenate([self.total, np.zeros(len(new), np.int64)])
        stop_ids = self.stop.ids(new) if self.stop else np.full(len(new), -1, np.int32)
        self.stop_ids = np.concatenate([self.stop_ids, stop_ids])
        self.excluded = np.concatenate([self.excluded, np.fromiter((t in self.exclude for t in new), bool, len(new))])
        return ids

    def _shrink_vocab(self, size: int) -> None:
        assert size > 0, "one batch holds more distinct tokens than the id space: lower the batch size"
        t = int(np.partition(self.total, len(self.total) - size - 1)[len(self.total) - size - 1])
        alive = np.flatnonzero(self.total > t)
        new_ids = np.full(len(self.total), -1, dtype=np.int64)
        new_ids[alive] = np.arange(len(alive))
        self.tokens = [self.tokens[i] for i in alive]
        self.vocab = {tok: i for i, tok in enumerate(self.tokens)}
        self.total, self.stop_ids, self.excluded = self.total[alive], self.stop_ids[alive], self.excluded[alive]
        for n, table in self.tables.items():
            table.remap(n, new_ids)
        self.vocab_error += t

    # ------------------------------------------------------------------ counting
    def add(self, captions: pa.Array, languages: pa.Array | None = None) -> None:
        """Count one batch of captions (at most MAX_BATCH_CAPTIONS), with their language labels."""
        assert len(captions) <= MAX_BATCH_CAPTIONS, "batch too large for the duplicate check"
        self.captions += int(pc.sum(pc.greater(pc.utf8_length(pc.fill_null(captions, "")), 0)).as_py() or 0)
        tokens, docs = tokenize_array(captions)
        if not len(tokens):
            return
        enc = pc.dictionary_encode(tokens)
        gid = self._ids(enc.dictionary.to_pylist())[enc.indices.to_numpy(zero_copy_only=False)]
        docs = docs.astype(np.int64)
        self.total += np.bincount(gid, minlength=len(self.total))
        stop, edge = self._stop_masks(gid, docs, languages, len(captions))
        same2, same3 = docs[1:] == docs[:-1], docs[2:] == docs[:-2]
        batches = {
            1: (gid, docs, ~stop & ~self.excluded[gid]),
            2: ((gid[:-1] << ID_BITS) | gid[1:], docs[1:], same2 & ~edge[:-1] & ~edge[1:]),
            3: ((gid[:-2] << 2 * ID_BITS) | (gid[1:-1] << ID_BITS) | gid[2:], docs[2:], same3 & ~edge[:-2] & ~edge[2:]),
        }
        for n, (keys, key_docs, keep) in batches.items():
            self.tables[n].add(*count_batch(keys[keep], key_docs[keep], n * ID_BITS))
            if len(self.tables[n]) > self.max_terms:
                self.tables[n].prune_to(self.max_terms // 2)

    def _stop_masks(self, gid, docs, languages, n_captions) -> tuple[np.ndarray, np.ndarray]:
        """Per token: a stop word (left out of single words)? a function word (no phrase edge)?"""
        if self.stop is None:
            none = np.zeros(len(gid), dtype=bool)
            return none, none
        word_ids, slots = self.stop_ids[gid], self.stop.slots(languages, n_captions)[docs]
        return self.stop.mask(word_ids, slots), self.stop.mask(word_ids, slots, function_only=True)

    # ------------------------------------------------------------------ results
    def error_bound(self, order: int) -> int:
        return self.tables[order].error_bound + self.vocab_error

    def terms(self, order: int, indices: np.ndarray | None = None) -> pa.Table:
        """term, count, captions for the given rows of a table (all rows by default)."""
        table = self.tables[order]
        idx = np.arange(len(table)) if indices is None else indices
        keys = table.keys[idx]
        vocab = pa.array(self.tokens, pa.string())
        words = [vocab.take(pa.array((keys >> (ID_BITS * (order - 1 - j))) & ID_MASK)) for j in range(order)]
        term = words[0] if order == 1 else pc.binary_join_element_wise(*words, " ")
        return pa.table({"term": term, "count": table.counts[idx], "captions": table.captions[idx]})

    def top(self, order: int, n: int) -> pa.Table:
        """The n terms found in the most captions, then by occurrences, ties in alphabetical order.

        Ranking by captions, not occurrences, keeps one caption that repeats a phrase 400 times
        (LAION has such spam) from topping the table.
        """
        captions = self.tables[order].captions
        if len(captions) > n:
            cutoff = np.partition(captions, len(captions) - n)[len(captions) - n]
            candidates = np.flatnonzero(captions >= cutoff)
        else:
            candidates = np.arange(len(captions))
        table = self.terms(order, candidates)
        keys = [("captions", "descending"), ("count", "descending"), ("term", "ascending")]
        table = table.take(pc.sort_indices(table, keys))
        return table.slice(0, n)
