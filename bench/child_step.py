"""Run one pipeline step, or a benchmark's own worker, in a fresh process and time it.

The child prints `PEAK_RSS_MB <n>` last (its own high-water RSS); `timed` returns the wall seconds
(imports included) and that figure.
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def print_peak_rss() -> None:
    """What a worker prints last, for `timed` to read."""
    print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a child process; a failed child stops the benchmark with its stderr."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    peak = [line for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_MB ")]
    return seconds, float(peak[-1].split()[1])


def run_step(module: str, argv: list[str]) -> tuple[float, float]:
    """A step's main(argv) in a fresh process, e.g. run_step("06_reduce_dimensionality", [...])."""
    code = ("import sys, importlib; sys.path.insert(0, '.'); "
            f"rc = importlib.import_module({module!r}).main(sys.argv[1:]); "
            "from bench.child_step import print_peak_rss; print_peak_rss(); sys.exit(rc)")
    return timed([sys.executable, "-c", code] + argv)
