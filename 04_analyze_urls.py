"""Step 4: where the images come from: registered domains and their source types.

Reads the image URLs of data/metadata_cleaned/ once step 03 has finished, else of data/metadata/
(--input_dir picks another folder). Each URL gives its registered domain ("images.bbc.co.uk" ->
"bbc.co.uk") from the public suffix list snapshot shipped with tldextract (no network), and each
domain a source type (stock photo, news, social, e-commerce, blog/hosting, other) from
common/domain_categories.csv or --categories. URLs without a registered domain (IP addresses,
other schemes, garbage) are counted under their reason, never dropped silently.

Writes data/analysis/top_domains.csv (domain, count, share, cumulative_share, category; share of
all URLs), top_domains.png, domain_categories.csv (category, domains, count, share) and
_stats_urls.json.

    python 04_analyze_urls.py
    python 04_analyze_urls.py --input_dir data/metadata --categories my_categories.csv
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from common.cli import UserError, add_overwrite, entrypoint, parser
from common.columns import find_column
from common.domains import CATEGORIES, DEFAULT_MAP, REASONS, category_of, domain_or_reason, load_categories
from common.files import count_rows, iter_batches
from common.paths import DataTree
from common.reports import bar_chart, fingerprint, input_parts, pick_input, unchanged, write_csv
from common.stats import StepStats, public_params

NO_DOMAIN = "(no registered domain)"
MAX_ERRORS_KEPT = 20  # rows whose URL broke the parser, shown in _stats_urls.json


def build_parser():
    p = parser(__doc__)
    p.add_argument("--input_dir", "--input-dir", dest="input_dir", default=None,
                   help="folder of part-*.parquet (default: data/metadata_cleaned once step 03 finished, "
                        "else data/metadata)")
    p.add_argument("--categories", default=str(DEFAULT_MAP),
                   help="CSV of domain,category ('name.*' matches any suffix) giving each domain its source "
                        "type (default: the map shipped in common/domain_categories.csv)")
    add_overwrite(p)
    return p


def categories(path: str) -> dict[str, str]:
    try:
        return load_categories(Path(path))
    except FileNotFoundError:
        raise UserError(f"--categories {path} does not exist: pass a CSV with the columns domain,category") from None
    except (KeyError, ValueError) as e:
        raise UserError(f"--categories {path} is not a domain,category CSV ({e}): fix it or leave the flag out") from None


def url_column(parts: list[Path]) -> str:
    col = find_column(pq.read_schema(parts[0]).names, "url")
    if col is None:
        raise UserError(f"{parts[0]} has no URL column (looked for url, URL, image_url, media_url)")
    return col


def count_domains(parts: list[Path], col: str, stats: StepStats, errors: list[dict]) -> Counter:
    """Rows per registered domain; the others counted under their reason, the first few errors kept."""
    domains: Counter = Counter()
    with tqdm(total=count_rows(parts), desc="urls", unit="rows", unit_scale=True) as bar:
        for batch in iter_batches(parts, [col]):
            if batch.num_columns == 0:
                raise UserError(f"a part in {parts[0].parent} has no {col!r} column: re-run the step that wrote it")
            for url in batch.column(0).to_pylist():
                domain, reason, error = domain_or_reason(url)
                if domain:
                    domains[domain] += 1
                else:
                    stats.drop(reason)
                if error and len(errors) < MAX_ERRORS_KEPT:
                    errors.append({"url": str(url)[:200], "reason": reason, "error": error})
            stats.rows_in += len(batch)
            bar.update(len(batch))
    return domains


def domain_table(domains: Counter, total: int, mapping: dict[str, str]) -> pd.DataFrame:
    rows = sorted(domains.items(), key=lambda kv: (-kv[1], kv[0]))
    df = pd.DataFrame(rows, columns=["domain", "count"])
    df["share"] = (df["count"] / total).round(6)
    df["cumulative_share"] = (df["count"].cumsum() / total).round(6)
    df["category"] = [category_of(d, mapping) for d in df["domain"]]
    return df


def category_table(df: pd.DataFrame, total: int, no_domain: int) -> pd.DataFrame:
    """One row per source type (all six, so an absent type shows as 0), plus URLs without a domain."""
    grouped = df.groupby("category").agg(domains=("domain", "size"), count=("count", "sum"))
    out = grouped.reindex(list(CATEGORIES), fill_value=0).reset_index(names="category")
    if no_domain:
        out.loc[len(out)] = [NO_DOMAIN, 0, no_domain]
    out["share"] = (out["count"] / total).round(6)
    return out.sort_values("count", ascending=False, kind="stable")


@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    mapping = categories(args.categories)
    tree = DataTree.at(args.data_dir)
    folder = pick_input(tree, args.input_dir)
    parts = input_parts(folder)
    col = url_column(parts)
    params = {k: v for k, v in public_params(args).items() if k != "overwrite"}
    params["input_dir"] = str(folder)
    prints, stats_path = fingerprint(parts), tree.analysis_stats("urls")
    outputs = [tree.analysis_csv("top_domains"), tree.analysis_csv("domain_categories")]
    if not args.overwrite and unchanged(stats_path, prints, params, outputs):
        print(f"already analysed these {len(parts):,} parts of {folder} with the same flags: skipping "
              "(pass --overwrite to redo)")
        return 0

    print(f"reading the URLs of {len(parts):,} parts of {folder}")
    stats = StepStats("04_analyze_urls")
    errors: list[dict] = []
    domains = count_domains(parts, col, stats, errors)
    stats.rows_out = sum(domains.values())
    if not stats.rows_in:
        raise UserError(f"the parts in {folder} hold no rows: nothing to analyse")
    df = domain_table(domains, stats.rows_in, mapping)
    cats = category_table(df, stats.rows_in, stats.rows_in - stats.rows_out)
    write_csv(df, tree.analysis_csv("top_domains"))
    write_csv(cats, tree.analysis_csv("domain_categories"))
    bar_chart(df["domain"].tolist(), (df["share"] * 100).tolist(),
              f"Top domains of {stats.rows_in:,} image URLs", "% of URLs", tree.analysis_chart("top_domains"))
    stats.write(tree.analysis, params, ("tldextract", "pandas"), path=stats_path, input_parts=prints,
                domains=len(df), reasons={k: REASONS[k] for k in stats.reasons},
                categories={r.category: int(r.count) for r in cats.itertuples()}, url_errors=errors)
    print(f"{len(df):,} domains -> {tree.analysis_csv('top_domains')}")
    if df.empty:
        print("warning: no URL has a registered domain; the reasons are below and in _stats_urls.json")
    for r in cats.itertuples():
        print(f"  {r.category:<22} {r.count:>12,}  {r.share:7.2%}")
    print(stats.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
