"""The web viewer in headless Chromium, on a synthetic export served from 127.0.0.1.

One browser per module; each test gets a fresh page whose console messages, page errors, dialogs
and requests are recorded, so every test can also check that nothing went wrong on the side.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import missing
from tests.export_fixture import LEVELS, id_colour, make_export
from tests.web_server import web_server  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
NO_CHROMIUM = "needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)"

XSS = "<img src=x onerror=alert(1)>"
SPECIAL = {
    0: {"caption": XSS, "url": "javascript:alert(1)", "x": 0.03, "y": 0.96},
    1: {"caption": '=HYPERLINK("https://evil.example","click")', "x": 0.950, "y": 0.050},
    2: {"caption": 'two\nlines, "quoted"', "x": 0.955, "y": 0.052},
    3: {"caption": "-2+3", "x": 0.952, "y": 0.057},
    4: {"caption": "@SUM(A1)", "x": 0.957, "y": 0.045},
}
VIEWPORT = {"width": 1000, "height": 760}
BACKGROUND = (16, 16, 20)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export"), rows=1500, clusters=3, spread=0.03, special=SPECIAL)


@pytest.fixture(scope="module")
def server(export, web_server):  # noqa: F811
    return web_server(export.folder)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        missing(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


class Page:
    """A fresh page with everything it does recorded."""

    def __init__(self, browser, server):
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.server = server
        self.console_errors, self.page_errors, self.dialogs, self.requests = [], [], [], []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, wait_for="state.spritesPaintMs !== null"):
        self.page.goto(self.server.url + "index.html")
        self.wait(wait_for)
        return self

    def wait(self, condition: str, timeout: float = 10_000):
        """Wait until `condition` (JavaScript over the viewer's `state`) holds."""
        self.page.wait_for_function(
            f"() => {{ const v = window.__viewer; if (!v) return false; const state = v.state; return ({condition}); }}",
            timeout=timeout)

    def until(self, check, timeout: float = 10.0) -> bool:
        """Poll a Python-side check (e.g. over recorded requests) while the page keeps running."""
        for _ in range(int(timeout * 10)):
            if check():
                return True
            self.page.wait_for_timeout(100)
        return check()

    def state(self) -> dict:
        return self.page.evaluate("JSON.parse(JSON.stringify(window.__viewer.state))")

    def point(self, x: float, y: float) -> tuple[float, float]:
        return tuple(self.page.evaluate(f"window.__viewer.pagePoint({x}, {y})"))

    def cell_point(self, level: int, i: int, j: int):
        return self.point((i + 0.5) / level, (j + 0.5) / level)

    def pixel(self, px: float, py: float) -> tuple[int, int, int]:
        return tuple(self.page.evaluate(f"""() => {{
            const c = document.getElementById('map'), r = c.getBoundingClientRect(), d = window.devicePixelRatio;
            return Array.from(c.getContext('2d').getImageData(({px} - r.left) * d, ({py} - r.top) * d, 1, 1).data.slice(0, 3));
        }}"""))

    def zoom_at(self, x: float, y: float, steps: int):
        """Wheel-zoom in on map point (x, y), one frame per step."""
        self.page.mouse.move(*self.point(x, y))
        for _ in range(steps):
            frames = self.state()["frames"]
            self.page.mouse.wheel(0, -300)
            self.wait(f"state.frames > {frames}")

    def assert_clean(self):
        assert self.console_errors == []
        assert self.page_errors == []
        assert self.dialogs == []
        outside = [u for u in self.requests if not u.startswith(self.server.url)]
        assert outside == [], f"requests outside the export folder: {outside}"


@pytest.fixture
def page(browser, server):
    server.clear()
    p = Page(browser, server)
    yield p
    p.context.close()


def densest_cell(export, level: int) -> dict:
    return max((dict(zip(("i", "j", "count", "id", "caption", "domain"), c[:6])) for c in export.grids[level]),
               key=lambda c: c["count"])


def close(a, b, tol=14) -> bool:
    return all(abs(int(u) - int(v)) <= tol for u, v in zip(a, b))


# ------------------------------------------------------------------------------------------------ drawing
def test_loads_export_and_draws_every_cell_of_the_coarsest_level_with_its_sprite(page, export):
    page.open()
    s = page.state()
    L = s["level"]
    assert L == LEVELS[0] and s["mode"] == "grid"
    assert s["cellsDrawn"] == len(export.grids[L])
    assert s["imagesDrawn"] == sum(1 for c in export.grids[L] if c[8] >= 0)
    assert s["labelsDrawn"] >= 1
    cell = densest_cell(export, L)
    # The densest cell's image fills it: near its corners, it shows the representative's colour
    # (one corner may lie under a cluster label).
    corners = [page.point((cell["i"] + a) / L, (cell["j"] + b) / L) for a in (0.15, 0.85) for b in (0.15, 0.85)]
    assert sum(close(page.pixel(*xy), id_colour(cell["id"])) for xy in corners) >= 3
    box = page.page.locator("#map").bounding_box()
    assert close(page.pixel(box["x"] + 3, box["y"] + 3), BACKGROUND, tol=4)  # the margin around the rows
    page.assert_clean()


def test_zoom_switches_level_16_32_64_128_256_then_single_thumbnails(page, export, server):
    page.open()
    cell = densest_cell(export, 256)
    x, y = (cell["i"] + 0.5) / 256, (cell["j"] + 0.5) / 256
    seen = []
    for _ in range(30):
        page.zoom_at(x, y, 1)
        page.wait("state.drawnLevels.length === 1 && state.wantedLevel === state.level")
        s = page.state()
        step = "thumbs" if s["mode"] == "thumbs" else s["level"]
        if not seen or seen[-1] != step:
            seen.append(step)
        if step == "thumbs":
            break
    assert seen == [*LEVELS, "thumbs"]
    # The cell under the cursor opens into its members' own thumbnails.
    members = {export.ids[r] for r in export.members(256, cell["i"], cell["j"])}
    def asked():
        return {u.rsplit("/", 1)[1][:-4] for u in page.requests if "/images/256/" in u}

    assert page.until(lambda: members <= asked()), members - asked()
    page.wait("state.thumbsDrawn > 0")
    page.assert_clean()


def test_coarser_level_stays_drawn_while_finer_sprites_load(page, export, server):
    page.open()
    server.delay("/sprites/128-", 1.5)
    cell = densest_cell(export, 128)
    x, y = (cell["i"] + 0.5) / 128, (cell["j"] + 0.5) / 128
    for _ in range(10):
        page.zoom_at(x, y, 1)
        if page.state()["wantedLevel"] == 128:
            break
    page.wait("state.wantedLevel === 128 && state.drawnLevels.includes(128)")
    s = page.state()
    assert s["drawnLevels"] == [64, 128]
    parent = export.cell(64, cell["i"] // 2, cell["j"] // 2)
    # The middle of the parent cell shows the parent's image while its children's sheets load.
    # (Just off the exact middle: the hover outline of the cell under the cursor touches that corner.)
    px, py = (cell["i"] // 2 + 0.5) / 64 + 0.3 / 128, (cell["j"] // 2 + 0.5) / 64 + 0.3 / 128
    assert close(page.pixel(*page.point(px, py)), id_colour(parent["id"]))
    page.wait("state.drawnLevels.length === 1", timeout=8000)
    assert page.state()["drawnLevels"] == [128]
    page.assert_clean()


# ------------------------------------------------------------------------------------------------ hover, gallery
def test_hover_shows_caption_domain_and_count(page, export):
    page.open()
    L = page.state()["level"]
    cell = densest_cell(export, L)
    page.page.mouse.move(*page.cell_point(L, cell["i"], cell["j"]))
    tip = page.page.locator("#tooltip")
    tip.wait_for(state="visible")
    assert tip.locator(".caption").text_content() == cell["caption"]
    assert cell["domain"] in tip.locator(".meta").text_content()
    assert tip.locator(".count").text_content() == f"{cell['count']:,} images in this cell"
    page.assert_clean()


def test_script_in_caption_stays_inert_in_tooltip_and_gallery(page, export):
    page.open()
    L = page.state()["level"]
    i, j = export.cell_of(L, 0)
    assert export.cell(L, i, j)["caption"] == XSS
    where = page.cell_point(L, i, j)
    page.page.mouse.move(*where)
    page.page.locator("#tooltip").wait_for(state="visible")
    assert page.page.locator("#tooltip .caption").text_content() == XSS
    page.page.mouse.click(*where)
    page.page.locator("#gallery figcaption").first.wait_for()
    assert page.page.locator("#gallery figcaption").all_text_contents() == [XSS]
    page.page.wait_for_timeout(300)
    # Only the viewer's own thumbnails are images; the javascript: URL became a note, not a link.
    srcs = page.page.eval_on_selector_all("img", "els => els.map(e => e.className + ' ' + e.src)")
    assert srcs == [f"thumb {page.server.url}images/256/{export.ids[0]}.jpg"]
    assert page.page.locator("a[href^='javascript']").count() == 0
    assert page.page.locator("#gallery .bad-url").count() == 1
    page.assert_clean()


def test_click_opens_gallery_of_cell_members_with_safe_source_links(page, export):
    page.open()
    L = page.state()["level"]
    cell = densest_cell(export, L)
    page.page.mouse.click(*page.cell_point(L, cell["i"], cell["j"]))
    page.page.locator("#gallery figure").first.wait_for()
    members = export.members(L, cell["i"], cell["j"])
    assert len(members) == cell["count"]
    assert page.page.locator("#gallery-title").text_content() == f"{cell['count']:,} images in this cell"
    captions = page.page.locator("#gallery figcaption").all_text_contents()
    assert captions == [export.captions[r] for r in sorted(members, key=lambda r: (export.y[r], export.x[r]))][:120]
    links = page.page.eval_on_selector_all("#gallery a", "els => els.map(a => [a.href, a.target, a.rel])")
    assert links and all(h.startswith("https://") and t == "_blank" and r == "noopener noreferrer" for h, t, r in links)
    page.assert_clean()


# ------------------------------------------------------------------------------------------------ search, filters
def test_search_marks_representatives_at_once_then_members_from_row_tiles(page, export, server):
    page.open()
    reps = {c[3] for L in export.grids for c in export.grids[L]}
    row = next(r for r in range(5, len(export.ids)) if export.ids[r] not in reps)
    query = export.captions[row]
    expected = {export.cell_of(64, r) for r in range(len(export.ids)) if query.lower() in export.captions[r].lower()}
    rep_hits = {(c[0], c[1]) for c in export.grids[64] if query.lower() in c[4].lower()}
    server.delay("/rows/", 0.8)
    page.page.fill("#search", query)
    page.wait(f"state.search.query === {query.lower()!r}")
    first = page.state()
    assert first["search"]["tilesDone"] < first["search"]["tilesTotal"]
    assert first["highlighted"] == len(rep_hits)
    server.delay("/rows/", 0)
    page.wait("state.search.done", timeout=20_000)
    page.wait(f"state.highlighted === {len(expected)}")
    s = page.state()
    assert s["search"]["rowMatches"] == sum(query.lower() in c.lower() for c in export.captions)
    assert s["cellsShown"] == len(expected)
    assert "matching rows" in page.page.locator("#search-status").text_content()
    # The row pass runs in a worker: its requests are recorded too, so assert_clean covers them.
    assert len({u for u in page.requests if "/rows/" in u}) == s["search"]["tilesTotal"]
    page.assert_clean()


def test_filters_keep_only_cells_of_the_chosen_cluster_and_category(page, export):
    page.open()
    L = page.state()["level"]
    page.page.select_option("#cluster", "1")
    page.wait("state.filters.cluster === 1")
    cells = export.grids[L]
    assert page.state()["cellsShown"] == sum(1 for c in cells if c[7] == 1)
    page.page.select_option("#category", "news")
    page.wait("state.filters.category === 'news'")
    assert page.state()["cellsShown"] == sum(1 for c in cells if c[7] == 1 and c[6] == "news")
    page.page.select_option("#cluster", "")
    page.wait("state.filters.cluster === null")
    assert page.state()["cellsShown"] == sum(1 for c in cells if c[6] == "news")
    # In the gallery the filter applies to each member, not just the representative.
    cell = densest_cell(export, L)
    members = export.members(L, cell["i"], cell["j"])
    news = [r for r in members if export.categories[r] == "news"]
    assert 0 < len(news) < len(members)
    page.page.mouse.click(*page.cell_point(L, cell["i"], cell["j"]))
    page.page.locator("#gallery figure").first.wait_for()
    assert page.page.locator("#gallery figcaption").all_text_contents() == [
        export.captions[r] for r in sorted(news, key=lambda r: (export.y[r], export.x[r]))]
    assert page.page.locator("#gallery-status").text_content() == f"{len(members) - len(news):,} hidden by the filters"
    page.assert_clean()


def test_two_finger_pinch_zooms_the_map(browser, server):
    context = browser.new_context(viewport=VIEWPORT, has_touch=True)
    try:
        page = context.new_page()
        page.goto(server.url + "index.html")
        page.wait_for_function("() => window.__viewer && window.__viewer.state.spritesPaintMs !== null")
        before = page.evaluate("window.__viewer.camera.scale")
        cdp = context.new_cdp_session(page)

        def touch(kind, spread):
            points = [{"x": 500 - spread, "y": 400, "id": 1}, {"x": 500 + spread, "y": 400, "id": 2}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [] if kind == "touchEnd" else points})

        touch("touchStart", 40)
        for spread in (60, 90, 120, 160):
            touch("touchMove", spread)
        touch("touchEnd", 0)
        page.wait_for_function(f"() => window.__viewer.state.scale > {before * 3}")
        assert page.evaluate("window.__viewer.camera.scale") == pytest.approx(before * 4, rel=0.1)
    finally:
        context.close()


# ------------------------------------------------------------------------------------------------ CSV export
def shift_drag_download(page, a, b) -> str:
    page.page.keyboard.down("Shift")
    page.page.mouse.move(*a)
    page.page.mouse.down()
    page.page.mouse.move(*b, steps=4)
    with page.page.expect_download() as info:
        page.page.mouse.up()
    page.page.keyboard.up("Shift")
    return Path(info.value.path()).read_text(encoding="utf-8")


def test_shift_drag_exports_the_region_rows_as_quoted_csv(page, export):
    page.open()
    a, b = page.point(0.935, 0.035), page.point(0.975, 0.07)
    text = shift_drag_download(page, a, b)
    box = page.state()["lastExport"]
    inside = [r for r in range(len(export.ids))
              if box["x0"] <= export.x[r] <= box["x1"] and box["y0"] <= export.y[r] <= box["y1"]]
    assert {1, 2, 3, 4} <= set(inside)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(rows[0].keys()) == ["id", "x", "y", "caption", "url", "domain", "category", "cluster"]
    assert sorted(r["id"] for r in rows) == sorted(export.ids[r] for r in inside)
    by_id = {r["id"]: r for r in rows}
    assert by_id[export.ids[1]]["caption"] == "'" + SPECIAL[1]["caption"]
    assert by_id[export.ids[2]]["caption"] == SPECIAL[2]["caption"]
    assert by_id[export.ids[3]]["caption"] == "'-2+3"
    assert by_id[export.ids[4]]["caption"] == "'@SUM(A1)"
    assert np.isclose(float(by_id[export.ids[1]]["x"]), 0.95)
    assert page.page.locator("#notice").text_content() == f"Exported {len(inside):,} rows to selected-rows.csv"
    # With a filter, only the rows of that domain category are exported.
    category = export.categories[1]
    page.page.select_option("#category", category)
    page.wait(f"state.filters.category === {category!r}")
    rows = list(csv.DictReader(io.StringIO(shift_drag_download(page, a, b), newline="")))
    box = page.state()["lastExport"]
    inside = [r for r in range(len(export.ids)) if export.categories[r] == category
              and box["x0"] <= export.x[r] <= box["x1"] and box["y0"] <= export.y[r] <= box["y1"]]
    assert sorted(r["id"] for r in rows) == sorted(export.ids[r] for r in inside)
    assert {r["category"] for r in rows} == {category}
    page.assert_clean()


def test_csv_cells_are_quoted_and_formulas_neutralised(page):
    page.open()
    got = page.page.evaluate("""async () => {
        const { csvCell, toCsv } = await import('./js/csv.js');
        return [csvCell('=1+1'), csvCell('-5'), csvCell(-5), csvCell('a,"b"'), csvCell(null), csvCell('plain'),
                csvCell('\\tTAB'), toCsv(['a', 'b'], [[1, 'x\\ny']])];
    }""")
    assert got == ["'=1+1", "'-5", "-5", '"a,""b"""', "", "plain", "'\tTAB", 'a,b\r\n1,"x\ny"\r\n']


# ------------------------------------------------------------------------------------------------ safety
def test_tour_makes_no_console_error_and_no_request_outside_the_export(page, export, server):
    page.open()
    cell = densest_cell(export, 256)
    page.page.fill("#search", "plaza")
    page.wait("state.search.query === 'plaza' && state.search.done", timeout=20_000)
    page.page.fill("#search", "")
    page.wait("state.search.query === ''")
    page.zoom_at((cell["i"] + 0.5) / 256, (cell["j"] + 0.5) / 256, 14)
    page.wait("state.mode === 'thumbs' && state.thumbsDrawn > 0")
    where = page.point((cell["i"] + 0.5) / 256, (cell["j"] + 0.5) / 256)
    page.page.mouse.move(where[0] + 3, where[1] + 3)  # the cursor is already there: a real move
    page.page.mouse.move(*where)
    page.page.locator("#tooltip").wait_for(state="visible")
    # Over a single thumbnail the tooltip names that image, one of the cell's members.
    member_captions = {export.captions[r] for r in export.members(256, cell["i"], cell["j"])}
    assert page.page.locator("#tooltip .caption").text_content() in member_captions
    page.page.mouse.click(*where)
    page.page.locator("#gallery figure").first.wait_for()
    page.page.wait_for_timeout(300)
    page.assert_clean()
    served = server.requests
    assert all((export.folder / p.lstrip("/").split("?")[0]).is_file() for p in served), served


def test_manifest_paths_outside_the_export_folder_are_refused(tmp_path, browser, web_server):  # noqa: F811
    make_export(tmp_path, rows=50, manifest_overrides={
        "grids": {"16": "grid_16.json", "32": "grid_32.json", "64": "http://example.com/grid_64.json",
                  "128": "../grid_128.json", "256": "grid_256.json"}})
    p = Page(browser, web_server(tmp_path))
    try:
        p.page.goto(p.server.url + "index.html")
        p.wait("state.error !== null")
        error = p.page.locator("#error")
        assert error.is_visible()
        assert "outside the export folder" in error.text_content()
        assert [u for u in p.requests if not u.startswith(p.server.url)] == []
        assert p.page_errors == [] and p.dialogs == []
    finally:
        p.context.close()


def test_missing_manifest_is_one_readable_error(tmp_path, browser, web_server):  # noqa: F811
    from tests.export_fixture import copy_viewer

    copy_viewer(tmp_path)
    p = Page(browser, web_server(tmp_path))
    try:
        p.page.goto(p.server.url + "index.html")
        p.wait("state.error !== null")
        assert p.page.locator("#error").text_content() == "Cannot show this export: manifest.json: HTTP 404."
        assert p.page_errors == []
    finally:
        p.context.close()


# ------------------------------------------------------------------------------------------------ with step 07
def test_viewer_opens_what_step_07_exports(tmp_path, browser, web_server):  # noqa: F811
    """End to end: step 07's own export (not the synthetic one) draws, hovers and opens a gallery."""
    import json

    from common.paths import DataTree
    from tests.conftest import load_step
    from tests.test_07_helpers import make_inputs

    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=300, seed=3)
    step = load_step("07_export_for_web")
    assert step.main(["--data-dir", str(tree.root), "--poster-size", "600", "--no-download-missing", "--no-gephi"]) == 0
    p = Page(browser, web_server(tree.export))
    try:
        p.open()
        s = p.state()
        L = s["level"]
        cells = json.loads(tree.grid_file(L).read_text())["cells"]
        assert s["cellsDrawn"] == len(cells)
        assert s["imagesDrawn"] == sum(1 for c in cells if c[8] >= 0)
        best = max(cells, key=lambda c: c[2])
        p.page.mouse.move(*p.cell_point(L, best[0], best[1]))
        p.page.locator("#tooltip").wait_for(state="visible")
        assert p.page.locator("#tooltip .caption").text_content() == best[4]
        p.page.mouse.click(*p.cell_point(L, best[0], best[1]))
        p.page.locator("#gallery figcaption").first.wait_for()
        assert p.page.locator("#gallery figcaption").count() == best[2]
        # Rows without a thumbnail are 404s by design (the row tiles do not say which have one).
        p.console_errors = [e for e in p.console_errors if "404" not in e]
        p.assert_clean()
    finally:
        p.context.close()


def test_evicted_sprite_sheets_load_again_when_needed(page):
    """The caches drop decoded images; one that comes back on screen must be fetched again, not lost."""
    page.open()
    loaded = page.page.evaluate("""async () => {
        const s = window.__viewer.store;
        const until = async (f) => { for (let n = 0; n < 800 && !f(); n++) await new Promise(r => setTimeout(r, 25)); return f(); };
        s.sheets.capacity = 1;
        s.sheet(128, 0);
        const first = await until(() => s.sheet(128, 0));
        s.sheet(256, 0);                       // evicts level 128's sheet
        await until(() => s.sheet(256, 0));
        const evicted = !s.sheets.has('128/0');
        s.sheet(128, 0);
        const again = await until(() => s.sheet(128, 0));
        return [Boolean(first), evicted, Boolean(again), s.failed.size];
    }""")
    assert loaded == [True, True, True, 0]


def test_viewer_source_has_no_html_sinks_and_no_remote_urls():
    """Data reaches the page only as text: no HTML-parsing sinks, no eval, nothing loaded from elsewhere."""
    import re

    web = Path(__file__).resolve().parent.parent / "web"
    sources = {p.relative_to(web).as_posix(): p.read_text(encoding="utf-8")
               for p in web.rglob("*") if p.suffix in (".js", ".html", ".css")}
    assert "index.html" in sources and "js/main.js" in sources
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|srcdoc")
    remote = re.compile(r"""(src|href)\s*=\s*["'](https?:)?//|@import|url\(\s*["']?(https?:)?//""")
    assert {name: sinks.findall(text) for name, text in sources.items() if sinks.search(text)} == {}
    assert {name: remote.findall(text) for name, text in sources.items() if remote.search(text)} == {}


@pytest.mark.parametrize("override, message", [
    ({"version": 2}, "manifest.json has version 2; this viewer reads version 1"),
    ({"levels": []}, "manifest.json lists no grid levels"),
    ({"row_tiles": {"n": 3, "pattern": "rows/{tx}_{ty}.json"}},
     "manifest.json: row_tiles needs a pattern and an n that divides every grid level"),
])
def test_unreadable_manifest_is_one_line_in_the_page(tmp_path, browser, web_server, override, message):  # noqa: F811
    make_export(tmp_path, rows=30, manifest_overrides=override)
    p = Page(browser, web_server(tmp_path))
    try:
        p.page.goto(p.server.url + "index.html")
        p.wait("state.error !== null")
        assert p.page.locator("#error").text_content() == f"Cannot show this export: {message}."
        p.assert_clean()
    finally:
        p.context.close()


def test_opened_as_a_file_the_page_says_to_serve_the_folder(export, browser):
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto((export.folder / "index.html").as_uri())
        page.wait_for_timeout(500)
        boot = page.locator("#boot")
        assert boot.is_visible()
        assert "python -m http.server 8000" in boot.text_content()
    finally:
        context.close()


def test_served_the_loading_note_is_gone(page):
    page.open()
    assert page.page.locator("#boot").count() == 0
    page.assert_clean()


def test_a_missing_file_is_named_and_the_rest_of_the_map_still_works(tmp_path, browser, web_server):  # noqa: F811
    make_export(tmp_path, rows=300, spread=0.03)
    (tmp_path / "grid_128.json").unlink()
    p = Page(browser, web_server(tmp_path))
    try:
        p.open()
        assert p.state()["level"] == 16
        for _ in range(20):
            p.zoom_at(0.5, 0.5, 1)
            if p.state()["wantedLevel"] == 128:
                break
        p.page.wait_for_function("() => document.getElementById('notice').textContent.includes('grid_128')")
        assert p.page.locator("#notice").text_content() == "Could not load grid_128.json: HTTP 404"
        assert p.state()["drawnLevels"] == [64]  # level 64 goes on showing in its place
        (tmp_path / "grid_16.json").unlink()
        p.page.reload()
        p.wait("state.error !== null")
        assert p.page.locator("#error").text_content() == "Cannot show this export: grid_16.json: HTTP 404."
        assert p.page_errors == []
    finally:
        p.context.close()


def test_plus_minus_and_zero_keys_zoom_and_reset(page):
    page.open()
    fit = page.state()["scale"]
    for key, expected in (("+", fit * 1.5), ("+", fit * 2.25), ("-", fit * 1.5), ("0", fit)):
        frames = page.state()["frames"]
        page.page.keyboard.press(key)
        # the new scale, drawn: waiting for a frame alone raced a frame already on its way (a busy machine)
        page.wait(f"state.frames > {frames} && Math.abs(state.scale - {expected!r}) <= 1e-6 * {expected!r}")
        assert page.state()["scale"] == pytest.approx(expected, rel=1e-6)
    page.assert_clean()


# ------------------------------------------------------------------------------------------------ legibility
# A 20,000-row export whose thumbnails are crops of real photographs, its clusters in the middle of
# the map (so a first view of the whole square would leave them small), measured on screenshots.
LEGIBLE_VIEWPORT = {"width": 1200, "height": 820}
MIN_SIDE_PX = 32


@pytest.fixture(scope="module")
def photo_export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("photos"), rows=20_000, clusters=5, spread=0.035,
                       centres_in=(0.35, 0.65), photos=400, seed=3)


@pytest.fixture(scope="module")
def photo_server(photo_export, web_server):  # noqa: F811
    return web_server(photo_export.folder)


@pytest.fixture
def photo_page(browser, photo_server):
    photo_server.clear()
    p = Page(browser, photo_server)
    p.context.close()
    p.context = browser.new_context(viewport=LEGIBLE_VIEWPORT)
    p.page = p.context.new_page()
    p.page.on("console", lambda m: m.type == "error" and p.console_errors.append(m.text))
    p.page.on("pageerror", lambda e: p.page_errors.append(str(e)))
    p.page.on("request", lambda r: p.requests.append(r.url))
    yield p
    p.context.close()


COMPLETE = "state.drawnLevels.length === 1 && state.wantedLevel === state.level && state.level !== null"


def canvas_pixels(page) -> np.ndarray:
    """What the map canvas holds (not the page's overlays: help line, tooltip)."""
    import base64

    from PIL import Image

    url = page.page.evaluate("document.getElementById('map').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def drawn(page) -> tuple[list[dict], list[list[float]]]:
    return page.page.evaluate("[window.__viewer.renderer.drawnRects(), window.__viewer.renderer.labelBoxes]")


def mask_of(shape, boxes) -> np.ndarray:
    """Pixels covered by boxes [x0, y0, x1, y1] (CSS px; device pixel ratio 1)."""
    m = np.zeros(shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        m[max(0, int(np.floor(y0))):max(0, int(np.ceil(y1))), max(0, int(np.floor(x0))):max(0, int(np.ceil(x1)))] = True
    return m


def picture_share(pixels, rects, labels) -> float:
    """Share of the drawn (non-background) pixels that lie on an image rather than around one.
    Cluster labels are text over the map, neither picture nor frame."""
    ink = np.abs(pixels - np.array(BACKGROUND)).max(axis=2) > 6
    pictures = mask_of(pixels.shape, [(r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]) for r in rects])
    frame = ink & ~pictures & ~mask_of(pixels.shape, labels)
    return pictures.sum() / max(1, pictures.sum() + frame.sum())


def rep_rows(export) -> dict:
    row_of = {rid: r for r, rid in enumerate(export.ids)}
    return {L: [row_of[c[3]] for c in cells] for L, cells in export.grids.items()}


def images_match(export, pixels, rects, reps) -> float:
    """Share of the larger sprite rects whose middle shows their cell's representative: the mean colour
    of the middle half of the rect on screen against the same part of the photo's sprite tile."""
    checked = matched = 0
    for r in rects:
        if r["kind"] != "sprite" or r["w"] < 24:
            continue
        x0, y0, w = int(round(r["x"])), int(round(r["y"])), int(r["w"])
        if x0 < 0 or y0 < 0 or x0 + w > pixels.shape[1] or y0 + w > pixels.shape[0]:
            continue
        shown = pixels[y0 + w // 4:y0 + 3 * w // 4, x0 + w // 4:x0 + 3 * w // 4].reshape(-1, 3).mean(axis=0)
        tile = export.photo_tiles[export.photo[reps[int(r["level"])][int(r["cell"])]]]
        t = tile.shape[0]
        expected = tile[t // 4:3 * t // 4, t // 4:3 * t // 4].reshape(-1, 3).mean(axis=0)
        checked += 1
        matched += np.abs(shown - expected).max() < 24
    assert checked >= 5, f"only {checked} images large enough to check"
    return matched / checked


def wait_complete(page):
    page.wait(COMPLETE, timeout=20_000)
    page.page.evaluate("new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)))")


def test_representatives_are_large_framed_by_nothing_and_show_their_photos_at_every_zoom_step(photo_page, photo_export):
    page = photo_page.open()
    wait_complete(page)
    reps = rep_rows(photo_export)
    cell = densest_cell(photo_export, 256)
    target = ((cell["i"] + 0.5) / 256, (cell["j"] + 0.5) / 256)
    levels, medians = [], []
    for step in range(7):
        if step:
            page.zoom_at(*target, 1)
            page.page.mouse.move(0, 0)   # no hover outline in the picture
            wait_complete(page)
        rects, labels = drawn(page)
        pixels = canvas_pixels(page)
        s = page.state()
        levels.append(s["level"])
        sides = [max(r["w"], r["h"]) for r in rects]
        medians.append(float(np.median(sides)))
        assert medians[-1] >= MIN_SIDE_PX, f"step {step}, level {s['level']}: median image {medians[-1]:.1f} px"
        share = picture_share(pixels, rects, labels)
        assert share >= 0.9, f"step {step}: only {share:.0%} of the drawn pixels are pictures"
        assert images_match(photo_export, pixels, rects, reps) >= 0.9, f"step {step}: images not where they are said to be"
    assert len(set(levels)) >= 3, levels   # the tour went through several levels, not one blown-up level
    photo_page.assert_clean()


def test_image_area_grows_with_the_cell_count_and_the_densest_cell_is_full(photo_page, photo_export):
    page = photo_page.open()
    wait_complete(page)
    s = page.state()
    level, cell_px = s["level"], s["scale"] / s["level"]
    counts = [c[2] for c in photo_export.grids[level]]
    rects = [r for r in drawn(page)[0] if r["level"] == level]
    assert len(rects) == len(counts)  # the whole occupied extent is on screen
    by_count = sorted(rects, key=lambda r: (counts[int(r["cell"])], r["w"]))
    assert all(a["w"] <= b["w"] + 1e-9 for a, b in zip(by_count, by_count[1:]))
    densest = by_count[-1]
    assert densest["w"] >= cell_px - 1.01
    top = counts[int(densest["cell"])]
    sparse = [r for r in rects if counts[int(r["cell"])] <= top / 16]
    assert sparse and all(r["w"] <= 0.6 * cell_px for r in sparse), "sparse cells are drawn as large as dense ones"
    # The density colours are a toggle: under the images, with a legend of the level's counts.
    page.page.click("#heat")
    page.wait("state.heat === true")
    assert page.page.locator("#legend").is_visible()
    assert page.page.locator("#legend-text").text_content() == f"1 to {top:,} images per cell"
    r = sparse[0]
    corner = canvas_pixels(page)[int(r["y"] - (cell_px - r["w"]) / 2) + 1, int(r["x"] - (cell_px - r["w"]) / 2) + 1]
    assert not close(corner, BACKGROUND, tol=6)
    photo_page.assert_clean()


def occupied_box(pixels, labels) -> tuple[int, int, int, int]:
    ink = (np.abs(pixels - np.array(BACKGROUND)).max(axis=2) > 6) & ~mask_of(pixels.shape, labels)
    ys, xs = np.nonzero(ink)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_first_view_fits_the_occupied_extent_and_reset_view_returns_to_it(photo_page):
    page = photo_page.open()
    wait_complete(page)
    pixels = canvas_pixels(page)
    x0, y0, x1, y1 = occupied_box(pixels, drawn(page)[1])
    h, w = pixels.shape[:2]
    assert max(x1 - x0, y1 - y0) >= 0.6 * min(w, h), ((x0, y0, x1, y1), (w, h))
    assert x0 > 0 and y0 > 0 and x1 < w and y1 < h      # with a margin: nothing cut off
    first = page.page.evaluate("[window.__viewer.camera.scale, window.__viewer.camera.ox, window.__viewer.camera.oy]")
    page.zoom_at(0.3, 0.3, 3)
    page.page.mouse.move(600, 400)
    page.page.mouse.down()
    page.page.mouse.move(500, 300, steps=3)
    page.page.mouse.up()
    page.page.click("#reset")
    page.wait(f"state.scale === {first[0]}")
    assert page.page.evaluate("[window.__viewer.camera.scale, window.__viewer.camera.ox, window.__viewer.camera.oy]") == first
    photo_page.assert_clean()


def test_hover_and_click_name_the_cell_under_the_cursor_at_the_new_sizes(photo_page, photo_export):
    page = photo_page.open()
    wait_complete(page)
    cell = densest_cell(photo_export, 256)
    page.zoom_at((cell["i"] + 0.5) / 256, (cell["j"] + 0.5) / 256, 3)
    wait_complete(page)
    s = page.state()
    level, cell_px = s["level"], s["scale"] / s["level"]
    box = page.page.locator("#map").bounding_box()
    rects = [r for r in drawn(page)[0] if r["level"] == level and 40 < r["x"] < box["width"] - 460
             and 40 < r["y"] < box["height"] - 160]
    small = sorted(rects, key=lambda r: r["w"])[:2]
    large = sorted(rects, key=lambda r: -r["w"])[:2]
    assert small and large and small[0]["w"] < large[0]["w"]
    tip = page.page.locator("#tooltip")
    for r in small + large:
        c = dict(zip(("i", "j", "count", "id", "caption"), photo_export.grids[level][int(r["cell"])][:5]))
        # inside the image near a corner, and in the cell's margin outside a small image: the same cell
        spots = [(r["x"] + 2, r["y"] + 2), (r["x"] + r["w"] - 2, r["y"] + r["h"] - 2)]
        if r["w"] < cell_px - 6:
            spots.append((r["x"] - (cell_px - r["w"]) / 2 + 2, r["y"] - (cell_px - r["h"]) / 2 + 2))
        for x, y in spots:
            page.page.mouse.move(box["x"] + x, box["y"] + y)
            tip.wait_for(state="visible")
            assert tip.locator(".caption").text_content() == c["caption"], (level, c["i"], c["j"], x, y)
            assert page.page.evaluate("window.__viewer.hover") == {"level": level, "i": c["i"], "j": c["j"]}
        page.page.mouse.click(box["x"] + r["x"] + r["w"] / 2, box["y"] + r["y"] + r["h"] / 2)
        page.page.wait_for_function(f"() => document.getElementById('gallery-title').textContent === "
                                    f"'{c['count']:,} image{'' if c['count'] == 1 else 's'} in this cell'")
        members = photo_export.members(level, c["i"], c["j"])
        page.page.locator("#gallery figure").first.wait_for()
        assert page.page.locator("#gallery figure").count() == min(len(members), 120)
        page.page.keyboard.press("Escape")
    photo_page.assert_clean()
