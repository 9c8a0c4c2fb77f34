"""Step 07 on a generated projection: grids, representatives, row tiles, sprites, manifest, re-runs, errors."""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from common.paths import DataTree
from tests.conftest import load_step
from tests.test_07_helpers import make_inputs

step = load_step("07_export_for_web")
FAST = ["--poster-size", "600", "--no-download-missing"]


def run(tree: DataTree, *extra: str) -> int:
    return step.main(["--data-dir", str(tree.root), *FAST, *extra])


def grid(tree: DataTree, level: int) -> list[dict]:
    doc = json.loads(tree.grid_file(level).read_text(encoding="utf-8"))
    assert doc["level"] == level
    return [dict(zip(doc["columns"], cell)) for cell in doc["cells"]]


def cell_of(x: float, sy: float, level: int) -> tuple[int, int]:
    return min(int(np.floor(x * level)), level - 1), min(int(np.floor(sy * level)), level - 1)


def export_once(folder):
    tree = DataTree.at(folder / "data")
    gen = make_inputs(tree, n=300, seed=1)
    assert run(tree) == 0
    return tree, gen


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export shared by the tests that only read it."""
    return export_once(tmp_path_factory.mktemp("export"))


@pytest.fixture
def fresh(tmp_path):
    """An export of its own, for tests that re-run the step."""
    return export_once(tmp_path)


def test_cell_counts_add_up_to_the_rows_at_every_level(exported):
    tree, gen = exported
    manifest = json.loads(tree.manifest_file.read_text())
    assert manifest["rows"] == len(gen.ids)
    for level in (64, 128, 256):
        cells = grid(tree, level)
        assert sum(c["count"] for c in cells) == len(gen.ids)
        assert len({(c["i"], c["j"]) for c in cells}) == len(cells)


def test_cell_counts_match_the_contract_cell_formula_with_flipped_y(exported):
    tree, gen = exported
    expected = defaultdict(int)
    for x, y in zip(gen.x, gen.y):
        expected[cell_of(round(x, 6), round(1 - y, 6), 128)] += 1
    assert {(c["i"], c["j"]): c["count"] for c in grid(tree, 128)} == dict(expected)


def test_representatives_are_members_of_their_cell(exported):
    tree, gen = exported
    where = {i: k for k, i in enumerate(gen.ids.tolist())}
    for level in (64, 128, 256):
        for c in grid(tree, level):
            k = where[c["id"]]
            assert cell_of(gen.x[k], 1 - gen.y[k], level) == (c["i"], c["j"])


def test_coarse_representatives_come_from_their_children(exported):
    tree, _ = exported
    for coarse, fine in ((64, 128), (128, 256)):
        children = defaultdict(set)
        for c in grid(tree, fine):
            children[(c["i"] // 2, c["j"] // 2)].add(c["id"])
        for c in grid(tree, coarse):
            assert c["id"] in children[(c["i"], c["j"])]


def closest_to_mean(candidates, members, gen) -> int | None:
    """The candidate nearest the members' mean vector; None when the two nearest tie (two members
    are always equidistant from their mean, and then the position decides)."""
    with_vec = [k for k in members if gen.with_vector[k]]
    mean = gen.vectors[with_vec].mean(axis=0)
    dist = sorted((float(np.sum((gen.vectors[k] - mean) ** 2)), k) for k in candidates)
    return dist[0][1] if dist[1][0] - dist[0][0] > 1e-4 else None


def test_representatives_are_closest_to_the_mean_embedding_among_thumbnailed_candidates(tmp_path):
    """Brute force, cell by cell: finest level among the members, coarser levels among the children's."""
    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=300, seed=6, tags=False)
    assert run(tree, "--levels", "16", "32", "--poster-size", "0", "--no-gephi") == 0
    members = {level: defaultdict(list) for level in (16, 32)}
    for level in (16, 32):
        for k in range(len(gen.ids)):
            members[level][cell_of(gen.x[k], 1 - gen.y[k], level)].append(k)
    where = {i: k for k, i in enumerate(gen.ids.tolist())}
    checked = defaultdict(int)
    fine_rep = {(c["i"], c["j"]): where[c["id"]] for c in grid(tree, 32)}
    for level in (32, 16):
        for c in grid(tree, level):
            rows = members[level][(c["i"], c["j"])]
            if level == 32:
                candidates = [k for k in rows if gen.with_vector[k] and gen.with_thumb[k]]
            else:
                candidates = [fine_rep[(2 * c["i"] + a, 2 * c["j"] + b)] for a in (0, 1) for b in (0, 1)
                              if (2 * c["i"] + a, 2 * c["j"] + b) in fine_rep]
                candidates = [k for k in candidates if gen.with_vector[k] and gen.with_thumb[k]]
            best = closest_to_mean(candidates, rows, gen) if len(candidates) >= 2 else None
            if best is None:
                continue
            assert c["id"] == gen.ids[best]
            checked[level] += 1
    assert checked[32] >= 10 and checked[16] >= 10  # enough cells where the choice mattered


def test_cells_with_a_thumbnail_have_a_sprite_and_the_sprite_shows_it(exported):
    tree, gen = exported
    manifest = json.loads(tree.manifest_file.read_text())
    meta = manifest["sprites"]["64"]
    tile, columns = meta["tile"], meta["columns"]
    has_thumb = dict(zip(gen.ids.tolist(), gen.with_thumb.tolist()))
    cells = grid(tree, 64)
    assert sorted(c["sprite"] for c in cells if c["sprite"] >= 0) == list(range(sum(has_thumb[c["id"]] for c in cells)))
    for c in cells:
        assert (c["sprite"] >= 0) == has_thumb[c["id"]]
        if c["sprite"] < 0:
            continue
        sheet, p = divmod(c["sprite"], columns * columns)
        with Image.open(tree.export / meta["sheets"][sheet]) as im:
            box = ((p % columns) * tile, (p // columns) * tile)
            centre = np.asarray(im.convert("RGB").crop((box[0] + tile // 4, box[1] + tile // 2 - 2,
                                                         box[0] + 3 * tile // 4, box[1] + tile // 2 + 2)))
        with Image.open(tree.thumbnail(c["id"])) as th:
            colour = np.asarray(th.convert("RGB")).reshape(-1, 3).mean(axis=0)
        assert np.abs(centre.reshape(-1, 3).mean(axis=0) - colour).max() < 25


def test_row_tiles_hold_every_row_once_in_screen_coordinates(exported):
    tree, gen = exported
    seen = {}
    for path in sorted((tree.export / "rows").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        tx, ty = map(int, path.stem.split("_"))
        for row in doc["rows"]:
            r = dict(zip(doc["columns"], row))
            assert cell_of(r["x"], r["y"], 16) == (tx, ty)
            seen[r["id"]] = r
    assert len(seen) == len(gen.ids)
    k = 5
    r = seen[gen.ids[k]]
    assert r["x"] == pytest.approx(gen.x[k], abs=1e-6) and r["y"] == pytest.approx(1 - gen.y[k], abs=1e-6)
    assert r["caption"].endswith("<b>&amp;</b>") and r["domain"].startswith("example.")


def test_manifest_is_written_last_and_lists_files_that_exist(exported):
    tree, _ = exported
    manifest = json.loads(tree.manifest_file.read_text())
    assert manifest["version"] == 1 and manifest["levels"] == [16, 32, 64, 128, 256]
    assert manifest["grids"] == {str(L): f"grid_{L}.json" for L in (16, 32, 64, 128, 256)}
    # 64 px tiles on sheets of 1024 px: the viewer draws a level's images at up to twice the tile
    assert {k: (v["tile"], v["columns"]) for k, v in manifest["sprites"].items()} == {
        str(L): (64, 16) for L in (16, 32, 64, 128, 256)}
    for name in manifest["sprites"]["256"]["sheets"]:
        with Image.open(tree.export / name) as im:
            assert im.width == 1024 and im.height <= 1024 and im.height % 64 == 0
    newest = max(os.stat(tree.export / f).st_mtime_ns for f in manifest["files"])
    assert os.stat(tree.manifest_file).st_mtime_ns >= newest
    for name in manifest["files"]:
        assert (tree.export / name).is_file(), name
    assert {c["label"] for c in manifest["clusters"]} >= {"plaza mayor", "old town"}
    assert all(0 <= c["x"] <= 1 and 0 <= c["y"] <= 1 for c in manifest["clusters"])


def test_manifest_extent_is_the_box_the_rows_occupy(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=2, seed=4)   # two rows: none placed on the map's edges
    assert run(tree, "--levels", "16", "--no-gephi") == 0
    extent = json.loads(tree.manifest_file.read_text())["extent"]
    sy = 1 - gen.y
    assert extent == pytest.approx([gen.x.min(), sy.min(), gen.x.max(), sy.max()], abs=2e-6)
    assert 0 < extent[2] - extent[0] < 1


def test_sprite_tile_is_the_middle_square_of_the_image_not_a_letterbox(tmp_path):
    from common.export.sprites import load_tile

    # 256 x 128: red, green in the middle 128 px, blue; a letterbox would keep red and blue and add bars
    im = np.zeros((128, 256, 3), np.uint8)
    im[:, :64], im[:, 64:192], im[:, 192:] = (220, 30, 30), (30, 200, 40), (30, 40, 220)
    Image.fromarray(im).save(tmp_path / "wide.jpg", quality=95)
    tile = np.asarray(load_tile(tmp_path / "wide.jpg", 64)).astype(int)
    assert tile.shape == (64, 64, 3)
    inner = tile[2:-2, 2:-2].reshape(-1, 3)   # JPEG blurs the colour edges a little
    assert np.abs(inner - (30, 200, 40)).max(axis=1).max() < 40
    assert load_tile(tmp_path / "missing.jpg", 64) is None


def test_thumbnails_are_hard_links_to_the_cache(exported):
    tree, gen = exported
    k = int(np.flatnonzero(gen.with_thumb)[0])
    assert os.path.samefile(tree.thumbnail(gen.ids[k]), tree.export_thumbnail(gen.ids[k]))
    assert not tree.export_thumbnail(gen.ids[int(np.flatnonzero(~gen.with_thumb)[0])]).exists()


def test_rerun_with_unchanged_inputs_does_nothing_and_says_so(fresh, capsys):
    tree, _ = fresh
    before = tree.manifest_file.stat().st_mtime_ns
    capsys.readouterr()
    assert run(tree) == 0
    assert "up to date" in capsys.readouterr().out
    assert tree.manifest_file.stat().st_mtime_ns == before


def test_overwrite_redoes_the_export(fresh, capsys):
    tree, _ = fresh
    before = tree.manifest_file.stat().st_mtime_ns
    capsys.readouterr()
    assert run(tree, "--overwrite") == 0
    assert "up to date" not in capsys.readouterr().out
    assert tree.manifest_file.stat().st_mtime_ns > before


def test_changed_flags_reexport_and_keep_finished_thumbnails(fresh, capsys):
    tree, _ = fresh
    capsys.readouterr()
    assert run(tree, "--levels", "32", "64") == 0
    out = capsys.readouterr().out
    assert "already there" in out
    manifest = json.loads(tree.manifest_file.read_text())
    assert manifest["levels"] == [32, 64] and "grid_256.json" not in manifest["files"]
    assert not any(name.startswith("sprites/256-") for name in manifest["files"])
    assert not list(tree.sprites_dir.glob("256-*.jpg"))  # stale sheets of the old levels are gone


def test_export_without_embeddings_chooses_by_position(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=120, seed=2, tags=False)
    for path in tree.embeddings.iterdir():
        path.unlink()
    assert run(tree, "--poster-size", "0", "--no-gephi") == 0
    manifest = json.loads(tree.manifest_file.read_text())
    assert manifest["parameters"]["representative"].startswith("position")
    assert sum(c["count"] for c in grid(tree, 64)) == len(gen.ids)
    assert not tree.poster_file.exists() and not tree.gexf_file.exists()


def test_rows_without_position_or_with_duplicate_ids_are_counted_not_exported(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=50, seed=3, tags=False)
    table = pq.read_table(tree.projection_file)
    x = table.column("x").to_numpy().copy()
    x[3] = np.nan
    table = table.set_column(table.column_names.index("x"), "x", pa.array(x))
    pq.write_table(pa.concat_tables([table, table.slice(0, 2)]), tree.projection_file)
    assert run(tree, "--poster-size", "0") == 0
    stats = json.loads((tree.export / "_stats.json").read_text())
    assert stats["dropped"] == {"duplicate_id": 2, "no_position": 1}
    assert stats["rows_in"] == 52 and stats["rows_out"] == 49
    assert json.loads(tree.manifest_file.read_text())["rows"] == 49


def test_viewer_is_copied_into_the_export_without_its_tests(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=40, seed=4, tags=False)
    web = tmp_path / "web"
    (web / "js").mkdir(parents=True)
    (web / "tests").mkdir()
    (web / "index.html").write_text("<!doctype html><title>map</title>")
    (web / "js" / "app.js").write_text("export const x = 1;")
    (web / "tests" / "test_viewer.py").write_text("")
    (web / "js" / "app.test.js").write_text("")
    assert run(tree, "--web-dir", str(web), "--poster-size", "0") == 0
    assert (tree.export / "index.html").read_text().startswith("<!doctype html>")
    assert (tree.export / "js" / "app.js").is_file()
    assert not (tree.export / "tests").exists() and not (tree.export / "js" / "app.test.js").exists()
    assert {"index.html", "js/app.js"} <= set(json.loads(tree.manifest_file.read_text())["files"])


def test_missing_projection_is_one_line_error(tmp_path, capsys):
    assert step.main(["--data-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no projection at ") and "run 06_reduce_dimensionality.py first" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--levels", "64", "100"], "--levels 100: use powers of two from 16 to 4096"),
    (["--levels", "8"], "--levels 8: use powers of two"),
    (["--poster-size", "99999"], "--poster-size 99999: use 500 to 16000 px"),
    (["--sprite-tile", "1"], "--sprite-tile 1: use 4 to 256 px"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    assert step.main(["--data-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_embeddings_that_disagree_with_their_index_are_a_clear_error(tmp_path, capsys):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=60, seed=5, tags=False)
    np.save(tree.embeddings_file(0), np.zeros((3, 16), np.float16))
    assert run(tree) == 2
    err = capsys.readouterr().err
    assert "embeddings-00000.npy holds 3 vectors but index-00000.parquet lists" in err


def test_every_flag_has_help():
    for action in step.build_parser()._actions:
        assert action.help, action.dest


def test_categories_come_from_step_04_table_then_the_shipped_map(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    urls = ["https://image.shutterstock.com/a.jpg", "https://img.news.example.co.uk/b.jpg",
            "https://blog.example.org/c.jpg", "http://10.1.2.3/d.jpg"]
    make_inputs(tree, n=4, seed=13, tags=False, urls=urls)
    tree.analysis.mkdir(parents=True)
    tree.analysis_csv("top_domains").write_text("domain,count,share,cumulative_share,category\n"
                                                "example.co.uk,1,0.25,0.25,news\n", encoding="utf-8")
    assert run(tree, "--poster-size", "0", "--levels", "16") == 0
    rows = {}
    for path in (tree.export / "rows").glob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows.update({r[4]: dict(zip(doc["columns"], r)) for r in doc["rows"]})
    assert [(rows[u]["domain"], rows[u]["category"]) for u in urls] == [
        ("shutterstock.com", "stock photo"), ("example.co.uk", "news"), ("example.org", "other"), ("10.1.2.3", "other")]
    assert json.loads(tree.manifest_file.read_text())["categories"] == ["news", "other", "stock photo"]


def test_thumbnails_are_copied_when_hard_links_are_not_possible(tmp_path, monkeypatch, capsys):
    import errno

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "cross-device link")

    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=20, seed=14, tags=False)
    monkeypatch.setattr(os, "link", no_links)
    assert run(tree, "--poster-size", "0", "--levels", "16") == 0
    assert f"{int(gen.with_thumb.sum()):,} copied" in capsys.readouterr().out
    k = int(np.flatnonzero(gen.with_thumb)[0])
    exported = tree.export_thumbnail(gen.ids[k])
    assert exported.read_bytes() == tree.thumbnail(gen.ids[k]).read_bytes()
    assert not os.path.samefile(exported, tree.thumbnail(gen.ids[k]))


def test_cached_thumbnails_larger_than_256_px_are_shrunk(tmp_path, capsys):
    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=10, seed=15, tags=False, thumb_fraction=1.0)
    for row_id in gen.ids.tolist():
        Image.new("RGB", (400, 300), (200, 30, 30)).save(tree.thumbnail(row_id), "JPEG")
    assert run(tree, "--poster-size", "0", "--levels", "16") == 0
    assert "10 shrunk" in capsys.readouterr().out
    with Image.open(tree.export_thumbnail(gen.ids[0])) as im:
        assert im.size == (256, 192)


def test_positions_outside_0_to_1_are_rescaled_with_a_note(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tree = DataTree.at(tmp_path / "data")
    gen = make_inputs(tree, n=80, seed=16, tags=False)
    table = pq.read_table(tree.projection_file)
    for name in ("x", "y"):
        table = table.set_column(table.column_names.index(name), name, pa.array(table.column(name).to_numpy() * 40 - 7))
    pq.write_table(table, tree.projection_file)
    assert run(tree, "--poster-size", "0", "--levels", "16") == 0
    assert "note: positions were outside 0..1" in capsys.readouterr().out
    assert sum(c["count"] for c in grid(tree, 16)) == len(gen.ids)
    rows = [r for p in (tree.export / "rows").glob("*.json") for r in json.loads(p.read_text())["rows"]]
    assert min(r[1] for r in rows) == 0.0 and max(r[1] for r in rows) <= 1.0


def test_a_projection_without_positions_is_one_line_error(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tree = DataTree.at(tmp_path / "data")
    tree.projection.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["0123456789abcdef"], "url": ["https://a.example/x.jpg"]}), tree.projection_file)
    assert run(tree) == 2
    err = capsys.readouterr().err
    assert "has no x or y column: re-run step 06" in err and len(err.strip().splitlines()) == 1
