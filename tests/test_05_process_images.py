"""Step 05 end to end: statuses per row, aligned shards, resume after a kill, tags, user errors."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.embedding_shards import finished_shards, read_shard
from common.paths import DataTree
from sample import images as sample
from tests.conftest import ROOT, load_step
from tests.image_server import image_server  # noqa: F401
from tests.hub_server import hub_server  # noqa: F401
from tests.tiny_clip import ColourClip, checkpoint_files, register

FAULTS = {  # route -> the status its row must end with
    "/status/404": "http_404", "/once429/a": "success", "/once500/a": "success", "/slow": "timeout",
    "/truncated": "truncated", "/html": "not_an_image", "/bomb": "too_large", "/loop/a": "redirect_loop",
    "/to-private": "private_address", "/noai": "robots_noai",
}


_VOCAB: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def small_vocab(tmp_path_factory):
    """Most tests tag against six concepts: the shipped few hundred cost seconds of text encoding."""
    path = tmp_path_factory.mktemp("vocab") / "tags.txt"
    path.write_text("red\nblue\ntram\nbridge\nsky\nstreet\n", encoding="utf-8")
    _VOCAB["path"] = str(path)


@pytest.fixture(scope="module")
def step():
    register()
    return load_step("05_process_images")


def write_input(tree: DataTree, urls: list[str | None], parts: int = 1) -> None:
    tree.metadata.mkdir(parents=True, exist_ok=True)
    rows = [{"url": u, "caption": f"caption {i}", "width": 64} for i, u in enumerate(urls)]
    size = -(-len(rows) // parts)
    for p in range(parts):
        pq.write_table(pa.Table.from_pylist(rows[p * size:(p + 1) * size]), tree.metadata_part(p))


def base_args(tree: DataTree, *extra: str) -> list[str]:
    return ["--data-dir", str(tree.root), "--model", "tiny-test", "--pretrained", "none", "--timeout", "0.5",
            "--retries", "1", "--allow-private-hosts", "127.0.0.1", "--workers", "4",
            "--tags-vocab", _VOCAB["path"], *extra]


def all_index(tree: DataTree) -> pa.Table:
    return pa.concat_tables([read_shard(tree, n)[0] for n in finished_shards(tree)])


def all_embeddings(tree: DataTree) -> np.ndarray:
    return np.concatenate([read_shard(tree, n)[1] for n in finished_shards(tree)])


def test_every_row_ends_with_the_right_status(step, image_server, tmp_path, capsys):
    good = {image_server.add(f"good.{fmt}", sample.in_format(fmt), "application/octet-stream"): "success"
            for fmt in sample.FORMATS}
    expected = {**good, **{image_server.url(route): status for route, status in FAULTS.items()},
                "ftp://example.org/a.jpg": "bad_url", None: "bad_url"}
    urls = list(expected) + list(good)[:2]  # two rows share a URL with earlier rows
    tree = DataTree(tmp_path / "d")
    write_input(tree, urls, parts=2)
    assert step.main(base_args(tree, "--shard-size", "7")) == 0
    index = all_index(tree)
    assert index.column("url").to_pylist() == urls and index.column("caption").to_pylist()[0] == "caption 0"
    assert index.column("status").to_pylist() == [expected[u] for u in urls]
    assert all(e for s, e in zip(index.column("status").to_pylist(), index.column("error").to_pylist()) if s != "success")
    emb = all_embeddings(tree)
    n_ok = index.column("status").to_pylist().count("success")
    assert emb.dtype == np.float16 and emb.shape == (n_ok, 32)
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    for row_id, status in zip(index.column("id").to_pylist(), index.column("status").to_pylist()):
        if row_id:
            assert tree.thumbnail(row_id).exists() == (status == "success")
    assert len(image_server.hits("/img/good.jpeg")) == 1  # a shared URL is downloaded once
    stats = json.loads((tree.embeddings / "_stats.json").read_text())
    assert (stats["model"], stats["pretrained"]) == ("tiny-test", "none")
    assert stats["statuses"]["success"] == n_ok and stats["statuses"]["http_404"] == 1
    assert stats["rows_in"] == len(urls) and stats["images_per_second"] > 0
    assert "RANDOM weights" in capsys.readouterr().err


def test_thumbnail_long_side_is_thumb_size_and_originals_kept_on_request(step, image_server, tmp_path):
    url = image_server.add("wide.png", sample.png(size=(300, 120)), "image/png")
    tree = DataTree(tmp_path / "d")
    write_input(tree, [url])
    assert step.main(base_args(tree, "--thumb-size", "100", "--keep-images")) == 0
    (row_id,) = all_index(tree).column("id").to_pylist()
    from PIL import Image
    with Image.open(tree.thumbnail(row_id)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (100, 40))
    assert tree.original_image(row_id, "png").read_bytes() == sample.png(size=(300, 120))


def test_rerun_skips_finished_shards_and_downloads_nothing(step, image_server, tmp_path, capsys):
    urls = [image_server.url(f"/hold/{i}") for i in range(6)]
    tree = DataTree(tmp_path / "d")
    write_input(tree, urls)
    assert step.main(base_args(tree, "--shard-size", "4")) == 0
    first = all_embeddings(tree)
    hits = len(image_server.hits("/hold/"))
    capsys.readouterr()
    assert step.main(base_args(tree, "--shard-size", "4")) == 0
    assert "skipped 2 finished shard(s)" in capsys.readouterr().out
    assert len(image_server.hits("/hold/")) == hits
    np.testing.assert_array_equal(all_embeddings(tree), first)
    for n in finished_shards(tree):
        tree.index_file(n).unlink()  # shards gone, thumbnails kept: re-embedded, not re-downloaded
    assert step.main(base_args(tree, "--shard-size", "4")) == 0
    assert len(image_server.hits("/hold/")) == hits
    np.testing.assert_allclose(all_embeddings(tree).astype(np.float32), first.astype(np.float32), atol=2e-3)


def colour_vocab(tmp_path) -> str:
    vocab = tmp_path / "colours.txt"
    vocab.write_text("# colour vocabulary\n" + "\n".join(c for c in sample.COLOURS if c != "grey") + "\n",
                     encoding="utf-8")  # grey is the origin of this toy embedding space: no direction
    return str(vocab)


def test_kill_mid_run_then_rerun_equals_a_clean_run(step, image_server, tmp_path, monkeypatch):
    image_server.hold_seconds = 0.25
    urls = [image_server.url(f"/hold/{i}") for i in range(20)] + [image_server.url("/status/404")]
    killed, clean = DataTree(tmp_path / "killed"), DataTree(tmp_path / "clean")
    for tree in (killed, clean):
        write_input(tree, urls, parts=3)
    runner = tmp_path / "run05.py"
    runner.write_text(  # the numpy model keeps torch out of the child: it starts in a second, not ten
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.tiny_clip import ColourClip\nimport importlib\n"
        "step = importlib.import_module('05_process_images')\n"
        "step.load_clip = lambda *a, **kw: ColourClip('hf-hub:test/colour')\nsys.exit(step.main())\n")
    monkeypatch.setattr(step, "load_clip", lambda *a, **kw: ColourClip("hf-hub:test/colour"))
    colour = ["--model", "hf-hub:test/colour", "--device", "cpu", "--tags-vocab", colour_vocab(tmp_path)]
    args = base_args(killed, "--shard-size", "4", "--workers", "2", "--per-host", "2", *colour)
    proc = subprocess.Popen([sys.executable, str(runner), *args], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not killed.index_file(1).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = finished_shards(killed)
    assert 2 <= len(done_before) < 6, "the kill should land mid-run"
    assert step.main(args) == 0
    assert step.main(base_args(clean, "--shard-size", "4", "--workers", "2", *colour)) == 0
    a, b = all_index(killed), all_index(clean)
    assert a.column("id").to_pylist() == b.column("id").to_pylist()  # every row once, in order
    assert a.column("status").to_pylist() == b.column("status").to_pylist()
    np.testing.assert_array_equal(all_embeddings(killed), all_embeddings(clean))
    assert killed.tags_file.read_text() == clean.tags_file.read_text()
    assert not list(killed.embeddings.glob("*.tmp")) and not list(killed.images.glob("*.tmp"))


def test_ctrl_c_keeps_finished_shards_and_says_how_to_resume(step, image_server, tmp_path, capsys, monkeypatch):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url(f"/hold/{i}") for i in range(8)])
    real = step.process_shard

    def interrupt_second(n, *a, **kw):
        if n == 1:
            raise KeyboardInterrupt
        return real(n, *a, **kw)

    monkeypatch.setattr(step, "process_shard", interrupt_second)
    assert step.main(base_args(tree, "--shard-size", "4")) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert finished_shards(tree) == [0] and not (tree.embeddings / "_stats.json").exists()


def test_the_right_colour_tag_wins(step, image_server, tmp_path, monkeypatch):
    monkeypatch.setattr(step, "load_clip", lambda *a, **kw: ColourClip("hf-hub:test/colour"))
    names = ["red", "green", "blue", "yellow", "purple", "orange"]
    forms = ["jpeg", "png", "webp", "gif", "cmyk", "palette"]
    urls = [image_server.add(f"{c}.img", sample.in_format(f, sample.COLOURS[c])) for c, f in zip(names, forms)]
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url("/status/404")] + urls)
    args = base_args(tree, "--tags-vocab", colour_vocab(tmp_path), "--tags-k", "3", "--shard-size", "4")
    assert step.main(args + ["--model", "hf-hub:test/colour"]) == 0
    with open(tree.tags_file, newline="", encoding="utf-8") as fh:
        edges = list(csv.DictReader(fh))
    ids = all_index(tree).column("id").to_pylist()[1:]
    assert list(edges[0]) == ["Source", "Target", "Weight"] and len(edges) == 3 * len(names)
    for row_id, colour in zip(ids, names):
        mine = [e for e in edges if e["Source"] == row_id]
        assert mine[0]["Target"] == colour
        weights = [float(e["Weight"]) for e in mine]
        assert weights == sorted(weights, reverse=True) and 0.5 < weights[0] <= 1.0


def test_tags_file_has_k_calibrated_edges_per_image(step, image_server, tmp_path):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url(f"/hold/{i}") for i in range(3)] + [image_server.url("/hold/0")])
    assert step.main(base_args(tree, "--tags-k", "4")) == 0
    with open(tree.tags_file, newline="", encoding="utf-8") as fh:
        edges = list(csv.DictReader(fh))
    assert len(edges) == 3 * 4 and len({(e["Source"], e["Target"]) for e in edges}) == 12  # duplicate row: tagged once
    assert all(0 < float(e["Weight"]) <= 1 for e in edges)


def test_resuming_with_another_model_is_refused(step, image_server, tmp_path, capsys):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url("/hold/1")])
    assert step.main(base_args(tree)) == 0
    args = base_args(tree)
    args[args.index("tiny-test")] = "tiny-test-quickgelu"
    assert step.main(args) == 2
    assert "was embedded with tiny-test (none)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--model", "ViT-Q/99"], "unknown CLIP model 'ViT-Q/99'"),
    (["--tags-vocab", "missing.txt"], "tag vocabulary missing.txt not found"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line_and_exit_2(step, image_server, tmp_path, capsys, extra, message):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url("/hold/1")])
    assert step.main(base_args(tree) + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_missing_input_and_missing_url_column(step, tmp_path, capsys):
    tree = DataTree(tmp_path / "d")
    assert step.main(base_args(tree)) == 2
    assert "run 01_download_and_filter.py first" in capsys.readouterr().err
    tree.metadata.mkdir(parents=True)
    pq.write_table(pa.table({"caption": ["x"]}), tree.metadata_part(0))
    assert step.main(base_args(tree)) == 2
    assert "the input has no URL column" in capsys.readouterr().err


def test_nothing_embedded_exits_non_zero(step, image_server, tmp_path, capsys):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url("/status/404")])
    assert step.main(base_args(tree)) == 1
    assert "no image could be embedded" in capsys.readouterr().err
    assert all_index(tree).column("status").to_pylist() == ["http_404"]


def test_every_flag_has_help(step):
    for action in step.build_parser()._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_changed_tag_settings_redo_only_the_tags(step, image_server, tmp_path, capsys):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url(f"/hold/{i}") for i in range(3)])
    assert step.main(base_args(tree, "--tags-k", "2")) == 0
    hits, npy = len(image_server.hits("/hold/")), tree.embeddings_file(0).read_bytes()
    assert step.main(base_args(tree, "--tags-k", "3")) == 0
    assert len(tree.tags_file.read_text().splitlines()) == 1 + 3 * 3
    assert len(image_server.hits("/hold/")) == hits and tree.embeddings_file(0).read_bytes() == npy
    capsys.readouterr()
    assert step.main(base_args(tree, "--tags-k", "3")) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_noai_decision_can_be_changed_explicitly(step, image_server, tmp_path):
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url("/noai")])
    assert step.main(base_args(tree, "--no-respect-noai")) == 0
    assert all_index(tree).column("status").to_pylist() == ["success"]


def test_hub_model_is_recorded_for_step_06(step, image_server, hub_server, tmp_path):
    files, _ = checkpoint_files(seed=3)
    hub_server.add_repo("city-test/tiny-clip", files, repo_type="model")
    tree = DataTree(tmp_path / "d")
    write_input(tree, [image_server.url("/hold/1")])
    args = base_args(tree)
    at = args.index("--model")
    args[at:at + 4] = ["--model", "hf-hub:city-test/tiny-clip"]  # no --pretrained: the repo's weights
    assert step.main(args) == 0
    stats = json.loads((tree.embeddings / "_stats.json").read_text())
    assert (stats["model"], stats["pretrained"], stats["dim"]) == ("hf-hub:city-test/tiny-clip", None, 32)


def test_laion_own_status_and_error_reach_the_index_beside_step_05s(step, image_server, tmp_path):
    """RE-LAION rows through step 01 into step 05: LAION's download outcome stays laion_status /
    laion_error_message, untouched by 05's own status and error."""
    from common.match import compile_keywords, first_match
    from sample.relaion import relaion_table

    table = relaion_table(60, seed=4)
    words = compile_keywords(["Madrid"])
    table = table.filter(pa.array([bool(first_match(words, c)) for c in table["caption"].to_pylist()]))
    urls = [image_server.add(f"laion{i}.png", sample.png()) if i % 3 else image_server.url("/status/404")
            for i in range(len(table))]
    table = table.set_column(0, "url", pa.array(urls, pa.string()))
    (tmp_path / "src").mkdir()
    pq.write_table(table, tmp_path / "src" / "relaion.parquet")
    tree = DataTree(tmp_path / "d")
    assert load_step("01_download_and_filter").main(["--data-dir", str(tree.root), "--keywords", "Madrid",
                                                     "--source", str(tmp_path / "src")]) == 0
    assert step.main(base_args(tree, "--input_dir", str(tree.metadata))) == 0
    index = all_index(tree).to_pylist()
    source = {r["key"]: r for r in table.to_pylist()}
    assert len(index) == len(table) and {r["laion_status"] for r in index} == {"success", "failed_to_download"}
    for row in index:
        assert (row["laion_status"], row["laion_error_message"]) == (source[row["key"]]["status"],
                                                                     source[row["key"]]["error_message"])
        assert row["status"] == ("success" if row["url"].endswith(".png") else "http_404")
        assert row["width"] == source[row["key"]]["original_width"]
