"""Step 06 end to end: synthetic embeddings written the way step 05 writes them, the script driven
through main([...]). UMAP runs are few (numba compiles on the first one, ~15 s): one module-wide
map is shared by the tests that only read it."""
from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from common.columns import row_id
from common.paths import DataTree, stats_file
from tests.conftest import load_step

step = load_step("06_reduce_dimensionality")

DIM = 32
CONCEPTS = ["harbour", "cathedral", "street market", "park", "skyline", "bridge", "metro station",
            "beach", "museum", "stadium", "night", "snow"]
CLUSTER_CONCEPTS = ["harbour", "cathedral", "park", "snow"]
CAPTION_WORDS = {"harbour": "boats", "cathedral": "gothic", "park": "picnic", "snow": "winter"}


def without_cuml(mp) -> None:
    """This machine as one without cuML, whatever is installed: the backend choice, the log line and
    the stats these tests check are the CPU path's."""
    mp.setitem(sys.modules, "cuml", None)  # find_spec finds nothing and `import cuml` fails


@pytest.fixture(autouse=True)
def no_cuml(monkeypatch):
    without_cuml(monkeypatch)


def concept_vectors() -> np.ndarray:
    """Stand-ins for CLIP text embeddings: one random unit vector per concept, fixed seed."""
    v = np.random.default_rng(7).normal(size=(len(CONCEPTS), DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(per_cluster: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in tight clouds around the text embedding of each of CLUSTER_CONCEPTS, plus a
    component every image shares (the collection's own look, which labels must see past)."""
    rng = np.random.default_rng(seed)
    cv = concept_vectors()
    common = cv[CONCEPTS.index("skyline")]
    rows, truth = [], []
    for k, concept in enumerate(CLUSTER_CONCEPTS):
        centre = cv[CONCEPTS.index(concept)] + 1.5 * common
        rows.append(centre + rng.normal(scale=0.08, size=(per_cluster, DIM)))
        truth += [k] * per_cluster
    x = np.concatenate(rows)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(truth)


def write_step05(root, vectors, captions, shard_rows=10_000, failed_per_shard=1, model="ViT-B-32",
                 pretrained="laion2b_s34b_b79k"):
    """embeddings-NNNNN.npy + index-NNNNN.parquet (with failed rows in between) + _stats.json."""
    tree = DataTree.at(root)
    tree.embeddings.mkdir(parents=True, exist_ok=True)
    ids = []
    for n, start in enumerate(range(0, len(vectors), shard_rows)):
        chunk = vectors[start:start + shard_rows]
        urls = [f"http://img.test/{i}.jpg" for i in range(start, start + len(chunk))]
        fails = [f"http://img.test/dead-{n}-{j}.jpg" for j in range(failed_per_shard)]
        all_urls = fails + urls
        status = ["error"] * len(fails) + ["success"] * len(urls)
        table = pa.table({"id": [row_id(u) for u in all_urls], "url": all_urls,
                          "caption": [None] * len(fails) + list(captions[start:start + len(chunk)]),
                          "status": status, "error": ["http_404"] * len(fails) + [None] * len(urls)})
        pq.write_table(table, tree.index_file(n))
        np.save(tree.embeddings_file(n), chunk.astype(np.float16))
        ids += [row_id(u) for u in urls]
    stats_file(tree.embeddings).write_text(json.dumps({"model": model, "pretrained": pretrained}))
    return ids


def write_vocab(path):
    path.write_text("# concepts\n" + "\n".join(CONCEPTS) + "\n", encoding="utf-8")
    return path


def captions_for(truth: np.ndarray) -> list[str]:
    return [f"Madrid {CAPTION_WORDS[CLUSTER_CONCEPTS[t]]} photo {i}" for i, t in enumerate(truth)]


@pytest.fixture
def fake_text_model(monkeypatch):
    """The CLIP text tower replaced by the fixed concept vectors above (no torch in these tests)."""
    calls = []

    def encode(model, pretrained, concepts, device):
        calls.append((model, pretrained, list(concepts)))
        return concept_vectors()[[CONCEPTS.index(c) for c in concepts]]

    monkeypatch.setattr(step, "encode_concepts", encode)
    return calls


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = step.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def umap_map(tmp_path_factory):
    """One UMAP map of 4 well-separated clusters (2 shards), made twice with the same seed."""
    mp = pytest.MonkeyPatch()
    without_cuml(mp)
    mp.setattr(step, "encode_concepts",
               lambda m, p, concepts, d: concept_vectors()[[CONCEPTS.index(c) for c in concepts]])
    x, truth = clustered_vectors(per_cluster=60)
    runs = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(name)
        ids = write_step05(root, x, captions_for(truth), shard_rows=150)
        vocab = write_vocab(root / "vocab.txt")
        code, out, err = run(["--data-dir", str(root), "--vocab", str(vocab), "--neighbors", "15"])
        runs.append({"root": root, "ids": ids, "code": code, "out": out, "err": err, "vocab": vocab})
    mp.undo()
    return truth, runs


def test_umap_map_keeps_separated_clusters_apart_and_hdbscan_recovers_them(umap_map):
    truth, runs = umap_map
    assert runs[0]["code"] == 0, runs[0]["err"]
    table = pq.read_table(DataTree.at(runs[0]["root"]).projection_file).to_pandas()
    assert table["id"].tolist() == runs[0]["ids"]  # every embedded image, in step 05's order
    assert "error" in table.columns and set(table["status"]) == {"success"}
    assert table["x"].between(0, 1).all() and table["y"].between(0, 1).all()
    assert adjusted_rand_score(truth, table["cluster"]) >= 0.9


def test_same_seed_gives_the_same_coordinates(umap_map):
    _, (a, b) = umap_map
    ta = pq.read_table(DataTree.at(a["root"]).projection_file)
    tb = pq.read_table(DataTree.at(b["root"]).projection_file)
    np.testing.assert_array_equal(ta.column("x").to_numpy(), tb.column("x").to_numpy())
    np.testing.assert_array_equal(ta.column("y").to_numpy(), tb.column("y").to_numpy())


def test_cluster_built_around_a_concept_is_named_after_it(umap_map):
    truth, runs = umap_map
    table = pq.read_table(DataTree.at(runs[0]["root"]).projection_file).to_pandas()
    for k, concept in enumerate(CLUSTER_CONCEPTS):
        members = table[truth == k]
        top_label = members["cluster_label"].mode()[0]
        assert top_label == f"{concept}: {CAPTION_WORDS[concept]}"
        assert (members["label_score"] > 0.5).mean() > 0.9
    # the shared component ("skyline") is in every image, yet names no cluster
    assert not table["cluster_label"].fillna("").str.startswith("skyline").any()


def test_without_cuml_auto_backend_falls_back_to_umap_learn_and_says_so(umap_map):
    _, runs = umap_map
    assert "backend: umap (cuML is not installed, so umap-learn runs on the CPU)" in runs[0]["out"]
    stats = json.loads(stats_file(DataTree.at(runs[0]["root"]).projection).read_text())
    assert stats["backend"] == "umap" and "cuML is not installed" in stats["backend_reason"]
    assert stats["seed"] == 42 and stats["parameters"]["neighbors"] == 15 and stats["pca"] == 0
    assert stats["images"] == 240 and stats["clusters"] == 4 and stats["rows_out"] == 240
    assert stats["peak_memory_mb"] > 0 and stats["phase_seconds"]["layout"] > 0
    assert stats["input_shards"] == [["embeddings-00000.npy", 150], ["embeddings-00001.npy", 90]]
    named = {c["label"]: c for c in stats["cluster_names"]}
    assert named["harbour: boats"]["concepts"][0]["concept"] == "harbour"
    assert named["harbour: boats"]["terms"][0] == {"term": "boats", "score": pytest.approx(0.7, abs=0.3)}


def test_random_weights_name_clusters_from_caption_words_alone_and_say_so(tmp_path, fake_text_model):
    x, truth = clustered_vectors(per_cluster=40)
    write_step05(tmp_path, x, captions_for(truth), pretrained="none")
    code, out, err = run(["--data-dir", str(tmp_path), "--vocab", str(write_vocab(tmp_path / "v.txt")),
                          "--neighbors", "15"])
    assert code == 0, err
    assert "naming clusters from caption words alone: step 05 embedded with random weights (ViT-B-32, " \
           "--pretrained none)" in out
    assert fake_text_model == []  # no concept was embedded, so none can name a cluster
    stats = json.loads(stats_file(DataTree.at(tmp_path).projection).read_text())
    assert stats["labels"] == {"from": "caption words", "note": step.RANDOM_NOTE,
                               "why": "step 05 embedded with random weights (ViT-B-32, --pretrained none)"}
    assert all(not c["concepts"] for c in stats["cluster_names"])
    labels = set(pq.read_table(DataTree.at(tmp_path).projection_file).column("cluster_label").to_pylist()) - {None}
    assert labels and not any(concept in label for label in labels for concept in CONCEPTS)
    assert {label.split(", ")[0] for label in labels} <= set(CAPTION_WORDS.values())  # "boats", not "harbour"


def test_trained_weights_name_clusters_with_concepts_and_record_it(umap_map):
    _, runs = umap_map
    stats = json.loads(stats_file(DataTree.at(runs[0]["root"]).projection).read_text())
    assert stats["labels"] == {"from": "concepts and caption words", "note": None,
                               "why": "ViT-B-32 (laion2b_s34b_b79k)"}


def test_rerun_with_same_parameters_skips(umap_map):
    _, runs = umap_map
    r = runs[0]
    before = DataTree.at(r["root"]).projection_file.stat().st_mtime_ns
    code, out, _ = run(["--data-dir", str(r["root"]), "--vocab", str(r["vocab"]), "--neighbors", "15"])
    assert code == 0 and "already exists with these parameters, skipping" in out
    assert DataTree.at(r["root"]).projection_file.stat().st_mtime_ns == before


def test_rerun_with_other_parameters_asks_for_overwrite(umap_map, capsys):
    _, runs = umap_map
    r = runs[0]
    code = step.main(["--data-dir", str(r["root"]), "--vocab", str(r["vocab"]), "--neighbors", "30"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"error: {DataTree.at(r['root']).projection_file} was made with other "
                                        "parameters (--neighbors): pass --overwrite to replace it"]


def test_backend_cuml_without_gpu_is_one_clear_error_line(tmp_path, capsys, monkeypatch):
    x, truth = clustered_vectors(per_cluster=10)
    write_step05(tmp_path, x, captions_for(truth))
    code = step.main(["--data-dir", str(tmp_path), "--backend", "cuml"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("error: --backend cuml needs cuML and an NVIDIA GPU, but cuML is not installed: pip install -r "
                   "requirements-gpu.txt on a machine with an NVIDIA GPU, or use --backend umap\n")
    assert not DataTree.at(tmp_path).projection.exists()


def test_missing_embeddings_say_to_run_step_05(tmp_path, capsys):
    assert step.main(["--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: no embeddings in {tmp_path / 'embeddings'}: run step 05 (05_process_images.py) first\n"


def test_npy_and_index_that_disagree_are_refused(tmp_path, capsys):
    x, truth = clustered_vectors(per_cluster=10)
    write_step05(tmp_path, x, captions_for(truth))
    tree = DataTree.at(tmp_path)
    np.save(tree.embeddings_file(0), x[:-3].astype(np.float16))
    assert step.main(["--data-dir", str(tmp_path), "--no-concepts"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("error: embeddings-00000.npy holds 37 vectors but index-00000.parquet "
                                            "lists 40 successful rows: re-run step 05 with --overwrite")


@pytest.mark.parametrize("flags, message", [
    (["--neighbors", "1"], "--neighbors must be 2 or more (got 1); 15 to 50 is usual"),
    (["--dist", "3"], "--dist must be between 0 and 1 (got 3.0); 0.0 to 0.5 is usual"),
    (["--pca", "1"], "--pca must be 0 (off) or 2 or more (got 1); 50 to 100 is usual"),
    (["--min_cluster_size", "1"], "--min-cluster-size must be 2 or more (got 1)"),
])
def test_bad_flag_values_are_one_line_errors(tmp_path, capsys, flags, message):
    assert step.main(["--data-dir", str(tmp_path)] + flags) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_every_flag_has_help():
    for action in step.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"


def write_tags(root, ids, groups, rng) -> list[tuple[int, set]]:
    """tags.csv: the images of group g carry 2-3 tags of their group's own 4 (none shared across
    groups), plus edges a map must not use: an unknown image, a zero weight, an empty tag."""
    rows, tagsets = [], []
    for i, (image, g) in enumerate(zip(ids, groups)):
        own = [f"g{g}-tag{j}" for j in range(4)]
        chosen = set(rng.choice(own, size=rng.integers(2, 4), replace=False).tolist())
        tagsets.append(chosen)
        # one image is listed by its URL, as in a hand-made edge table
        source = "http://img.test/0.jpg" if i == 0 else image
        rows += [f"{source},{t},{rng.uniform(0.2, 1.0):.3f}" for t in sorted(chosen)]
    rows += ["ffffffffffffffff,g0-tag0,0.9", f"{ids[1]},g0-tag1,0", f"{ids[2]},,0.5"]
    (DataTree.at(root).tags_file).write_text("Source,Target,Weight\n" + "\n".join(rows) + "\n")
    return tagsets


def test_network_layout_puts_images_sharing_tags_closer_than_images_sharing_none(tmp_path):
    x, truth = clustered_vectors(per_cluster=20, seed=3)
    rng = np.random.default_rng(5)
    groups = rng.permutation(truth)  # the tag groups are unrelated to the embeddings
    ids = write_step05(tmp_path, x, captions_for(truth))
    tagsets = write_tags(tmp_path, ids, groups, rng)
    code, out, err = run(["--data-dir", str(tmp_path), "--layout", "network", "--no-concepts",
                          "--iterations", "150", "--linlog"])
    assert code == 0, err
    assert "backend: fa2" in out
    tree = DataTree.at(tmp_path)
    images = pq.read_table(tree.projection_file).to_pandas()
    xy = images[["x", "y"]].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    share = np.array([[bool(a & b) for b in tagsets] for a in tagsets])
    off_diagonal = ~np.eye(len(ids), dtype=bool)
    assert d[share & off_diagonal].mean() < 0.5 * d[~share].mean()
    assert images["degree"].tolist() == [len(t) for t in tagsets]
    tags = pq.read_table(tree.tag_nodes_file).to_pandas()
    assert sorted(tags["tag"]) == sorted({t for s in tagsets for t in s})
    expected_degree = {t: sum(t in s for s in tagsets) for t in tags["tag"]}
    assert dict(zip(tags["tag"], tags["degree"])) == expected_degree
    assert tags[["x", "y"]].stack().between(0, 1).all()
    stats = json.loads(stats_file(tree.projection).read_text())
    assert stats["layout"] == "network" and stats["backend"] == "fa2"
    assert stats["edges_dropped"] == {"edge_no_tag": 1, "edge_weight_not_positive": 1, "edge_image_not_on_map": 1}
    assert stats["tags"] == len(tags) and stats["parameters"]["linlog"] is True


def test_umap_layout_after_network_layout_removes_stale_tag_nodes(tmp_path):
    """Cheap check of the clean-up path with a 2-image collection (no UMAP run needed)."""
    x, truth = clustered_vectors(per_cluster=1)
    ids = write_step05(tmp_path, x[:2], captions_for(truth[:2]))
    (DataTree.at(tmp_path).tags_file).write_text(f"Source,Target,Weight\n{ids[0]},a,1\n{ids[1]},a,1\n")
    assert run(["--data-dir", str(tmp_path), "--layout", "network", "--no-concepts", "--iterations", "5"])[0] == 0
    assert DataTree.at(tmp_path).tag_nodes_file.exists()
    assert run(["--data-dir", str(tmp_path), "--no-concepts", "--overwrite"])[0] == 0
    assert not DataTree.at(tmp_path).tag_nodes_file.exists()
    assert pq.read_table(DataTree.at(tmp_path).projection_file).num_rows == 2


def test_network_layout_without_tags_csv_says_what_to_do(tmp_path, capsys):
    x, truth = clustered_vectors(per_cluster=5)
    write_step05(tmp_path, x, captions_for(truth))
    assert step.main(["--data-dir", str(tmp_path), "--layout", "network", "--no-concepts"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {DataTree.at(tmp_path).tags_file} not found: --layout network needs step 05's tags "
        "(run 05_process_images.py with tagging on), or use --layout umap")


def test_concept_vectors_are_computed_once_per_model_and_vocabulary(tmp_path, fake_text_model):
    x, truth = clustered_vectors(per_cluster=1)
    write_step05(tmp_path, x[:2], captions_for(truth[:2]))
    vocab = write_vocab(tmp_path / "vocab.txt")
    argv = ["--data-dir", str(tmp_path), "--vocab", str(vocab)]
    assert run(argv)[0] == 0
    code, out, _ = run(argv + ["--dist", "0.2", "--overwrite"])
    assert code == 0 and ", read from the cache" in out
    assert fake_text_model == [("ViT-B-32", "laion2b_s34b_b79k", CONCEPTS)]
    write_vocab(vocab).write_text("harbour\nsnow\n")
    code, out, _ = run(argv + ["--overwrite"])
    assert code == 0 and "read from the cache" not in out
    assert [c[2] for c in fake_text_model] == [CONCEPTS, ["harbour", "snow"]]


def test_default_vocabulary_is_the_one_step_05_tagged_with(tmp_path, fake_text_model):
    x, truth = clustered_vectors(per_cluster=1)
    write_step05(tmp_path, x[:2], captions_for(truth[:2]))
    vocab = tmp_path / "tags.txt"
    vocab.write_text("bridge\nnight\n")
    path = stats_file(DataTree.at(tmp_path).embeddings)
    path.write_text(json.dumps({"model": "ViT-B-32", "pretrained": None, "tags": {"vocabulary": str(vocab)}}))
    code, out, _ = run(["--data-dir", str(tmp_path)])
    assert code == 0 and "naming clusters with 2 concepts embedded by ViT-B-32 (none)" in out
    assert fake_text_model == [("ViT-B-32", "none", ["bridge", "night"])]


def test_repeated_ids_and_non_finite_vectors_are_dropped_and_counted(tmp_path):
    x, truth = clustered_vectors(per_cluster=1)
    x = x[:4].copy()
    x[3] = np.nan  # a vector float16 could not hold
    write_step05(tmp_path, x, captions_for(truth[:4]), shard_rows=2)
    tree = DataTree.at(tmp_path)
    # shard 1 repeats shard 0's first image (step 05 gives rows sharing a URL the same id)
    index = pq.read_table(tree.index_file(1)).to_pandas()
    index.loc[index["status"] == "success", "id"] = [row_id("http://img.test/0.jpg"), index["id"].iloc[-1]]
    pq.write_table(pa.Table.from_pandas(index, preserve_index=False), tree.index_file(1))
    code, out, err = run(["--data-dir", str(tmp_path), "--no-concepts"])
    assert code == 0, err
    assert pq.read_table(tree.projection_file).column("url").to_pylist() == ["http://img.test/0.jpg",
                                                                           "http://img.test/1.jpg"]
    stats = json.loads(stats_file(tree.projection).read_text())
    assert (stats["rows_in"], stats["rows_out"]) == (4, 2)
    assert stats["dropped"] == {"duplicate_id": 1, "non_finite_embedding": 1}


def test_large_collections_get_pca_first_and_a_pca_start_automatically(tmp_path, monkeypatch, umap_map):
    import umap

    monkeypatch.setattr(step, "AUTO_PCA_ROWS", 100)  # "large" = more than 100 images here
    monkeypatch.setattr(step, "AUTO_PCA", 8)
    monkeypatch.setattr(step.layout, "SPECTRAL_MAX_ROWS", 100)
    starts, original = [], umap.UMAP
    monkeypatch.setattr(umap, "UMAP", lambda **kw: starts.append(kw["init"]) or original(**kw))
    x, truth = clustered_vectors(per_cluster=40, seed=1)
    write_step05(tmp_path, x, captions_for(truth))
    code, out, err = run(["--data-dir", str(tmp_path), "--no-concepts", "--neighbors", "15"])
    assert code == 0, err
    assert "PCA 32 -> 8 dimensions keeps" in out and "with umap, pca start" in out
    tree = DataTree.at(tmp_path)
    stats = json.loads(stats_file(tree.projection).read_text())
    assert stats["pca"] == 8 and 0.5 < stats["pca_variance_kept"] <= 1.0 and stats["init"] == "pca"
    assert adjusted_rand_score(truth, pq.read_table(tree.projection_file).column("cluster").to_numpy()) >= 0.9
    code, out, _ = run(["--data-dir", str(tmp_path), "--no-concepts", "--neighbors", "15", "--pca", "0",
                        "--init", "spectral", "--overwrite"])
    assert code == 0 and "PCA" not in out
    stats = json.loads(stats_file(tree.projection).read_text())
    assert stats["pca"] == 0 and stats["init"] == "spectral"
    assert starts == ["pca", "spectral"]
