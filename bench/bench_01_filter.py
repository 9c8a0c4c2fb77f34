"""Benchmark: step 01's caption filter vs DuckDB and polars on the same generated RE-LAION parquet.

Every engine does the same job: read the file, keep the rows whose caption names the keyword as
a whole word (case-insensitive, Unicode word edges: the RE2 pattern of common.match, which DuckDB's
`regexp_matches` and polars' `str.contains` both accept), and write those rows, all columns, to a
zstd parquet file. Each measurement runs in its own subprocess (so peak RSS is per engine);
repetitions are interleaved (engine order rotates) and the median is reported. The matched row
counts must agree or the run fails.

Engines: `ours` = the whole of step 01's per-file work (`filter_into_part`: one polars streaming
query that matches, adds `id`, `source_file` and `matched_keyword`, drops rows without a URL and
writes the part with its footer); `ours_pyarrow` = the same job on step 01's pyarrow path
(row groups, caption column first, numpy byte pre-filter, RE2); `duckdb`; `polars` (the word
pattern in `str.contains`, nothing added).

    python bench/bench_01_filter.py --rows 5000000 --reps 3
    python bench/bench_01_filter.py --rows 1000000 5000000   # peak RSS as the input grows
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
ENGINES = ("ours", "ours_pyarrow", "duckdb", "polars")
ANCHOR = "duckdb"


# ---------------------------------------------------------------------------- one engine, in a child process
# Each `prepare_*` imports what its engine needs and returns the timed job (imports are not timed).
def prepare_ours(keyword: str, threads: int):
    import importlib
    import threading

    import pyarrow as pa

    from common.caption_filter import build_matcher
    from common.paths import DataTree
    from common.sources import SourceFile, prefer_jemalloc

    if os.environ.get("CITY_IDENTITY_PARQUET_ENGINE") != "pyarrow":
        import polars  # noqa: F401  (imported once per process, as the polars engine's is)
    prefer_jemalloc()  # as step 01 does
    step = importlib.import_module("01_download_and_filter")
    # load pyarrow's compute kernels once, as any run over more than one batch has (not timed)
    build_matcher([keyword]).match(pa.array(["warm up", keyword]))

    def job(src: Path, dst: Path) -> int:
        matcher = build_matcher([keyword])
        out = DataTree(dst.parent / dst.stem)
        job = step.Job(out, matcher, {"keywords": [keyword]}, stop=threading.Event())
        report = step.FileReport(SourceFile(0, str(src)))
        step.filter_into_part(src, report.source, job, report)
        return report.rows_written + report.no_url  # rows matched, as the other engines count them
    return job


def prepare_ours_pyarrow(keyword: str, threads: int):
    return prepare_ours(keyword, threads)  # measure() switches the polars path off for this one


def prepare_duckdb(keyword: str, threads: int):
    import duckdb

    from common.match import compile_keyword

    pattern = compile_keyword(keyword).re2.replace("'", "''")

    def job(src: Path, dst: Path) -> int:
        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        con.execute(f"COPY (SELECT * FROM read_parquet('{src}') WHERE regexp_matches(caption, '{pattern}')) "
                    f"TO '{dst}' (FORMAT parquet, COMPRESSION zstd)")
        return con.execute(f"SELECT count(*) FROM read_parquet('{dst}')").fetchone()[0]
    return job


def prepare_polars(keyword: str, threads: int):
    import polars as pl

    from common.match import compile_keyword

    pattern = compile_keyword(keyword).re2

    def job(src: Path, dst: Path) -> int:
        pl.scan_parquet(src).filter(pl.col("caption").str.contains(pattern)).sink_parquet(dst, compression="zstd")
        return pl.scan_parquet(dst).select(pl.len()).collect().item()
    return job


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(engine: str, src: Path, dst: Path, keyword: str, threads: int) -> None:
    import pyarrow as pa

    pa.set_cpu_count(threads)
    pa.set_io_thread_count(threads)
    job = globals()[f"prepare_{engine}"](keyword, threads)
    started, cpu_before = time.perf_counter(), _cpu_seconds()
    n = job(src, dst)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    print(json.dumps({"engine": engine, "seconds": seconds, "cpu_seconds": cpu, "matched": n,
                      "peak_rss_mb": peak_rss_mb()}))


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (less sensitive to a busy machine than wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------- the comparison
def measure(engine: str, src: Path, keyword: str, threads: int) -> dict:
    dst = OUT / f"result-{engine}.parquet"
    env = {**os.environ, "POLARS_MAX_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    if engine == "ours_pyarrow":
        env["CITY_IDENTITY_PARQUET_ENGINE"] = "pyarrow"
    cmd = [sys.executable, __file__, "--child", engine, "--input", str(src), "--output", str(dst),
           "--keyword", keyword, "--threads", str(threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def input_file(rows: int) -> Path:
    from sample.relaion import write_relaion_parquet

    path = OUT / f"relaion-{rows}.parquet"
    if not path.exists():
        started = time.perf_counter()
        write_relaion_parquet(path, rows)
        print(f"generated {path} ({rows:,} rows, {path.stat().st_size / 1e6:,.0f} MB) in "
              f"{time.perf_counter() - started:,.1f}s")
    return path


def compare(rows: int, reps: int, keyword: str, threads: int) -> None:
    src = input_file(rows)
    results: dict[str, list[dict]] = {e: [] for e in ENGINES}
    for rep in range(reps):
        order = ENGINES[rep % len(ENGINES):] + ENGINES[: rep % len(ENGINES)]  # rotate: no engine always first
        for engine in order:
            results[engine].append(measure(engine, src, keyword, threads))
    counts = {e: {r["matched"] for r in rs} for e, rs in results.items()}
    assert len(set().union(*counts.values())) == 1, f"engines disagree on the matched rows: {counts}"
    anchor = statistics.median(r["seconds"] for r in results[ANCHOR])
    print(f"\n{rows:,} rows, {src.stat().st_size / 1e6:,.0f} MB parquet, keyword {keyword!r}, "
          f"{threads} threads, {reps} interleaved reps, {next(iter(counts['ours'])):,} rows matched")
    anchor_cpu = statistics.median(r["cpu_seconds"] for r in results[ANCHOR])
    print(f"{'engine':<10} {'median s':>9} {'rows/s':>12} {'vs duckdb':>10} {'CPU s':>7} {'CPU vs duckdb':>14} "
          f"{'peak RSS MB':>12}")
    for engine, rs in results.items():
        med = statistics.median(r["seconds"] for r in rs)
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        rss = max(r["peak_rss_mb"] for r in rs)
        print(f"{engine:<10} {med:>9.3f} {rows / med:>12,.0f} {anchor / med:>9.2f}x {cpu:>7.2f} "
              f"{anchor_cpu / cpu:>13.2f}x {rss:>12,.0f}")
    print("(x = DuckDB's time / the engine's time: above 1 is faster than DuckDB)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[5_000_000], help="input sizes (rows); one table each")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions per engine (median reported)")
    p.add_argument("--keyword", default="Madrid", help="keyword to match as a whole word")
    p.add_argument("--threads", type=int, default=2, help="threads every engine may use")
    p.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.input, args.output, args.keyword, args.threads)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for rows in args.rows:
        compare(rows, args.reps, args.keyword, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
