"""Benchmark step 08: images placed per minute against a loopback Miro API that enforces Miro's budget.

Miro allows 100,000 credits per minute per user and app; creating an item costs 100 (Level 2), so
no client can place more than 1,000 images a minute. The loopback API (tests/miro_server.py)
enforces that budget, scaled to a shorter window so a run takes a minute instead of ten
(--window 6 s with a budget of 10,000 credits is the same 1,000 creates a minute), and answers
every upload after --latency seconds, as a real upload takes time.

Same generated export, one process, repetitions interleaved:
  ours    08_upload_to_miro.py (bounded concurrency, credit gate, ledger written after every item)
  naive   the loop a researcher would write: one upload after another, sleeping until the reset
          named by a 429
Reported: median items/min and its ratio to the 1,000/min ceiling (a run spans many windows, so
the full budget the first window hands out at once inflates the rate only a little), how much of
the budget of the windows a run spanned it used, lost and duplicated items (must be 0), peak RSS.

    python bench/bench_08_miro.py                    # 1,000 images, 6 s windows, 2 repetitions
    python bench/bench_08_miro.py --images 2000 --window 12 --reps 3
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.miro.client import CREDITS_PER_MINUTE, MiroBoard  # noqa: E402
from tests.miro_server import BOARD, TOKEN, MiroState, start  # noqa: E402

CREATE = 100


def make_export(root: Path, n: int) -> list[dict]:
    """A level-64 grid of n cells with small JPEG thumbnails (the export contract, version 1)."""
    export = root / "export"
    (export / "images" / "256").mkdir(parents=True)
    cells = []
    for k in range(n):
        rid = f"{k:016x}"
        Image.new("RGB", (64, 48), (k % 255, 90, 140)).save(export / "images" / "256" / f"{rid}.jpg", quality=70)
        cells.append([k % 64, k // 64, 1 + k % 29, rid, f"image {k}", "example.org", "news", 0, k])
    grid = {"level": 64, "columns": ["i", "j", "count", "id", "caption", "domain", "category", "cluster", "sprite"],
            "cells": cells}
    (export / "grid_64.json").write_text(json.dumps(grid))
    (export / "manifest.json").write_text(json.dumps({
        "version": 1, "created": "2026-01-01T00:00:00+00:00", "title": "Bench", "rows": n, "levels": [64],
        "grids": {"64": "grid_64.json"}, "thumbs": {"dir": "images/256", "size": 256}, "clusters": [],
        "categories": [], "parameters": {}, "files": []}))
    return cells


def fresh_server(window: float, latency: float):
    return start(MiroState(budget=int(CREDITS_PER_MINUTE * window / 60), window=window, latency=latency))


def run_ours(data: Path, server, concurrency: int) -> float:
    step = importlib.import_module("08_upload_to_miro")
    args = ["--data-dir", str(data), "--board", BOARD, "--token", TOKEN, "--api_url", server.url,
            "--no-frame", "--no-labels", "--concurrency", str(concurrency)]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = step.main(args)
    assert code == 0, f"step 08 exited {code}"
    return time.perf_counter() - t0


def run_naive(data: Path, server, cells: list[dict]) -> float:
    board = MiroBoard(TOKEN, BOARD, server.url)
    client = board.api.api_client
    from common.miro.client import image_upload_request
    from miro_api.models.fixed_ratio_geometry import FixedRatioGeometry
    from miro_api.models.position_change import PositionChange
    from miro_api.models.upload_file_from_device_data import UploadFileFromDeviceData
    t0 = time.perf_counter()
    for i, j, _count, rid, *_ in cells:
        data_part = UploadFileFromDeviceData(title=f"cell {i},{j}", position=PositionChange(x=i * 440.0, y=j * 440.0),
                                             geometry=FixedRatioGeometry(width=400))
        path = data / "export" / "images" / "256" / f"{rid}.jpg"
        while True:
            method, url, headers, body, parts = image_upload_request(board.api, BOARD, path, data_part)
            r = client.call_api(method, url, headers, body, parts)
            r.read()
            if r.status != 429:
                break
            time.sleep(max(float(r.getheader("X-RateLimit-Reset")) - time.time(), 0.0) + 0.01)
        assert r.status == 201, r.status
    return time.perf_counter() - t0


def check_board(server, n: int) -> tuple[int, int]:
    titles = [it["data"]["title"] for it in server.state.items(type="image")]
    return n - len(set(titles)), len(titles) - len(set(titles))     # lost, duplicated


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000, help="images to place per run (default: 1,000)")
    p.add_argument("--window", type=float, default=6.0, help="rate-limit window in seconds, budget scaled (default: 6)")
    p.add_argument("--latency", type=float, default=0.1, help="seconds the API takes per upload (default: 0.1)")
    p.add_argument("--concurrency", type=int, default=8, help="step 08's --concurrency (default: 8)")
    p.add_argument("--reps", type=int, default=2, help="repetitions of each client, interleaved (default: 2)")
    p.add_argument("--skip-naive", action="store_true", help="time step 08 only")
    args = p.parse_args()

    ceiling = CREDITS_PER_MINUTE / CREATE
    per_window = int(CREDITS_PER_MINUTE * args.window / 60) // CREATE
    times = {"ours": [], "naive": []}
    problems = []
    with tempfile.TemporaryDirectory(prefix="bench08-") as tmp:
        cells = make_export(Path(tmp) / "seed", args.images)
        for rep in range(args.reps):
            for name in ("ours", "naive"):
                if name == "naive" and args.skip_naive:
                    continue
                data = Path(tmp) / f"{name}-{rep}"
                data.mkdir()
                (data / "export").symlink_to(Path(tmp) / "seed" / "export")
                server = fresh_server(args.window, args.latency)
                try:
                    seconds = run_ours(data, server, args.concurrency) if name == "ours" else \
                        run_naive(data, server, cells)
                    lost, dup = check_board(server, args.images)
                finally:
                    server.shutdown()
                    server.server_close()
                times[name].append(seconds)
                problems.append((name, lost, dup))
                print(f"rep {rep + 1} {name:5s} {args.images:,} images in {seconds:,.1f}s = "
                      f"{args.images / seconds * 60:,.0f}/min (lost {lost}, duplicated {dup})", flush=True)
    print(f"\nbudget {CREDITS_PER_MINUTE:,} credits/min as {per_window * CREATE:,} per {args.window:g}s window; "
          f"create = {CREATE} credits -> ceiling {ceiling:,.0f} images/min; upload latency {args.latency:g}s")
    for name, ts in times.items():
        if not ts:
            continue
        med = statistics.median(ts)
        rate = args.images / med * 60
        used = args.images / (math.ceil(med / args.window) * per_window)
        print(f"{name:5s} median {med:,.1f}s  {rate:,.0f} images/min  ratio to ceiling {rate / ceiling:.2f}  "
              f"budget used in the {math.ceil(med / args.window)} windows spanned {used:.2f}")
    if times["naive"]:
        print(f"ours / naive time: {statistics.median(times['ours']) / statistics.median(times['naive']):.2f}")
    print(f"lost/duplicated: {sum(p[1] for p in problems)}/{sum(p[2] for p in problems)}; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (client and server, one process)")
    return 0 if not any(p[1] or p[2] for p in problems) else 1


if __name__ == "__main__":
    sys.exit(main())
