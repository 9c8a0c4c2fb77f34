"""Smoke test: demo.py end to end on a tiny sample (tiny CLIP, random weights), then every step's
output checked against the next step's input: what one step hands on is what the next one read."""
from __future__ import annotations

import json
import re
import socket

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.paths import DataTree, stats_file
from tests import tiny_clip
from tests.conftest import load_step

demo = load_step("demo")
ROWS = 300


def ids_of(paths) -> list[str]:
    return [i for p in paths for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The demo, once for the module: (data tree, what it printed)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("demo")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = demo.main(["--data-dir", str(root), "--rows", str(ROWS), "--model", tiny_clip.register()])
    return code, DataTree.at(root), out.getvalue()


def test_demo_finishes_and_gives_name_lookups_back(run):
    code, _, printed = run
    assert code == 0 and "demo finished in" in printed
    assert socket.getaddrinfo.__module__ == "socket"  # the loopback-only resolver is undone


def test_every_step_wrote_its_stats_last(run):
    _, tree, _ = run
    for folder in (tree.metadata, tree.metadata_cleaned, tree.embeddings, tree.projection, tree.export):
        assert stats_file(folder).is_file(), folder
    for name in ("words", "bigrams", "trigrams", "top_domains"):
        assert tree.analysis_csv(name).is_file()
    assert tree.manifest_file.is_file() and tree.poster_file.is_file() and tree.gexf_file.is_file()


def test_cleaning_splits_step_01_rows_into_kept_and_excluded(run):
    _, tree, _ = run
    matched = ids_of(sorted(tree.metadata.glob("part-*.parquet")))
    kept = ids_of(sorted(tree.metadata_cleaned.glob("part-*.parquet")))
    excluded = ids_of([tree.excluded_file])
    assert kept and excluded and len(matched) > len(kept)
    assert sorted(kept + excluded) == sorted(matched)


def test_step_05_index_holds_every_cleaned_row_and_one_vector_per_success(run):
    _, tree, _ = run
    kept = ids_of(sorted(tree.metadata_cleaned.glob("part-*.parquet")))
    indexed, successes = [], []
    for index in sorted(tree.embeddings.glob("index-*.parquet")):
        n = int(index.stem.split("-")[1])
        table = pq.read_table(index, columns=["id", "status"]).to_pylist()
        indexed += [r["id"] for r in table]
        rows = [r["id"] for r in table if r["status"] == "success"]
        assert np.load(tree.embeddings_file(n)).shape[0] == len(rows)
        successes += rows
    assert sorted(indexed) == sorted(kept)
    assert 0 < len(successes) < len(indexed)  # the sample's dead links and bad URLs fail, the rest embed
    stats = json.loads(stats_file(tree.embeddings).read_text())
    assert stats["statuses"]["success"] == len(successes) and sum(stats["statuses"].values()) == len(indexed)


def test_the_map_places_every_embedded_image_once(run):
    _, tree, _ = run
    successes = []
    for index in sorted(tree.embeddings.glob("index-*.parquet")):
        successes += [r["id"] for r in pq.read_table(index, columns=["id", "status"]).to_pylist()
                      if r["status"] == "success"]
    placed = pq.read_table(tree.projection_file).to_pandas()
    assert placed["id"].is_unique
    assert set(placed["id"]) == set(successes)
    stats = json.loads(stats_file(tree.projection).read_text())
    assert stats["rows_in"] == len(successes) and stats["rows_out"] == len(placed)
    assert len(successes) - len(placed) == stats["dropped"].get("duplicate_id", 0)


def test_the_export_lists_only_files_that_exist_and_only_mapped_images(run):
    _, tree, _ = run
    manifest = json.loads(tree.manifest_file.read_text())
    placed = set(pq.read_table(tree.projection_file, columns=["id"]).column("id").to_pylist())
    assert manifest["rows"] == len(placed)
    for name in manifest["files"]:
        assert (tree.export / name).is_file(), name
    for level in manifest["levels"]:
        cells = json.loads(tree.grid_file(level).read_text())["cells"]
        ids = {c[3] for c in cells if c[3]}
        assert ids and ids <= placed
        assert all(tree.export_thumbnail(i).is_file() for i in ids)


def test_miro_dry_run_plans_one_item_per_exported_image_and_label(run):
    _, tree, printed = run
    manifest = json.loads(tree.manifest_file.read_text())
    m = re.search(r"plan: level (\d+): ([\d,]+) images of ([\d,]+) cells, (\d+) labels", printed)
    assert m, printed[-2000:]
    level = int(m.group(1))
    assert level in manifest["levels"]
    cells = json.loads(tree.grid_file(level).read_text())["cells"]
    assert int(m.group(2).replace(",", "")) == sum(1 for c in cells if c[3]) == int(m.group(3).replace(",", ""))
    assert int(m.group(4)) == len(manifest["clusters"])
    assert "dry run: nothing was placed or written" in printed and not tree.miro.exists()
