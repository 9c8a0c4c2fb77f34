"""Step 3: negative filtering: drop the rows whose caption names an unwanted term.

Reads data/metadata/part-NNNNN.parquet (step 01; --input_dir picks another folder) and removes
every row whose caption names one of the --exclude terms, as a whole word and case-insensitive,
exactly like step 01's keyword match ("football" removes "Football!" and "#football", not
"footballer"). Writes data/metadata_cleaned/part-NNNNN.parquet (the same part numbers as the
input), excluded.parquet (every removed row plus `excluded_by`, the first term, in the order
given, that removed it) and _stats.json (removed rows per term). --dry-run only prints the counts
per term and a few captions of each.

    python 03_clean_metadata.py --exclude football soccer jersey stadium
    python 03_clean_metadata.py --exclude football "real madrid" --dry-run
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from common.cli import UserError, add_overwrite, entrypoint, parser
from common.columns import find_column
from common.exclude import (REASON_COLUMN, align, first_terms, recorded_matches, recorded_terms, removed_counts,
                            term_masks, terms_metadata)
from common.files import atomic_path, count_rows, list_parts, require_parts
from common.match import compile_keywords
from common.paths import DataTree, stats_file
from common.stats import StepStats

SAMPLES_PER_TERM = 3
SAMPLE_CHARS = 120
BATCH_ROWS = 65_536
_PART_RE = re.compile(r"part-(\d+)\.parquet")


def build_parser():
    p = parser(__doc__)
    p.add_argument("--exclude", nargs="+", required=True, metavar="TERM",
                   help='terms whose rows are removed (whole words, any case), e.g. --exclude football "real madrid"')
    p.add_argument("--input_dir", "--input-dir", dest="input_dir", default=None,
                   help="folder of part-*.parquet to clean (default: data/metadata)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the rows each term would remove and a few of their captions; write nothing")
    add_overwrite(p)
    return p


def inputs(args, tree: DataTree) -> list[tuple[int, Path]]:
    folder = Path(args.input_dir) if args.input_dir else tree.metadata
    if folder.resolve() == tree.metadata_cleaned.resolve():
        raise UserError(f"--input_dir {folder} is the output folder: point it at step 01's data/metadata")
    parts = require_parts(folder, "01_download_and_filter.py")
    out = []
    for p in parts:
        m = _PART_RE.fullmatch(p.name)
        if not m:
            raise UserError(f"{p} is not named part-NNNNN.parquet: rename it so its output part can keep its number")
        out.append((int(m.group(1)), p))
    return out


def caption_column(path: Path) -> str:
    col = find_column(pq.read_schema(path).names, "caption")
    if col is None:
        raise UserError(f"{path} has no caption column (looked for caption, TEXT, text, alt, title)")
    return col


def dry_run(parts, patterns, terms) -> int:
    removed, matches, samples = Counter(), Counter(), {t: [] for t in terms}
    rows = 0
    for _, path in tqdm(parts, desc="dry run", unit="parts"):
        col = caption_column(path)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=[col]):
            captions = batch.column(0)
            masks = term_masks(captions, patterns)
            drop, labels = first_terms(masks, terms)
            rows += len(batch)
            removed.update(labels.to_pylist())
            for term, mask in zip(terms, masks):
                matches[term] += int(mask.sum())
                need = SAMPLES_PER_TERM - len(samples[term])
                if need > 0 and mask.any():
                    samples[term] += captions.filter(mask).slice(0, need).to_pylist()
    print(f"dry run: {sum(removed.values()):,} of {rows:,} rows would be removed (nothing written)")
    for term in terms:
        print(f"  {term!r}: removes {removed[term]:,} (names it: {matches[term]:,})")
        for caption in samples[term]:
            text = " ".join(caption.split())
            print(f"      {text[:SAMPLE_CHARS]}{'…' if len(text) > SAMPLE_CHARS else ''}")
    return 0


def clean_part(n: int, src: Path, tree: DataTree, patterns, terms) -> None:
    """Kept and removed rows of one part. The removed rows are written first and the cleaned part
    is renamed into place last, so a part counts as done only when both exist."""
    col, pf = caption_column(src), pq.ParquetFile(src)
    schema = pf.schema_arrow.with_metadata(terms_metadata(terms))
    matches: Counter = Counter()
    removed = []  # removed rows of one part: bounded by the shard, and usually a small share of it
    with atomic_path(tree.cleaned_part(n)) as kept_tmp:
        with pq.ParquetWriter(kept_tmp, schema, compression="zstd") as kept:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                masks = term_masks(batch.column(col), patterns)
                drop, labels = first_terms(masks, terms)
                matches.update({t: int(m.sum()) for t, m in zip(terms, masks)})
                kept.write_table(align(batch.filter(~drop), schema))
                removed.append(batch.filter(drop).append_column(REASON_COLUMN, labels))
        ex_schema = pf.schema_arrow.append(pa.field(REASON_COLUMN, pa.string()))
        ex_schema = ex_schema.with_metadata(terms_metadata(terms, matches))
        with atomic_path(tree.excluded_part(n)) as ex_tmp, pq.ParquetWriter(ex_tmp, ex_schema, compression="zstd") as ex:
            for batch in removed:
                ex.write_table(align(batch, ex_schema))


def check_same_terms(done: list[Path], terms: list[str], tree: DataTree) -> None:
    for path in done:
        before = recorded_terms(path)
        if before is not None and before != terms:
            raise UserError(f"{tree.metadata_cleaned} was made with --exclude {' '.join(before)}: pass --overwrite "
                            f"to redo it with --exclude {' '.join(terms)}")


def check_no_stale_parts(tree: DataTree, parts, folder: Path) -> None:
    """A cleaned part without its input part would flow into step 05 unnoticed: refuse."""
    inputs_named = {tree.cleaned_part(n).name for n, _ in parts}
    stale = [p.name for p in list_parts(tree.metadata_cleaned) if p.name not in inputs_named]
    if stale:
        raise UserError(f"{tree.metadata_cleaned} holds {', '.join(stale[:3])}{' ...' if len(stale) > 3 else ''} "
                        f"with no matching part in {folder}: pass --overwrite to rebuild it from {folder}")


def clear_outputs(tree: DataTree) -> None:
    """--overwrite: remove only what this step writes."""
    for path in list_parts(tree.metadata_cleaned) + list_parts(tree.excluded_part(0).parent):
        path.unlink()
    for path in (tree.excluded_file, stats_file(tree.metadata_cleaned)):
        path.unlink(missing_ok=True)


def join_excluded(tree: DataTree, shards: list[Path]) -> None:
    """excluded.parquet: every removed row of every part, in one file, schemas unified."""
    schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in shards], promote_options="permissive")
    with atomic_path(tree.excluded_file) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for path in shards:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                writer.write_table(align(batch, schema))


def finish(args, tree: DataTree, parts, terms, stats: StepStats, cleaned_now: int) -> dict:
    """excluded.parquet and _stats.json, both from the files, so resumed runs count every part."""
    shards = [tree.excluded_part(n) for n, _ in parts]
    if cleaned_now or not tree.excluded_file.exists():
        join_excluded(tree, shards)
    removed = removed_counts(shards)
    matches = sum((recorded_matches(p) for p in shards), Counter())
    stats.rows_in = count_rows([p for _, p in parts])
    stats.rows_out = count_rows([tree.cleaned_part(n) for n, _ in parts])
    for term in terms:
        stats.drop(f"excluded_by:{term}", removed[term])
    params = {"exclude": terms, "input_dir": str(args.input_dir or tree.metadata), "data_dir": args.data_dir}
    return stats.write(tree.metadata_cleaned, params, parts=len(parts),
                       removed_by_term={t: removed[t] for t in terms}, matches_per_term={t: matches[t] for t in terms})


@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    patterns = compile_keywords(args.exclude, mode="word")
    if not patterns:
        raise UserError('--exclude needs at least one non-empty term, e.g. --exclude football soccer')
    terms = [p.keyword for p in patterns]
    tree = DataTree.at(args.data_dir)
    parts = inputs(args, tree)
    if args.dry_run:
        return dry_run(parts, patterns, terms)
    if args.overwrite:
        clear_outputs(tree)
    check_no_stale_parts(tree, parts, parts[0][1].parent)
    done = [(n, p) for n, p in parts if tree.cleaned_part(n).exists() and tree.excluded_part(n).exists()]
    check_same_terms([tree.cleaned_part(n) for n, _ in done], terms, tree)
    todo = [(n, p) for n, p in parts if (n, p) not in done]
    if done:
        print(f"skipping {len(done):,} parts already cleaned (pass --overwrite to redo them)")
    stats = StepStats("03_clean_metadata")
    for n, src in tqdm(todo, desc="cleaning", unit="parts"):
        clean_part(n, src, tree, patterns, terms)
    doc = finish(args, tree, parts, terms, stats, len(todo))
    for term, n in doc["removed_by_term"].items():
        print(f"  {term!r}: {n:,} rows removed")
    print(stats.summary())
    print(f"cleaned rows -> {tree.metadata_cleaned}; removed rows -> {tree.excluded_file}")
    if not doc["rows_out"]:
        raise UserError("every row names an exclude term, nothing is left: check the terms with --dry-run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
