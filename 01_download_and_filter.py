"""Step 01: keep the RE-LAION-5B rows whose caption names the city (or any keyword).

Reads RE-LAION-5B's parquet shards from the Hugging Face Hub (gated: a token whose account has
accepted the dataset's terms), one file at a time, from one subset, several or all of them into
one tree (a subset added later adds only its own files), or local files with --source: parquet
shards, folders or globs of them, or any image-URL collection as CSV/parquet (a TCAT export:
--url-column media_url --caption-column text). Each file is streamed in batches, caption column
first; a downloaded file is deleted once filtered unless --keep-downloads.

Writes data/metadata/part-NNNNN.parquet, one per source file (NNNNN = the file's place in the
sorted file list, in its subset's block: multi 0-9999, en 10000-19999, nolang 20000-29999), with
the source's columns under internal names plus `id` (hash of the URL), `source_file`, `subset`
and `matched_keyword` (for --source collections also `post_id` and `image_index`: a cell
listing several image URLs gives one row per image, see common/url_lists.py); then
data/metadata/_stats.json (counts in total and per subset). A re-run skips finished files;
Ctrl-C loses at most the files in progress.

Example:
    python 01_download_and_filter.py --keywords Madrid madrileño --subset multi --limit 5
    python 01_download_and_filter.py --keywords Lisbon Lisboa --subset all
    python 01_download_and_filter.py --keywords Madrid --source exports/tcat.csv \\
        --url-column media_url --caption-column text --data-dir data/madrid-tcat
"""
from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from common import hub
from common.caption_filter import build_matcher
from common.cli import UserError, add_overwrite, add_ray, entrypoint, parser
from common.files import list_parts
from common.filter_file import DEFAULT_WORKERS, FileReport, Job, filter_into_part, process_file  # noqa: F401 (bench)
from common.metadata_parts import part_number, read_part_info, sum_parts
from common.paths import DataTree, stats_file
from common.sources import SourceError, SourceFile, expand_local, pick_columns, prefer_jemalloc, source_schema
from common.stats import StepStats
from common.url_lists import AUTO, NONE

STEP = "01_download_and_filter"
DEFAULT_SUBSET = "multi"


def build_parser():
    p = parser(__doc__)
    p.add_argument("--keywords", nargs="+", required=True, help="words to look for in captions, e.g. Madrid madrileño")
    p.add_argument("--token", help="Hugging Face token (default: HF_TOKEN, else the cached `hf auth login`)")
    p.add_argument("--subset", nargs="+", metavar="SUBSET",
                   help="RE-LAION-5B subset(s): multi, en, nolang, several of them, or all (default: multi); "
                        "with --source, the one subset the local files are copies of")
    p.add_argument("--variant", default="research-safe", help="release: research-safe or research (default: research-safe)")
    p.add_argument("--repo", help="read this Hub dataset repo instead of the subset's (a mirror of one subset)")
    p.add_argument("--limit", type=int, help="process only the first N files of each subset (for testing)")
    p.add_argument("--source", nargs="+", metavar="PATH", help="local parquet/CSV files, folders or globs instead of the Hub")
    p.add_argument("--url-column", "--url_column", dest="url_column", help="image URL column of --source files")
    p.add_argument("--caption-column", "--caption_column", dest="caption_column", help="caption column of --source files")
    p.add_argument("--url-separator", "--url_separator", dest="url_separator", metavar="SEP",
                   help="--source cells listing several image URLs (a post with several pictures): split them "
                        "on SEP into one row per image; 'auto' (the default for --source) splits cells that read "
                        "as comma-joined http(s) URLs; 'none' keeps every cell as one URL")
    p.add_argument("--match", default="word", help="word (whole word, the default), substring or regex")
    p.add_argument("--case-sensitive", "--case_sensitive", dest="case_sensitive", action="store_true",
                   help="match case exactly (default: case-insensitive)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"files processed at once (default {DEFAULT_WORKERS})")
    p.add_argument("--keep-downloads", "--keep_downloads", dest="keep_downloads", action="store_true",
                   help="keep downloaded Hub files under <data-dir>/metadata/.downloads/")
    add_ray(p, "one Ray task per source file")
    add_overwrite(p)
    return p


def plan_sources(args, job: Job) -> tuple[list[SourceFile], str]:
    """(source files, a description of where they come from); checks Hub access up front."""
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {args.limit})")
    subsets = hub.pick_subsets(args.subset)
    if args.source:
        return local_sources(args, job, subsets)
    subsets = subsets or [DEFAULT_SUBSET]
    if args.repo and len(subsets) > 1:
        raise UserError("--repo reads one mirror of one subset: give one --subset with it")
    job.token = hub.resolve_token(args.token)
    api = hub.HfApi()
    user = hub.check_token(api, job.token)
    files, listed = [], []
    for subset in subsets:
        repo = hub.repo_for(subset, args.variant, args.repo)
        names = hub.list_parquet_files(api, repo, job.token)
        listed.append(f"{repo} ({len(names):,} parquet files)")
        files += [SourceFile(part_number(i, subset), name, repo, subset) for i, name in enumerate(names[: args.limit])]
    return files, f"{', '.join(listed)}, as {user}"


def local_sources(args, job: Job, subsets: list[str]) -> tuple[list[SourceFile], str]:
    """--source files; labelled with --subset (and numbered in its block) when one is given."""
    if len(subsets) > 1:
        raise UserError("--source files are copies of at most one subset: give one --subset with --source, or none")
    subset = subsets[0] if subsets else None
    found = expand_local(args.source, exclude=job.tree.metadata)[: args.limit]
    files = [SourceFile(part_number(src.index, subset), src.name, subset=subset) for src in found]
    for src in files:  # a missing column is a user mistake: say so before any work starts
        try:
            schema = source_schema(Path(src.name), src.name, (args.url_column, args.caption_column))
            pick_columns(schema.names, src.name, args.url_column, args.caption_column)
        except SourceError:
            pass  # unreadable: skipped with its reason during the run
    return files, f"{len(files):,} local file(s)" + (f" of the {subset} subset" if subset else "")


def finished_files(files: list[SourceFile], job: Job, overwrite: bool) -> set[int]:
    """Indexes of files whose part exists and was made with these settings from this file.

    Parts of other files (another subset's) may share the tree; parts made with other keywords
    or --match may not: their rows would mix two searches."""
    done = set()
    for src in files:
        part = job.tree.metadata_part(src.index)
        if not part.exists():
            continue
        info = read_part_info(part) or {}
        same_file = info.get("source_file") == src.name and info.get("repo", src.repo) == src.repo
        if info.get("signature") == job.signature and same_file:
            done.add(src.index)
        elif not overwrite:
            raise UserError(f"{part} was made from another file or with other keywords/--match: "
                            "pass --overwrite to redo it, or use another --data-dir")
    for part in list_parts(job.tree.metadata):
        if not overwrite and (read_part_info(part) or {}).get("signature") != job.signature:
            raise UserError(f"{part} was made with other keywords/--match: pass --overwrite to redo the tree, "
                            "or use another --data-dir")
    return done


# ---------------------------------------------------------------------------- threads
def _after_file(report: FileReport) -> None:
    """Called in the main thread after each file (a seam for tests that interrupt a run)."""


def run_files(pending: list[SourceFile], job: Job) -> list[FileReport]:
    reports, started = [], time.time()
    bar = tqdm(total=len(pending), desc="01 filter", unit="file", disable=not pending)
    with ThreadPoolExecutor(max_workers=max(1, job.workers), thread_name_prefix="01-file") as pool:
        futures = [pool.submit(process_file, src, job) for src in pending]
        try:
            for fut in as_completed(futures):
                report = fut.result()
                reports.append(report)
                scanned = sum(r.rows_scanned for r in reports)
                bar.set_postfix_str(f"{scanned / max(time.time() - started, 1e-9):,.0f} rows/s, "
                                    f"{sum(r.rows_written for r in reports):,} matches")
                bar.update(1)
                _after_file(report)
        except BaseException:
            job.stop.set()  # running files stop at their next batch; queued ones never start
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
    return reports


# ---------------------------------------------------------------------------- totals
def write_stats(stats: StepStats, job: Job, args, where: str, reports: list[FileReport], skipped: int) -> dict:
    t = sum_parts(job.tree.metadata, job.signature, job.matcher.keywords)
    failed = [{"file": r.source.name, **({"subset": r.source.subset} if r.source.subset else {}), "reason": r.failed}
              for r in reports if r.failed]
    if t["rows_written"] == 0:
        if t["files_done"] == 0 and failed:
            raise UserError(f"none of the {len(failed):,} files could be read (first: {failed[0]['file']}: "
                            f"{failed[0]['reason']})")
        named = sum(t["matched_per_keyword"].values())
        if named:
            raise UserError(f"{named:,} captions name {' / '.join(job.matcher.keywords)}, but none of those rows has "
                            f"a URL: check which column holds the image URLs (--url-column)")
        raise UserError(f"no caption names {' / '.join(job.matcher.keywords)} in {t['rows_scanned']:,} rows of "
                        f"{t['files_done']:,} file(s): check the spelling, try --match substring, or read more files")
    stats.rows_in, stats.rows_out = t["rows_scanned"] + t["malformed_rows"], t["rows_written"]
    stats.drop("caption_without_keyword", t["rows_scanned"] - sum(t["matched_per_keyword"].values()))
    stats.drop("no_url", t["no_url"])
    if t["malformed_rows"]:
        stats.drop("malformed_csv_line", t["malformed_rows"])
    stats.write(job.tree.metadata, args, packages=("huggingface_hub",), source=where,
                files_done=t["files_done"], files_skipped_finished=skipped, files_failed=failed,
                matched_per_keyword=t["matched_per_keyword"], bytes_downloaded=t["bytes_downloaded"],
                **({"per_subset": t["per_subset"]} if t["per_subset"] else {}))
    return t


def url_separator(args) -> str | None:
    """How URL cells are split: `auto` for --source collections unless told, never for the Hub's rows."""
    if args.url_separator == "":
        raise UserError("--url-separator needs a separator (e.g. ',' or ' | '), 'auto' or 'none'")
    if not args.source:
        if args.url_separator not in (None, NONE):
            raise UserError("--url-separator is for --source collections; RE-LAION rows hold one URL each")
        return None
    choice = args.url_separator or AUTO
    return None if choice.lower() == NONE else (AUTO if choice.lower() == AUTO else choice)


# ---------------------------------------------------------------------------- main
@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    stats = StepStats(STEP)
    prefer_jemalloc()
    tree = DataTree.at(args.data_dir)
    matcher = build_matcher(args.keywords, args.match, args.case_sensitive)
    signature = {"keywords": matcher.keywords, "match": args.match, "case_sensitive": args.case_sensitive}
    separator = url_separator(args)
    if separator is not None:  # parts split otherwise are parts made with other settings
        signature["url_separator"] = separator
    job = Job(tree, matcher, signature, args.url_column, args.caption_column,
              keep_downloads=args.keep_downloads, workers=args.workers, url_separator=separator)
    files, where = plan_sources(args, job)
    first_of = {src.repo: src.name for src in reversed(files) if src.repo}
    for repo, name in first_of.items():  # a gated repo whose terms are not accepted fails here, before anything changes
        hub.check_access(repo, name, job.token)
    if args.overwrite:
        for part in list_parts(tree.metadata):
            part.unlink()
    done = finished_files(files, job, args.overwrite)
    pending = [f for f in files if f.index not in done]
    print(f"01: {where}; keywords {', '.join(matcher.keywords)} ({args.match} match)")
    if done:
        print(f"skipping {len(done):,} finished file(s) of {len(files):,} (--overwrite redoes them)")
    if pending:
        stats_file(tree.metadata).unlink(missing_ok=True)
    if args.ray is None:
        reports = run_files(pending, job)
    else:
        from common import ray_runner  # Ray is imported only when asked for

        reports = ray_runner.run_files(pending, job, args.ray)
    for r in reports:
        if r.failed:
            print(f"skipped {r.source.name}: {r.failed}", file=sys.stderr)
    if first_of and not args.keep_downloads:
        shutil.rmtree(tree.downloads, ignore_errors=True)
    totals = write_stats(stats, job, args, where, reports, len(done))
    print(stats.summary())
    for subset, t in totals["per_subset"].items():
        print(f"  {subset}: {t['rows_written']:,} rows kept of {t['rows_scanned']:,} in {t['files_done']:,} file(s)")
    print(f"wrote {tree.metadata}/part-*.parquet and {stats_file(tree.metadata).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
