"""Step 07's Gephi files, poster and thumbnail downloads."""
from __future__ import annotations

import csv
import json
import re

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common.paths import DataTree
from sample import images as sample_images
from tests.conftest import load_step
from tests.image_server import image_server  # noqa: F401
from tests.test_07_helpers import make_inputs

step = load_step("07_export_for_web")


def run(tree: DataTree, *extra: str) -> int:
    return step.main(["--data-dir", str(tree.root), "--no-download-missing", *extra])


@pytest.fixture(scope="module")
def gephi_export(tmp_path_factory):
    tree = DataTree.at(tmp_path_factory.mktemp("gephi") / "data")
    gen = make_inputs(tree, n=150, seed=7)
    # a caption with XML specials and control characters must not break the GEXF
    proj = pd.read_parquet(tree.projection_file)
    proj.loc[0, "caption"] = 'Madrid <b>"night"</b> & day\x00\x07 \u00e9'
    proj.to_parquet(tree.projection_file)
    assert run(tree, "--poster-size", "0") == 0
    return tree, gen


def test_gexf_round_trips_through_networkx_with_positions_sizes_and_image_names(gephi_export):
    tree, gen = gephi_export
    g = nx.read_gexf(tree.gexf_file)
    images = {n: d for n, d in g.nodes(data=True) if d["type"] == "image"}
    tags = {n: d for n, d in g.nodes(data=True) if d["type"] == "tag"}
    assert set(images) == set(gen.ids.tolist())
    assert {d["label"] for d in tags.values()} == {"plaza", "tower", "river", "night", "crowd", "street"}
    for row_id, d in images.items():
        k = gen.ids.tolist().index(row_id)
        assert d["image"] == (f"{row_id}.jpg" if gen.with_thumb[k] else "")
        assert set(d["viz"]["position"]) == {"x", "y", "z"} and d["viz"]["position"]["z"] == 0.0
        assert d["viz"]["size"] > 0
    assert images[gen.ids[0]]["label"] == 'Madrid <b>"night"</b> & day \u00e9'
    assert g.number_of_edges() == 2 * len(gen.ids)


def test_gexf_positions_keep_the_map_orientation(gephi_export):
    """Gephi's y grows upward, like the projection's y: the map is not mirrored."""
    tree, gen = gephi_export
    g = nx.read_gexf(tree.gexf_file)
    pos = np.array([[g.nodes[i]["viz"]["position"]["x"], g.nodes[i]["viz"]["position"]["y"]] for i in gen.ids])
    assert np.corrcoef(pos[:, 0], gen.x)[0, 1] > 0.999 and np.corrcoef(pos[:, 1], gen.y)[0, 1] > 0.999


def test_gephi_sees_a_node_column_named_exactly_image(gephi_export):
    tree, _ = gephi_export
    text = tree.gexf_file.read_text(encoding="utf-8")
    assert '<attribute id="image" title="image" type="string"/>' in text
    assert 'z="None"' not in text
    assert not re.search(r'<attribute id="\d+"', text)


def test_nodes_and_edges_csv_have_gephi_columns(gephi_export):
    tree, gen = gephi_export
    with open(tree.nodes_csv, encoding="utf-8", newline="") as f:
        nodes = list(csv.DictReader(f))
    with open(tree.edges_csv, encoding="utf-8", newline="") as f:
        edges = list(csv.DictReader(f))
    assert list(nodes[0])[:7] == ["Id", "Label", "type", "image", "x", "y", "size"]
    assert {n["type"] for n in nodes} == {"image", "tag"}
    ids = {n["Id"] for n in nodes}
    assert list(edges[0]) == ["Source", "Target", "Weight"]
    assert all(e["Source"] in ids and e["Target"] in ids and float(e["Weight"]) > 0 for e in edges)
    tag_nodes = [n for n in nodes if n["type"] == "tag"]
    assert all(n["image"] == "" and float(n["size"]) >= 8 for n in tag_nodes)


def test_gephi_limit_keeps_the_coarse_representatives_first(tmp_path, capsys):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=200, seed=8, tags=False)
    assert run(tree, "--poster-size", "0", "--levels", "16", "32", "--gephi-max-images", "0") == 0
    reps = {c[3] for c in json.loads(tree.grid_file(16).read_text())["cells"]}
    limit = len(reps) + 5
    assert limit < 200
    assert run(tree, "--poster-size", "0", "--levels", "16", "32", "--gephi-max-images", str(limit)) == 0
    assert f"gephi: {limit:,} of 200 images" in capsys.readouterr().out
    g = nx.read_gexf(tree.gexf_file)
    assert set(g.nodes) >= reps and g.number_of_nodes() == limit


def test_tag_positions_come_from_step_06_network_layout_when_present(tmp_path):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=60, seed=9)
    pd.DataFrame({"tag": ["plaza"], "x": [0.0], "y": [1.0], "degree": [3], "weight": [5.0]}).to_parquet(
        tree.tag_nodes_file)
    assert run(tree, "--poster-size", "0") == 0
    g = nx.read_gexf(tree.gexf_file)
    position = g.nodes["tag:plaza"]["viz"]["position"]
    scale = -2 * position["x"]  # x = 0 maps to the left edge, -scale/2
    assert scale >= 1000 and position["y"] == pytest.approx(scale / 2)


def test_poster_has_the_requested_size_and_draws_images(tmp_path, capsys):
    tree = DataTree.at(tmp_path / "data")
    make_inputs(tree, n=200, seed=10, tags=False)
    assert run(tree, "--poster-size", "800", "--no-gephi") == 0
    assert "poster: " in capsys.readouterr().out
    with Image.open(tree.poster_file) as im:
        assert max(im.size) == 800  # the long side; the other follows the data's extent
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    white = np.all(pixels == 255, axis=1).mean()
    assert 0.3 < white < 0.995  # mostly background, but images were drawn


def test_missing_thumbnails_are_downloaded_from_the_image_host(tmp_path, image_server):  # noqa: F811
    tree = DataTree.at(tmp_path / "data")
    urls = [image_server.add(f"p{i}.jpg", sample_images.jpeg((10 * i, 90, 200), (300, 200))) for i in range(12)]
    urls[3] = image_server.url("/status/404")
    gen = make_inputs(tree, n=12, seed=11, tags=False, thumbs=False, urls=urls)
    code = step.main(["--data-dir", str(tree.root), "--allow-private-hosts", "--poster-size", "0",
                      "--levels", "16", "--retries", "0", "--timeout", "5"])
    assert code == 0
    for k, row_id in enumerate(gen.ids.tolist()):
        path = tree.export_thumbnail(row_id)
        assert path.exists() == (k != 3)
        if k != 3:
            with Image.open(path) as im:
                assert max(im.size) == 256
    stats = json.loads((tree.export / "_stats.json").read_text())
    assert stats["thumbnails"]["download success"] == 11 and stats["thumbnails"]["download http_404"] == 1
    assert not tree.images.exists()  # step 05's cache is not written by step 07


def test_private_hosts_are_refused_without_the_flag(tmp_path, image_server):  # noqa: F811
    tree = DataTree.at(tmp_path / "data")
    urls = [image_server.add(f"q{i}.jpg", sample_images.jpeg()) for i in range(3)]
    make_inputs(tree, n=3, seed=12, tags=False, thumbs=False, urls=urls)
    assert step.main(["--data-dir", str(tree.root), "--poster-size", "0", "--levels", "16"]) == 0
    stats = json.loads((tree.export / "_stats.json").read_text())
    assert stats["thumbnails"]["download private_address"] == 3
    assert not image_server.hits("/img/")
