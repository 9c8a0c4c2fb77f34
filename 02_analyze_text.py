"""Step 2: the vocabulary of the captions: top words, bigrams and trigrams.

Reads the parquet parts of step 01 (data/metadata/) or, once step 03 has finished, its cleaned
rows (data/metadata_cleaned/); --input_dir picks another folder. Words skip stop words (in each
caption's language when the rows carry a language label) and the city name and search keywords;
bigrams and trigrams keep the city ("downtown madrid") but not those that start or end with a
stop word ("of the").

Writes data/analysis/words.csv, bigrams.csv and trigrams.csv (term, count, captions, share: count
is occurrences, captions how many captions contain the term, share = captions / all captions;
ranked by captions, so one caption repeating a phrase cannot top the list), a bar chart of each
(words.png, ...) and _stats_text.json.

    python 02_analyze_text.py --city "Madrid"
    python 02_analyze_text.py --city "New York" --keywords NYC --top 200 --data-dir data/nyc
"""
from __future__ import annotations

import sys
from collections import Counter

import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from common.cli import UserError, add_overwrite, entrypoint, parser
from common.columns import find_column
from common.files import count_rows, iter_batches, read_json
from common.ngrams import DEFAULT_MAX_TERMS, MAX_BATCH_CAPTIONS, NgramCounter
from common.paths import DataTree, stats_file
from common.reports import bar_chart, fingerprint, input_parts, pick_input, unchanged, write_csv
from common.stats import StepStats, public_params
from common.text import DEFAULT_LANGUAGE, StopWords, language_code, tokenize

OUTPUTS = {1: "words", 2: "bigrams", 3: "trigrams"}
MIN_LANGUAGE_SHARE = 0.01  # a language labelling at least 1% of the captions adds its stop words for unlabelled ones


def build_parser():
    p = parser(__doc__)
    p.add_argument("--city", required=True, help='the city name, left out of the single words (e.g. "Madrid")')
    p.add_argument("--input_dir", "--input-dir", dest="input_dir", default=None,
                   help="folder of part-*.parquet (default: data/metadata_cleaned once step 03 finished, "
                        "else data/metadata)")
    p.add_argument("--top", type=int, default=100, help="rows per CSV (default: 100); charts show the first 30")
    p.add_argument("--keywords", nargs="*", default=None,
                   help="more terms to leave out of the single words (default: the keywords step 01 searched for)")
    p.add_argument("--stop-languages", "--stop_languages", dest="stop_languages", nargs="+", default=None,
                   help="stop-word languages (ISO codes) for captions without a language label (default: "
                        "English plus every language that labels at least 1%% of the captions)")
    p.add_argument("--max-terms", "--max_terms", dest="max_terms", type=int, default=DEFAULT_MAX_TERMS,
                   help=f"distinct terms kept per table before the rarest are pruned (default: {DEFAULT_MAX_TERMS:,}); "
                        "bounds memory (about 24 bytes per term)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=65_536,
                   help=f"captions read at a time (default: 65,536; at most {MAX_BATCH_CAPTIONS:,})")
    add_overwrite(p)
    return p


def check_args(args) -> None:
    if not args.city.strip() or not tokenize(args.city):
        raise UserError(f"--city {args.city!r} has no word of two or more letters or digits: "
                        "pass the city name, e.g. --city Madrid")
    if args.top < 1:
        raise UserError("--top must be at least 1")
    if not 1 <= args.batch_size <= MAX_BATCH_CAPTIONS:
        raise UserError(f"--batch-size must be between 1 and {MAX_BATCH_CAPTIONS:,}")
    if args.max_terms < 1000:
        raise UserError("--max-terms must be at least 1,000")
    unknown = [c for c in args.stop_languages or [] if not language_code(c)]
    if unknown:
        raise UserError(f"no stop-word list for {', '.join(unknown)}: use ISO codes such as en es fr de it pt")


def default_keywords(tree: DataTree) -> list[str]:
    """The keywords step 01 searched for, as recorded in its _stats.json (none if it is absent)."""
    path = stats_file(tree.metadata)
    found = read_json(path).get("parameters", {}).get("keywords") if path.exists() else None
    return [k for k in found if isinstance(k, str)] if isinstance(found, list) else []


def columns(parts) -> tuple[str, str | None]:
    names = pq.ParquetFile(parts[0]).schema_arrow.names
    caption = find_column(names, "caption")
    if caption is None:
        raise UserError(f"{parts[0]} has no caption column (looked for caption, TEXT, text, alt, title)")
    return caption, find_column(names, "language")


def stop_languages(args, parts, language_col: str | None) -> list[str]:
    """Stop-word languages for unlabelled captions: the flag, else English + the common labels."""
    if args.stop_languages:
        return sorted({language_code(c) for c in args.stop_languages})
    seen: Counter[str] = Counter()
    if language_col:
        for batch in iter_batches(parts, [language_col], batch_size=262_144):
            if not batch.num_columns:  # a part without the column: its captions are unlabelled
                continue
            for row in pc.value_counts(batch.column(0)).to_pylist():
                seen[language_code(row["values"])] += row["counts"]
    total = sum(seen.values())
    common = {c for c, n in seen.items() if c and n >= MIN_LANGUAGE_SHARE * total}
    return sorted(common | {DEFAULT_LANGUAGE})


def count(parts, caption_col, language_col, counter: NgramCounter, batch_size: int, stats: StepStats) -> None:
    cols = [caption_col] + ([language_col] if language_col else [])
    with tqdm(total=count_rows(parts), desc="captions", unit="rows", unit_scale=True) as bar:
        for batch in iter_batches(parts, cols, batch_size=batch_size):
            names = batch.schema.names
            if caption_col not in names:
                raise UserError(f"a part in {parts[0].parent} has no {caption_col!r} column: re-run step 01 for it")
            languages = batch.column(language_col) if language_col in names else None
            captions = batch.column(caption_col)
            counter.add(captions, languages)
            stats.rows_in += len(batch)
            bar.update(len(batch))


def write_outputs(tree: DataTree, counter: NgramCounter, top: int, city: str) -> dict:
    written = {}
    for n, name in OUTPUTS.items():
        table = counter.top(n, top).to_pandas()
        table["share"] = (table["captions"] / max(counter.captions, 1)).round(6)
        write_csv(table, tree.analysis_csv(name))
        bar_chart(table["term"].tolist(), table["captions"].tolist(),
                  f"Top {name} in {counter.captions:,} captions ({city})", "captions containing it",
                  tree.analysis_chart(name))
        written[name] = {"distinct": len(counter.tables[n]), "rows": len(table),
                         "count_error_bound": counter.error_bound(n)}
    return written


@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    tree = DataTree.at(args.data_dir)
    folder = pick_input(tree, args.input_dir)
    parts = input_parts(folder)
    caption_col, language_col = columns(parts)
    keywords = default_keywords(tree) if args.keywords is None else args.keywords
    params = {k: v for k, v in public_params(args).items() if k != "overwrite"}
    params.update(input_dir=str(folder), keywords=keywords)
    prints, stats_path = fingerprint(parts), tree.analysis_stats("text")
    outputs = [tree.analysis_csv(n) for n in OUTPUTS.values()]
    if not args.overwrite and unchanged(stats_path, prints, params, outputs):
        print(f"already analysed these {len(parts):,} parts of {folder} with the same flags: skipping "
              "(pass --overwrite to redo)")
        return 0

    langs = stop_languages(args, parts, language_col)
    exclude = frozenset(tokenize(args.city)) | frozenset(t for k in keywords for t in tokenize(k))
    print(f"reading {len(parts):,} parts of {folder}; stop words: per-caption language"
          f"{' (column ' + language_col + ')' if language_col else ''}, else {', '.join(langs)}; "
          f"words leave out: {', '.join(sorted(exclude))}")
    stats = StepStats("02_analyze_text")
    counter = NgramCounter(StopWords(langs), exclude, max_terms=args.max_terms)
    count(parts, caption_col, language_col, counter, args.batch_size, stats)
    stats.rows_out = counter.captions
    if stats.rows_in > counter.captions:
        stats.drop("no_caption", stats.rows_in - counter.captions)
    if not counter.captions:
        raise UserError(f"no captions to analyse in {folder}: every caption is empty")
    tables = write_outputs(tree, counter, args.top, args.city)
    stats.write(tree.analysis, params, ("stop-words", "numpy"), path=stats_path, input_parts=prints,
                captions=counter.captions, stop_languages=langs, excluded_from_words=sorted(exclude), tables=tables)
    for name, t in tables.items():
        bound = f", counts at most {t['count_error_bound']:,} low (pruned)" if t["count_error_bound"] else ""
        print(f"{name}: {t['distinct']:,} distinct, top {t['rows']:,} -> {tree.analysis_csv(name)}{bound}")
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
