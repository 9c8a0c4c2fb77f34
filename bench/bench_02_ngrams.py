"""Benchmark: step 02's n-gram counting vs scikit-learn's CountVectorizer(ngram_range=(1, 3)).

Both count the words, bigrams and trigrams of the same generated captions, read from the same
parquet file; each repetition runs each tool in a fresh process (interleaved), so the peak RSS
is the tool's own. Ours runs without stop words here, so that both count the same thing; a
separate pass checks that every term's count is equal. "ours+stop" is the real step's setting
(stop words per caption language, city left out of the words), timed for reference.

    python bench/bench_02_ngrams.py                          # 1,000,000 captions, 3 repetitions
    python bench/bench_02_ngrams.py --captions 200000 --reps 5
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
VOCAB = 60_000
CITY = "Madrid"
SYLLABLES = "ma dri de la ca sa pla za via gran ro yal pa la cio fu te bo lo ne ri ta mu se o es an to li be ra".split()
BATCH = 65_536


# ---------------------------------------------------------------- input
def make_vocab(rng: np.random.Generator) -> np.ndarray:
    """Zipf-ranked made-up words (Latin letters, a few accents): a caption-like vocabulary."""
    lengths = rng.integers(1, 5, VOCAB)
    picks = rng.integers(0, len(SYLLABLES), (VOCAB, 4))
    words = {"".join(SYLLABLES[j] for j in row[:n]) for row, n in zip(picks, lengths)}
    words = sorted(words)
    accents = str.maketrans({"a": "á", "e": "é", "o": "ó"})
    words = [w.translate(accents) if i % 17 == 0 else w for i, w in enumerate(words)]
    head = ["the", "of", "in", "and", "at", "de", "la", "madrid", "city", "view", "night", "street", "photo"]
    return np.array(head + [w for w in words if w not in head], dtype=object)


def make_captions(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = make_vocab(rng)
    punct = np.array(["", "", "", ",", ".", " -", "!", " |"], dtype=object)
    with pq.ParquetWriter(path, pa.schema([("caption", pa.string()), ("language", pa.string())])) as w:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            lengths = rng.integers(3, 24, m)
            ids = np.minimum(rng.zipf(1.25, lengths.sum()) - 1, len(vocab) - 1)
            toks = vocab[ids] + punct[rng.integers(0, len(punct), len(ids))]
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            caps = [" ".join(toks[bounds[i]:bounds[i + 1]]) for i in range(m)]
            langs = rng.choice(["en", "es", "fr", None], m, p=[0.5, 0.3, 0.1, 0.1])
            w.write_table(pa.table({"caption": caps, "language": langs}))


# ---------------------------------------------------------------- the two tools
def run_ours(path: Path, stop: bool):
    from common.files import iter_batches
    from common.ngrams import NgramCounter
    from common.text import StopWords, tokenize

    counter = NgramCounter(StopWords(["en"]), frozenset(tokenize(CITY))) if stop else NgramCounter()
    for batch in iter_batches([path], ["caption", "language"], batch_size=BATCH):
        counter.add(batch.column(0), batch.column(1) if stop else None)
    return counter


def run_sklearn(path: Path):
    from sklearn.feature_extraction.text import CountVectorizer

    captions = [c or "" for c in pq.read_table(path, columns=["caption"]).column(0).to_pylist()]
    cv = CountVectorizer(ngram_range=(1, 3))
    x = cv.fit_transform(captions)
    return cv, np.asarray(x.sum(axis=0)).ravel()


def worker(tool: str, path: Path) -> dict:
    t = time.perf_counter()
    if tool == "sklearn":
        cv, _ = run_sklearn(path)
        distinct = len(cv.vocabulary_)
    else:
        counter = run_ours(path, stop=tool == "ours+stop")
        distinct = sum(len(counter.tables[n]) for n in (1, 2, 3))
    return {"seconds": time.perf_counter() - t, "distinct": distinct,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def verify(path: Path) -> dict:
    """Every term and count of ours (no stop words) against CountVectorizer's column sums."""
    counter = run_ours(path, stop=False)
    ours = pa.concat_tables([counter.terms(n).select(["term", "count"]) for n in (1, 2, 3)])
    cv, sums = run_sklearn(path)
    terms = list(cv.vocabulary_)
    theirs = pa.table({"term": terms, "count": sums[[cv.vocabulary_[t] for t in terms]].astype(np.int64)})
    ours, theirs = (t.sort_by("term") for t in (ours, theirs))
    same = ours.num_rows == theirs.num_rows and ours.equals(theirs)
    return {"terms_ours": ours.num_rows, "terms_sklearn": theirs.num_rows, "equal": bool(same),
            "error_bound": max(counter.error_bound(n) for n in (1, 2, 3))}


# ---------------------------------------------------------------- driver
def spawn(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--captions", type=int, default=1_000_000, help="generated captions (default: 1,000,000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of each tool, interleaved (default: 3)")
    p.add_argument("--no-verify", action="store_true", help="skip the term-by-term equality check")
    p.add_argument("--worker", choices=["ours", "ours+stop", "sklearn", "verify"], help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(verify(args.input) if args.worker == "verify" else worker(args.worker, args.input)))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"captions-{args.captions}.parquet"
    if not path.exists():
        print(f"generating {args.captions:,} captions -> {path}")
        make_captions(path, args.captions)
    if not args.no_verify:
        print("equality check:", json.dumps(spawn("--worker", "verify", "--input", str(path))), flush=True)
    runs: dict[str, list[dict]] = {"ours": [], "sklearn": [], "ours+stop": []}
    for rep in range(args.reps):
        for tool in runs:
            runs[tool].append(spawn("--worker", tool, "--input", str(path)))
            print(f"rep {rep + 1} {tool:<10} {runs[tool][-1]['seconds']:8.2f} s", flush=True)
    med = {t: statistics.median(r["seconds"] for r in rs) for t, rs in runs.items()}
    print(f"\n{args.captions:,} captions, {args.reps} reps, median seconds (peak RSS MB):")
    for tool, rs in runs.items():
        print(f"  {tool:<10} {med[tool]:8.2f} s  {max(r['peak_rss_mb'] for r in rs):8.0f} MB  "
              f"{args.captions / med[tool]:>12,.0f} captions/s  {rs[0]['distinct']:,} distinct terms")
    print(f"ratio ours / sklearn: {med['ours'] / med['sklearn']:.3f} (speed-up {med['sklearn'] / med['ours']:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
