"""Step 02: words, bigrams and trigrams of the captions, and the counter underneath."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import ngrams
from common.ngrams import NgramCounter
from tests.conftest import load_step

step = load_step("02_analyze_text")

CAPTIONS = [
    ("Downtown Madrid at night, Spain", "en"),
    ("the Royal Palace of Madrid", "en"),
    ("die hard fans in downtown Madrid", "en"),
    ("Die Altstadt von Madrid", "de"),
    ("la Plaza Mayor de Madrid", "es"),
    ("Gran Vía, Madrid", "es"),
    (None, "en"),
    ("", None),
    ("MADRID madrid Madrid!", None),
]


def write_part(folder, n, captions, languages=None):
    folder.mkdir(parents=True, exist_ok=True)
    cols = {"url": [f"https://example.com/{n}/{i}.jpg" for i in range(len(captions))], "caption": captions}
    if languages is not None:
        cols["language"] = languages
    pq.write_table(pa.table(cols), folder / f"part-{n:05d}.parquet")


def read(tmp_path, name):
    return pd.read_csv(tmp_path / "analysis" / f"{name}.csv", keep_default_na=False).set_index("term")


@pytest.fixture
def metadata(tmp_path):
    caps, langs = zip(*CAPTIONS)
    write_part(tmp_path / "metadata", 0, list(caps), list(langs))
    return tmp_path


def test_words_leave_out_city_and_stop_words_but_phrases_keep_the_city(metadata, capsys):
    assert step.main(["--city", "Madrid", "--data-dir", str(metadata)]) == 0
    words, bigrams, trigrams = read(metadata, "words"), read(metadata, "bigrams"), read(metadata, "trigrams")
    assert "madrid" not in words.index and "the" not in words.index and "of" not in words.index
    assert words.loc["downtown", "count"] == 2
    assert bigrams.loc["downtown madrid", "count"] == 2
    # function words cannot start or end a phrase, but may sit inside one
    assert "of madrid" not in bigrams.index and "in downtown" not in bigrams.index
    assert trigrams.loc["palace of madrid", "count"] == 1
    # content words that generous stop lists hold ("mayor", "gran", "vía") survive inside phrases
    assert "plaza mayor" in bigrams.index and "gran vía" in bigrams.index
    out = capsys.readouterr().out
    assert "words: " in out and "words leave out: madrid" in out


def test_counts_and_shares_are_per_caption(metadata):
    step.main(["--city", "Madrid", "--data-dir", str(metadata)])
    stats = json.loads((metadata / "analysis" / "_stats_text.json").read_text())
    assert stats["rows_in"] == 9 and stats["captions"] == 7 and stats["dropped"] == {"no_caption": 2}
    bigrams = read(metadata, "bigrams")
    # "madrid madrid" occurs twice in one caption: count 2, captions 1, share 1/7
    assert bigrams.loc["madrid madrid", "count"] == 2
    assert bigrams.loc["madrid madrid", "captions"] == 1
    assert bigrams.loc["madrid madrid", "share"] == pytest.approx(1 / 7, abs=1e-6)


def test_phrases_rank_by_captions_so_one_repetitive_caption_cannot_top_them(tmp_path):
    write_part(tmp_path / "metadata", 0, ["very long caption " * 50, "Royal Palace, Madrid", "royal palace gardens"])
    step.main(["--city", "Madrid", "--data-dir", str(tmp_path)])
    bigrams = pd.read_csv(tmp_path / "analysis" / "bigrams.csv")
    assert bigrams.iloc[0].tolist()[:3] == ["royal palace", 2, 2]
    assert bigrams.set_index("term").loc["very long", "count"] == 50


def test_stop_words_follow_each_captions_language(metadata):
    step.main(["--city", "Madrid", "--data-dir", str(metadata)])
    words = read(metadata, "words")
    # "die" is a German stop word but an English word: only the English caption's "die" counts
    assert words.loc["die", "count"] == 1
    assert words.loc["altstadt", "count"] == 1
    assert "la" not in words.index and "von" not in words.index


def test_keywords_are_left_out_of_words_and_default_to_step01s(metadata):
    (metadata / "metadata" / "_stats.json").write_text(json.dumps({"parameters": {"keywords": ["Spain"]}}))
    step.main(["--city", "Madrid", "--data-dir", str(metadata)])
    assert "spain" not in read(metadata, "words").index
    step.main(["--city", "Madrid", "--keywords", "--data-dir", str(metadata)])
    assert read(metadata, "words").loc["spain", "count"] == 1


def test_top_limits_rows_and_charts_are_png(metadata):
    step.main(["--city", "Madrid", "--top", "3", "--data-dir", str(metadata)])
    words = pd.read_csv(metadata / "analysis" / "words.csv")
    assert len(words) == 3 and list(words.columns) == ["term", "count", "captions", "share"]
    assert words["captions"].is_monotonic_decreasing
    for name in ("words", "bigrams", "trigrams"):
        assert (metadata / "analysis" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_skips_unchanged_input_and_redoes_when_it_changes(metadata, capsys):
    args = ["--city", "Madrid", "--data-dir", str(metadata)]
    step.main(args)
    capsys.readouterr()
    assert step.main(args) == 0
    assert "already analysed" in capsys.readouterr().out
    write_part(metadata / "metadata", 1, ["Retiro park in Madrid"])
    assert step.main(args) == 0
    assert "already analysed" not in capsys.readouterr().out
    assert read(metadata, "words").loc["retiro", "count"] == 1
    assert step.main(args + ["--overwrite"]) == 0
    assert "already analysed" not in capsys.readouterr().out


def test_reads_cleaned_rows_once_step_03_finished(metadata):
    cleaned = metadata / "metadata_cleaned"
    write_part(cleaned, 0, ["Cibeles fountain Madrid"])
    step.main(["--city", "Madrid", "--data-dir", str(metadata)])
    assert "downtown" in read(metadata, "words").index  # step 03 unfinished: step 01's rows
    (cleaned / "_stats.json").write_text("{}")
    step.main(["--city", "Madrid", "--data-dir", str(metadata)])
    assert list(read(metadata, "words").index) == ["cibeles", "fountain"]


def test_user_mistakes_are_one_line_and_exit_2(tmp_path, metadata, capsys):
    assert step.main(["--city", "Madrid", "--data-dir", str(tmp_path / "none")]) == 2
    assert "no part-*.parquet files" in capsys.readouterr().err
    assert step.main(["--city", " - ", "--data-dir", str(metadata)]) == 2
    assert "has no word of two or more letters or digits" in capsys.readouterr().err
    assert step.main(["--city", "Madrid", "--stop-languages", "xx", "--data-dir", str(metadata)]) == 2
    assert "no stop-word list for xx" in capsys.readouterr().err
    write_part(tmp_path / "empty" / "metadata", 0, [None, ""])
    assert step.main(["--city", "Madrid", "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err  # tqdm's bar shares stderr; the error itself is one line
    assert [line for line in err.splitlines() if "error" in line] == [
        f"error: no captions to analyse in {tmp_path / 'empty' / 'metadata'}: every caption is empty"]


# ---------------------------------------------------------------- the counter itself

def random_captions(n, seed=7):
    rng = random.Random(seed)
    vocab = "madrid spain city street night view plaza mayor de la the of photo old town café niño über a b".split()
    out = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 12))) + rng.choice(["", ", Madrid!", "  2019"])
           for _ in range(n)]
    return out + [None, "", "x y"]


def reference_counts(captions):
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(ngram_range=(1, 3))
    x = cv.fit_transform([c or "" for c in captions])
    occ, docs = np.asarray(x.sum(axis=0)).ravel(), np.asarray((x > 0).sum(axis=0)).ravel()
    return {t: (int(occ[i]), int(docs[i])) for t, i in cv.vocabulary_.items()}


def counted(counter):
    out = {}
    for n in (1, 2, 3):
        t = counter.terms(n).to_pydict()
        out.update({term: (c, d) for term, c, d in zip(t["term"], t["count"], t["captions"])})
    return out


def test_counts_equal_countvectorizer_without_stop_words():
    caps = random_captions(3000)
    counter = NgramCounter()
    for i in range(0, len(caps), 700):  # several batches, so merging across batches is exercised
        counter.add(pa.array(caps[i:i + 700], pa.string()))
    assert counted(counter) == reference_counts(caps)
    assert all(counter.error_bound(n) == 0 for n in (1, 2, 3))


def assert_within_bound(counter, truth):
    for n in (1, 2, 3):
        bound = counter.error_bound(n)
        got = {k: v[0] for k, v in counted(counter).items() if len(k.split()) == n}
        for term, c in got.items():
            assert truth[term][0] - bound <= c <= truth[term][0], term
        missing = [t for t, (c, _) in truth.items() if len(t.split()) == n and c > bound and t not in got]
        assert not missing


def test_pruned_tables_stay_within_their_reported_error_bound():
    caps = random_captions(3000)
    counter = NgramCounter(max_terms=400)
    for i in range(0, len(caps), 500):
        counter.add(pa.array(caps[i:i + 500], pa.string()))
    assert counter.error_bound(3) > 0 and len(counter.tables[3]) <= 400
    assert_within_bound(counter, reference_counts(caps))


def test_forgetting_rare_tokens_keeps_counts_within_the_bound(monkeypatch):
    monkeypatch.setattr(ngrams, "MAX_IDS", 64)  # the real id space is 2**21; shrink it to force forgetting
    rng = random.Random(3)
    caps = [" ".join(f"w{rng.randint(0, 40)}" if rng.random() < 0.8 else f"rare{rng.randint(0, 500)}"
                     for _ in range(6)) for _ in range(600)]
    counter = NgramCounter()
    for i in range(0, len(caps), 4):
        counter.add(pa.array(caps[i:i + 4], pa.string()))
    assert counter.vocab_error > 0 and len(counter.tokens) <= 64
    assert_within_bound(counter, reference_counts(caps))


def test_tokens_are_unicode_words_of_two_or_more_characters_within_one_caption():
    from common.text import tokenize_array

    caps = pa.array(["Café_x, «Madrid-Barajas» 2019!", None, "a b", "東京タワー ПРИВЕТ мир नमस्ते", "ab", "cd"])
    tokens, docs = tokenize_array(caps)
    assert tokens.to_pylist() == ["café_x", "madrid", "barajas", "2019", "東京タワー", "привет", "мир", "नमस्ते",
                                  "ab", "cd"]
    assert docs.tolist() == [0, 0, 0, 0, 3, 3, 3, 3, 4, 5]  # "ab" and "cd" stay two captions' tokens


@pytest.mark.parametrize("label, code", [("pt-BR", "pt"), ("iw", "he"), ("ES", "es"), ("zz", None), (None, None)])
def test_language_labels_map_to_shipped_stop_word_lists(label, code):
    from common.text import language_code

    assert language_code(label) == code
