"""Captions to words: one tokenizer and the shipped stop-word lists, per caption language.

A token is a maximal run of letters, digits, combining marks or `_`, lowercased, at least two
characters long (the same rule as scikit-learn's default `\\b\\w\\w+\\b`, except that combining
marks stay inside words, so Hindi or decomposed accents are not cut apart). Tokenizing runs in
Arrow's C++ kernels over a whole record batch at once.

Stop words come from the `stop-words` package, which ships its lists as files: nothing is
downloaded at run time (nltk's lists would need `nltk.download`).
"""
from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import stop_words

# RE2 syntax: everything that is not a letter, digit, mark or underscore separates tokens
TOKEN_SEPARATOR_RE2 = r"[^\p{L}\p{N}\p{M}_]+"
MIN_TOKEN_CHARS = 2
DEFAULT_LANGUAGE = "en"
# codes some language detectors emit for a language the stop-word package files under another code
LANGUAGE_ALIASES = {"iw": "he", "no": "nb", "nn": "nb", "in": "id", "zsm": "ms", "fil": None}


def tokenize_array(captions: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """All tokens of all captions, flat, and the caption index (position in `captions`) of each."""
    lists = pc.split_pattern_regex(pc.utf8_lower(captions), TOKEN_SEPARATOR_RE2)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    keep = pc.greater_equal(pc.utf8_length(flat), MIN_TOKEN_CHARS)
    return pc.filter(flat, keep), pc.filter(parents, keep).to_numpy(zero_copy_only=False)


def tokenize(text: str) -> list[str]:
    """The tokens of one string, by exactly the rule used for captions."""
    tokens, _ = tokenize_array(pa.array([text], pa.string()))
    return tokens.to_pylist()


def language_code(value: str | None) -> str | None:
    """'pt-BR' -> 'pt', 'iw' -> 'he'; None when the stop-word package has no list for it."""
    if not value:
        return None
    code = value.strip().lower().replace("_", "-").split("-")[0]
    code = LANGUAGE_ALIASES.get(code, code)
    return code if code in stop_words.LANGUAGE_MAPPING else None


@functools.lru_cache(maxsize=None)
def stop_tokens(code: str) -> frozenset[str]:
    """A language's stop words as tokens ("don't" gives "don"), so they compare with caption tokens."""
    words = stop_words.get_stop_words(code)
    return frozenset(tokenize(" ".join(words)))


def supported_languages() -> list[str]:
    return sorted(stop_words.LANGUAGE_MAPPING)


class StopWords:
    """Which token is a stop word in which caption: each language's list plus English's.

    Captions without a usable language label get the union of `default_languages`. Stop words are
    kept as a small index (one column per distinct stop word) so the per-token test is vectorized.
    """

    def __init__(self, default_languages: list[str]):
        self.languages = supported_languages()
        self.slot_of = {code: i for i, code in enumerate(self.languages)}
        self.default_slot = len(self.languages)
        sets = [stop_tokens(c) | stop_tokens(DEFAULT_LANGUAGE) for c in self.languages]
        sets.append(frozenset().union(*(stop_tokens(c) for c in default_languages)))
        self.index = {w: i for i, w in enumerate(sorted(frozenset().union(*sets)))}
        self.matrix = np.zeros((len(sets), len(self.index)), dtype=bool)
        for slot, words in enumerate(sets):
            self.matrix[slot, [self.index[w] for w in words]] = True

    def ids(self, tokens: list[str]) -> np.ndarray:
        """Stop-word column of each token, -1 for tokens that are no language's stop word."""
        get = self.index.get
        return np.fromiter((get(t, -1) for t in tokens), dtype=np.int32, count=len(tokens))

    def slots(self, languages: pa.Array | None, n: int) -> np.ndarray:
        """The stop-word list (slot) each caption uses, from its language label."""
        if languages is None:
            return np.full(n, self.default_slot, dtype=np.int16)
        enc = pc.dictionary_encode(languages.cast(pa.string()))
        table = np.array([self.slot_of.get(language_code(v), self.default_slot)
                          for v in enc.dictionary.to_pylist()] + [self.default_slot], dtype=np.int16)
        idx = pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(zero_copy_only=False)
        return table[idx]

    def mask(self, stop_ids: np.ndarray, caption_slots: np.ndarray) -> np.ndarray:
        """True where a token (its stop-word column) is a stop word in its caption's language."""
        hit = stop_ids >= 0
        out = np.zeros(len(stop_ids), dtype=bool)
        out[hit] = self.matrix[caption_slots[hit], stop_ids[hit]]
        return out
