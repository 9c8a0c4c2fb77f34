"""The poster's cluster labels never overlap each other or the title, avoid the images where there
is room, and the poster is cropped to the data's extent."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from common import grid
from common.export import poster
from common.paths import DataTree, stats_file
from common.export.poster_labels import Box, place_labels
from tests.conftest import load_step
from tests.test_07_helpers import make_inputs

step = load_step("07_export_for_web")


def assert_apart(boxes: list[Box], gap: float = 0) -> None:
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b, gap), f"labels overlap: {a} and {b}"


def test_labels_that_all_want_the_same_spot_each_get_their_own():
    wanted = [(f"cluster {k}: words, more words", (500.0, 400.0), 220.0, 24.0) for k in range(30)]
    placed = place_labels(wanted, 1000, 800, images=[])
    assert len(placed) == 30
    assert_apart([p.box for p in placed], gap=1)
    assert all(0 <= p.box.x0 and p.box.x1 <= 1000 and 0 <= p.box.y0 and p.box.y1 <= 800 for p in placed)
    assert not placed[0].leader and all(p.leader for p in placed[1:])  # the first sits on its spot


def test_a_label_moves_off_the_images_and_a_leader_line_points_back():
    images = [Box(400, 300, 600, 500)]
    placed = place_labels([("harbour: boats", (500.0, 400.0), 120.0, 20.0)], 1000, 800, images)
    box = placed[0].box
    assert not box.overlaps(images[0]) and placed[0].leader
    assert abs((box.x0 + box.x1) / 2 - 500) < 300 and abs((box.y0 + box.y1) / 2 - 400) < 300  # still close by


def test_labels_near_the_edge_stay_inside_and_never_cover_the_title():
    title = Box(0, 0, 400, 40)
    wanted = [("a long cluster label: words, words", (0.0, 20.0), 300.0, 22.0),
              ("another long label at the right edge", (1000.0, 790.0), 320.0, 22.0)]
    placed = place_labels(wanted, 1000, 800, images=[], keep_clear=[title])
    assert len(placed) == 2
    for p in placed:
        assert 0 <= p.box.x0 and p.box.x1 <= 1000 and 0 <= p.box.y0 and p.box.y1 <= 800
        assert not p.box.overlaps(title)


def test_a_label_with_no_free_spot_is_left_out_rather_than_drawn_over_another():
    wanted = [("wide", (50.0, 10.0), 100.0, 20.0), ("also wide", (50.0, 10.0), 100.0, 20.0)]
    assert [p.text for p in place_labels(wanted, 100, 20, images=[])] == ["wide"]


@pytest.fixture
def drawn(tmp_path, monkeypatch):
    """Step 07's poster of a synthetic map with many clusters, and what draw_poster returned."""
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=600, seed=3, tags=False)
    results = []
    real = poster.draw_poster
    monkeypatch.setattr(poster, "draw_poster", lambda *a, **kw: results.append(real(*a, **kw)) or results[-1])
    assert step.main(["--data-dir", str(tree.root), "--no-download-missing", "--no-gephi",
                      "--poster-size", "1200"]) == 0
    return tree, results[0]


def test_the_posters_labels_overlap_neither_each_other_nor_the_images_they_could_avoid(drawn):
    tree, result = drawn
    boxes = [Box(*label["box"]) for label in result["labels"]]
    clusters = json.loads(tree.manifest_file.read_text())["clusters"]
    assert len(boxes) == len([c for c in clusters if c["label"]]) >= 3
    assert_apart(boxes, gap=1)
    with Image.open(tree.poster_file) as im:
        ink = np.asarray(im.convert("RGB"))
    for b in boxes:  # each label's box is drawn white behind its text, inside the poster
        assert 0 <= b.x0 and b.x1 <= ink.shape[1] and 0 <= b.y0 and b.y1 <= ink.shape[0]
        assert (ink[int(b.y0) + 1, int(b.x0) + 1] == 255).all()


def test_the_poster_is_cropped_to_the_datas_extent(tmp_path):
    """Rows spread over x 0..1 but y 0.30..0.70 only: the poster is wide, not square."""
    rng = np.random.default_rng(0)
    n = 400
    x, sy = rng.uniform(0, 1, n), rng.uniform(0.30, 0.70, n)
    has_thumb = np.ones(n, bool)
    levels = grid.build_levels(x, sy, has_thumb, np.zeros(n, np.int64), None, [16, 32, 64])
    thumb = tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(thumb)
    out = tmp_path / "map.png"
    result = poster.draw_poster(out, 1000, levels, has_thumb, np.array([f"r{i}" for i in range(n)], object),
                                lambda _id: thumb, [{"label": "red", "x": 0.5, "y": 0.5, "count": n}], "t")
    with Image.open(out) as im:
        width, height = im.size
        ink = np.asarray(im.convert("L")) < 250
    assert width == 1000 and list(result["size"]) == [width, height]
    assert 0.4 * width < height < 0.6 * width  # 0.4 of the map's height, plus margins and the title
    rows = np.flatnonzero(ink.any(axis=1))
    assert rows.max() > 0.9 * height  # the data reaches the bottom margin: nothing empty was kept


def test_random_weights_put_a_note_in_the_manifest_and_on_the_poster(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=200, seed=5, tags=False)
    note = "CLIP ran with random weights (--pretrained none): cluster names come from caption words alone"
    stats_file(tree.projection).write_text(json.dumps({"labels": {"from": "caption words", "note": note}}))
    args = ["--data-dir", str(tree.root), "--no-download-missing", "--no-gephi", "--poster-size", "800"]
    assert step.main(args) == 0
    manifest = json.loads(tree.manifest_file.read_text())
    assert manifest["labels"] == {"from": "caption words", "note": note}
    with Image.open(tree.poster_file) as im:
        orange = (np.abs(np.asarray(im.convert("RGB")).astype(int) - (170, 60, 0)).sum(axis=2) < 60)
    assert orange[: im.height // 8].sum() > 50  # the note is written under the title
    assert pq.read_table(tree.projection_file).num_rows == 200


def test_without_a_note_the_manifest_says_where_names_come_from_and_the_poster_has_no_note(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=200, seed=5, tags=False)
    stats_file(tree.projection).write_text(json.dumps({"labels": {"from": "concepts and caption words",
                                                                  "note": None}}))
    assert step.main(["--data-dir", str(tree.root), "--no-download-missing", "--no-gephi",
                      "--poster-size", "800"]) == 0
    assert json.loads(tree.manifest_file.read_text())["labels"] == {"from": "concepts and caption words",
                                                                    "note": None}
    with Image.open(tree.poster_file) as im:
        orange = (np.abs(np.asarray(im.convert("RGB")).astype(int) - (170, 60, 0)).sum(axis=2) < 60)
    assert orange.sum() == 0


def test_poster_image_area_grows_with_the_cells_count_as_on_miro_and_in_the_viewer():
    from common.export.poster import MIN_FRACTION, image_sides

    sides = image_sides(np.array([400, 100, 25, 1]), 200.0)
    assert sides[0] == 200  # the densest cell fills its cell
    assert sides[1] == 100 and sides[2] == 50  # a quarter of the count, a quarter of the area
    assert sides[3] == round(200 * MIN_FRACTION)  # a lone image keeps a visible floor
