"""Benchmark the web viewer on a large synthetic export in headless Chromium: first paint, JS heap,
peak browser memory, and frame times while zooming down to single thumbnails.

Anchor: an eager page that does what a straightforward viewer does: fetch the manifest, every
grid and every sprite sheet, then draw the coarsest level. Both run on the SAME export, served
from 127.0.0.1, in one run, repetitions interleaved; each repetition starts a fresh browser.

Variants:
  ours            web/ as exported, manifest.json as step 07 writes it (its file list leaves out
                  the thumbnails)
  ours-all-files  the same export, with a manifest that also names every thumbnail (what the
                  contract's "files: every file" would mean: 1M names at 1M rows)
  eager           the anchor, on the same manifest as "ours"

The export is generated with tests/export_fixture.py (grids, sprite sheets, row tiles as step 07
writes them). Thumbnail files are written only for the row tile the zoom tour ends in, as hard
links to 16 shared images, to save disk.

    python bench/bench_viewer.py --rows 1000000 --repeats 3
    python bench/bench_viewer.py --rows 100000 --repeats 2      # quick
Scratch data goes to bench/out/ (git-ignored); a generated export is reused when its row count matches.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.export_fixture import copy_viewer, make_export, write_thumbnails  # noqa: E402
from tests.web_server import LoopbackServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}
EAGER_HTML = """<!doctype html><meta charset="utf-8"><title>eager</title>
<style>html,body{margin:0;height:100%;background:#101014}canvas{width:100%;height:100%;display:block}</style>
<canvas id="map"></canvas><script type="module" src="eager.js"></script>"""
EAGER_JS = """// Eager anchor: load everything up front, then draw the coarsest level.
const load = (src) => new Promise((ok, fail) => { const i = new Image(); i.onload = () => ok(i); i.onerror = fail; i.src = src; });
const m = await (await fetch('manifest.json')).json();
const grids = await Promise.all(m.levels.map((L) => fetch(m.grids[String(L)]).then((r) => r.json())));
const sheets = {};
await Promise.all(m.levels.map(async (L) => { sheets[L] = await Promise.all(m.sprites[String(L)].sheets.map(load)); }));
const c = document.getElementById('map');
c.width = c.clientWidth; c.height = c.clientHeight;
const ctx = c.getContext('2d');
const L = m.levels[0], sp = m.sprites[String(L)], per = sp.columns * sp.columns, s = Math.min(c.width, c.height) * 0.92 / L;
const ox = (c.width - s * L) / 2, oy = (c.height - s * L) / 2;
for (const [i, j, count, id, cap, dom, cat, cl, k] of grids[0].cells) {
  ctx.fillStyle = '#553'; ctx.fillRect(ox + i * s, oy + j * s, s, s);
  if (k >= 0) { const p = k % per; ctx.drawImage(sheets[L][Math.floor(k / per)], (p % sp.columns) * sp.tile, Math.floor(p / sp.columns) * sp.tile, sp.tile, sp.tile, ox + i * s, oy + j * s, s, s); }
}
// Kept, as an interactive page must keep them (and so the heap figure counts them).
window.__eager = { paintMs: performance.now(), cells: grids[0].cells.length, grids, sheets };
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the synthetic export (default 1,000,000)")
    p.add_argument("--repeats", type=int, default=3, help="repetitions of each variant, interleaved (default 3)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "viewer", help="scratch folder")
    p.add_argument("--regenerate", action="store_true", help="rebuild the export even if one of this size exists")
    p.add_argument("--no-tour", action="store_true", help="skip the zoom tour (first paint and heap only)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- the export
def densest_cell(folder: Path) -> tuple[int, int]:
    cells = json.loads((folder / "grid_256.json").read_text())["cells"]
    best = max(cells, key=lambda c: c[2])
    return best[0], best[1]


def build_export(rows: int, out: Path, regenerate: bool) -> tuple[Path, Path]:
    folder, listed = out / f"export-{rows}", out / f"export-{rows}-all-files"
    manifest = folder / "manifest.json"
    if regenerate or not manifest.exists() or json.loads(manifest.read_text())["rows"] != rows:
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        exp = make_export(folder, rows=rows, clusters=12, spread=0.05, thumb_files=np.zeros(rows, bool))
        (folder / "thumbnail-names.json").write_text(json.dumps([f"images/256/{i}.jpg" for i in exp.ids]))
        i, j = densest_cell(folder)
        tile = (np.minimum((exp.x * 16).astype(int), 15) == i // 16) & (np.minimum((exp.y * 16).astype(int), 15) == j // 16)
        write_thumbnails(folder, exp, np.flatnonzero(tile).tolist(), distinct=16)
        print(f"generated a {rows:,}-row export in {time.perf_counter() - t:.1f} s "
              f"({int(tile.sum()):,} thumbnail files, hard links to 16 images)")
    else:
        print(f"reusing the {rows:,}-row export in {folder}")
        copy_viewer(folder)  # the viewer under test is always the current web/
    (folder / "eager.html").write_text(EAGER_HTML)
    (folder / "eager.js").write_text(EAGER_JS)
    # The all-files variant: the same files through symlinks, and a manifest naming every thumbnail.
    shutil.rmtree(listed, ignore_errors=True)
    listed.mkdir(parents=True)
    for entry in folder.iterdir():
        if entry.name != "manifest.json":
            os.symlink(entry.resolve(), listed / entry.name)
    m = json.loads(manifest.read_text())
    m["files"] += json.loads((folder / "thumbnail-names.json").read_text())
    (listed / "manifest.json").write_text(json.dumps(m, separators=(",", ":")))
    sizes = {"manifest.json": manifest, "all-files manifest.json": listed / "manifest.json",
             "grid_64.json": folder / "grid_64.json", "grid_256.json": folder / "grid_256.json"}
    print("sizes: " + ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in sizes.items()))
    return folder, listed


# ---------------------------------------------------------------------------------------------- measuring
class PeakRss:
    """Peak summed RSS of this process's Chromium descendants, sampled every 50 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    if "chrom" in child.name():
                        total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def heap_mb(cdp) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return cdp.send("Runtime.getHeapUsage")["usedSize"] / 2**20


def wait_state(page, condition: str, timeout: float = 60_000):
    page.wait_for_function(f"() => {{ const v = window.__viewer; if (!v) return false; const state = v.state; "
                           f"return ({condition}); }}", timeout=timeout)


def zoom_tour(page, target) -> dict:
    """Wheel-zoom into the densest cell until cells open into single thumbnails (or the zoom is at
    its limit); draw times of the frames on the way (the renderer's own work per frame, from the
    viewer's state)."""
    page.mouse.move(*page.evaluate(f"window.__viewer.pagePoint({target[0]}, {target[1]})"))
    draws, t = [], time.perf_counter()
    for _ in range(40):
        frames, scale = page.evaluate("[window.__viewer.state.frames, window.__viewer.camera.scale]")
        page.mouse.wheel(0, -300)
        wait_state(page, f"state.frames > {frames}")
        draws.append(page.evaluate("window.__viewer.state.drawMs"))
        s = page.evaluate("window.__viewer.state")
        if s["mode"] == "thumbs" and (s["membersDrawn"] > 0 or s["scale"] == scale):
            break
    wait_state(page, "state.thumbsDrawn + (state.repThumbsDrawn || 0) > 0 && state.drawnLevels.length === 1")
    return {"tour_s": time.perf_counter() - t, "draw_median_ms": statistics.median(draws), "draw_max_ms": max(draws),
            "state": page.evaluate("JSON.parse(JSON.stringify(window.__viewer.state))")}


def run_once(pw, variant: str, url: str, target, tour: bool) -> dict:
    with PeakRss() as rss:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        cdp = page.context.new_cdp_session(page)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        if variant == "eager":
            page.goto(url + "eager.html")
            page.wait_for_function("() => window.__eager", timeout=120_000)
            first = page.evaluate("window.__eager.paintMs")
            result = {"first_paint_ms": first, "sprites_paint_ms": first}
        else:
            page.goto(url + "index.html")
            wait_state(page, "state.spritesPaintMs !== null", timeout=120_000)
            result = {"first_paint_ms": page.evaluate("window.__viewer.state.firstPaintMs"),
                      "sprites_paint_ms": page.evaluate("window.__viewer.state.spritesPaintMs")}
        result["heap_mb"] = heap_mb(cdp)
        result["rss_at_paint_mb"] = rss.peak / 2**20
        if tour and variant == "ours":
            result.update(zoom_tour(page, target))
            result["heap_after_tour_mb"] = heap_mb(cdp)
        browser.close()
    result["peak_rss_mb"] = rss.peak / 2**20
    result["page_errors"] = errors
    return result


def report(results: dict) -> None:
    def med(variant, key):
        return statistics.median(r[key] for r in results[variant])

    print(f"\n{'variant':<16}{'first paint ms':>16}{'with sprites ms':>17}{'JS heap MB':>12}{'peak RSS MB':>13}"
          f"{'(tour incl.)':>14}")
    for v in results:
        print(f"{v:<16}{med(v, 'first_paint_ms'):>16.0f}{med(v, 'sprites_paint_ms'):>17.0f}"
              f"{med(v, 'heap_mb'):>12.1f}{med(v, 'rss_at_paint_mb'):>13.0f}{med(v, 'peak_rss_mb'):>14.0f}")
    for v in ("ours", "ours-all-files"):
        print(f"ratio {v} / eager: first paint {med(v, 'first_paint_ms') / med('eager', 'first_paint_ms'):.2f}, "
              f"JS heap {med(v, 'heap_mb') / med('eager', 'heap_mb'):.2f}, "
              f"peak RSS at first paint {med(v, 'rss_at_paint_mb') / med('eager', 'rss_at_paint_mb'):.2f}")
    tours = [r for r in results["ours"] if "tour_s" in r]
    if tours:
        print(f"zoom tour to single thumbnails (ours): frame draw median {statistics.median(r['draw_median_ms'] for r in tours):.1f} ms, "
              f"worst {max(r['draw_max_ms'] for r in tours):.1f} ms; JS heap after the tour "
              f"{statistics.median(r['heap_after_tour_mb'] for r in tours):.1f} MB; caches "
              f"{tours[-1]['state']['cache']}")
    errors = [e for rs in results.values() for r in rs for e in r["page_errors"]]
    if errors:
        print(f"page errors: {errors[:3]}")


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    args = parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"needs Chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    folder, listed = build_export(args.rows, args.out, args.regenerate)
    i, j = densest_cell(folder)
    target = ((i + 0.5) / 256, (j + 0.5) / 256)
    servers = {"ours": LoopbackServer(folder), "ours-all-files": LoopbackServer(listed), "eager": LoopbackServer(folder)}
    results = {v: [] for v in servers}
    try:
        with sync_playwright() as pw:
            for rep in range(args.repeats):
                order = list(servers)[rep % 3:] + list(servers)[:rep % 3]
                for variant in order:
                    r = run_once(pw, variant, servers[variant].url, target, not args.no_tour)
                    results[variant].append(r)
                    print(f"rep {rep + 1} {variant:<15} first paint {r['first_paint_ms']:7.0f} ms, "
                          f"heap {r['heap_mb']:6.1f} MB, peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
    finally:
        for s in servers.values():
            s.close()
    print(f"\n{args.rows:,} rows, {args.repeats} repetitions, viewport {VIEWPORT['width']}x{VIEWPORT['height']}, "
          f"headless Chromium, software rendering, served from 127.0.0.1")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
