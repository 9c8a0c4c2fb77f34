"""Captions to words: one tokenizer and the shipped stop-word lists, per caption language.

A token is a maximal run of letters, digits, combining marks or `_`, lowercased, at least two
characters long (the same rule as scikit-learn's default `\\b\\w\\w+\\b`, except that combining
marks stay inside words, so Hindi or decomposed accents are not cut apart). Tokenizing runs in
Arrow's C++ kernels over a whole record batch at once.

Stop words come from the `stop-words` package, which ships its lists as files: nothing is
downloaded at run time (nltk's lists would need `nltk.download`). Those lists are generous: they
hold content words too ("new", "old", "gran", "mayor", "vía"), fine for leaving out of single
words but fatal for phrases ("new york", "plaza mayor", "gran vía"). So the phrase rule (an
n-gram may not start or end with a stop word) uses only FUNCTION_WORDS below: articles,
prepositions, conjunctions and the copula of the languages most city captions are written in.
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
# closed-class words that make a bigram or trigram edge meaningless ("of the", "in madrid", "madrid and")
FUNCTION_WORDS = {
    "en": "the an of in on at to for from by with and or but as into onto over under near is are was were be "
          "this that these those it its my your our their his her vs",
    "es": "el la los las un una unos unas de del al en con por para que se su sus es son este esta estos estas",
    "fr": "le la les un une des de du au aux en dans sur sous par pour avec et ou que qui est sont ce cette ces "
          "son sa ses",
    "de": "der die das den dem des ein eine einen einem einer eines und oder in im am an auf aus bei mit nach "
          "von vom zu zum zur für über ist sind",
    "it": "il lo la gli le un una uno di del della dei delle degli da dal dalla in nel nella con su sul sulla "
          "per tra fra che",
    "pt": "os as um uma de do da dos das em no na nos nas com por para pelo pela ou que",
    "nl": "de het een van in op aan met voor bij en of is zijn te naar",
    "ca": "el la els les un una de del dels al als en amb per que",
}


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


def function_tokens(code: str) -> frozenset[str]:
    return frozenset(FUNCTION_WORDS.get(code, "").split())


class StopWords:
    """Which token is a stop word (or a function word) in which caption.

    Each caption uses its language's lists plus English's (captions in every language mix in
    English); captions without a usable language label use the union of `default_languages`.
    Words are kept as a small index (one column per distinct word) so the test is vectorized.
    """

    def __init__(self, default_languages: list[str]):
        self.languages = supported_languages()
        self.slot_of = {code: i for i, code in enumerate(self.languages)}
        self.default_slot = len(self.languages)
        en_stop, en_func = stop_tokens(DEFAULT_LANGUAGE), function_tokens(DEFAULT_LANGUAGE)
        stop = [stop_tokens(c) | en_stop for c in self.languages]
        stop.append(en_stop.union(*(stop_tokens(c) for c in default_languages)))
        func = [function_tokens(c) | en_func for c in self.languages]
        func.append(en_func.union(*(function_tokens(c) for c in default_languages)))
        self.index = {w: i for i, w in enumerate(sorted(frozenset().union(*stop, *func)))}
        self.matrix = self._matrix(stop)
        self.function_matrix = self._matrix(func)

    def _matrix(self, sets: list[frozenset[str]]) -> np.ndarray:
        out = np.zeros((len(sets), len(self.index)), dtype=bool)
        for slot, words in enumerate(sets):
            out[slot, [self.index[w] for w in words]] = True
        return out

    def ids(self, tokens: list[str]) -> np.ndarray:
        """Column of each token in the index, -1 for tokens that are in no list."""
        get = self.index.get
        return np.fromiter((get(t, -1) for t in tokens), dtype=np.int32, count=len(tokens))

    def slots(self, languages: pa.Array | None, n: int) -> np.ndarray:
        """The list (slot) each caption uses, from its language label."""
        if languages is None:
            return np.full(n, self.default_slot, dtype=np.int16)
        enc = pc.dictionary_encode(languages.cast(pa.string()))
        table = np.array([self.slot_of.get(language_code(v), self.default_slot)
                          for v in enc.dictionary.to_pylist()] + [self.default_slot], dtype=np.int16)
        idx = pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(zero_copy_only=False)
        return table[idx]

    def mask(self, word_ids: np.ndarray, caption_slots: np.ndarray, function_only: bool = False) -> np.ndarray:
        """True where a token is a stop word (or, with function_only, a function word) of its caption."""
        matrix = self.function_matrix if function_only else self.matrix
        hit = word_ids >= 0
        out = np.zeros(len(word_ids), dtype=bool)
        out[hit] = matrix[caption_slots[hit], word_ids[hit]]
        return out
