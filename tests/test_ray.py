"""Steps 01 and 05 with --ray on a local Ray (2 CPUs): the same outputs as threads, faults, errors, loopback.

One Ray serves the whole module (starting one costs seconds); the steps find it running and use it,
as they would use their own.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import ray_runner
from common.cli import UserError
from common.embedding_shards import finished_shards, read_shard
from common.paths import DataTree
from sample import images as sample
from sample.relaion import write_relaion_parquet
from tests.conftest import ROOT, load_step, polling
from tests.hub_server import hub_server  # noqa: F401
from tests.image_server import image_server  # noqa: F401
from tests.tiny_clip import checkpoint_files

step01 = load_step("01_download_and_filter")
step05 = load_step("05_process_images")


@pytest.fixture(scope="module")
def ray_local():
    started = ray_runner.connect(None, num_cpus=2)
    import ray

    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A seeded random tiny CLIP as a local open_clip folder: every process loads the same weights."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    for name, data in checkpoint_files()[0].items():
        (folder / name).write_bytes(data)
    vocab = folder / "tags.txt"
    vocab.write_text("red\nblue\ntram\nsky\n", encoding="utf-8")
    return str(folder)


@contextlib.contextmanager
def kill_once(title: str):
    """SIGKILL the first of this process's descendants whose title starts with `title` (Ray names a
    worker after the task it runs); yields the list of pids killed."""
    killed = []

    def look() -> bool:
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if " ".join(proc.cmdline()).startswith(title):
                    proc.kill()
                    killed.append(proc.pid)
                    return True
        return False

    with polling(look, 0.01):
        yield killed


def error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------- step 01
def parts_of(data_dir: Path) -> dict[str, pa.Table]:
    return {p.name: pq.read_table(p) for p in sorted((data_dir / "metadata").glob("part-*.parquet"))}


def stats_counts(data_dir: Path) -> dict:
    doc = json.loads((data_dir / "metadata" / "_stats.json").read_text())
    return {k: doc[k] for k in ("rows_in", "rows_out", "dropped", "files_done", "matched_per_keyword")}


def run01(data_dir: Path, sources: list, *extra: str) -> int:
    return step01.main(["--data-dir", str(data_dir), "--keywords", "Madrid", "Paris", "--source", *map(str, sources),
                        *extra])


def test_01_ray_writes_the_same_parts_and_counts_as_threads(ray_local, tmp_path):
    sources = [write_relaion_parquet(tmp_path / f"s{i}.parquet", 3000, seed=i, rows_per_group=700) for i in range(3)]
    assert run01(tmp_path / "threads", sources) == 0
    assert run01(tmp_path / "ray", sources, "--ray") == 0
    threads, on_ray = parts_of(tmp_path / "threads"), parts_of(tmp_path / "ray")
    assert list(on_ray) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name, table in threads.items():
        assert on_ray[name].equals(table), name
    assert stats_counts(tmp_path / "ray") == stats_counts(tmp_path / "threads")
    assert stats_counts(tmp_path / "ray")["rows_out"] > 0


def test_01_a_worker_killed_mid_file_is_retried_and_the_parts_are_right(ray_local, tmp_path):
    sources = [write_relaion_parquet(tmp_path / f"s{i}.parquet", 60_000, seed=i, rows_per_group=5000) for i in range(2)]
    assert run01(tmp_path / "threads", sources) == 0
    with kill_once("ray::01_file") as killed:
        assert run01(tmp_path / "ray", sources, "--ray") == 0
    assert killed, "no worker was running a file: the test did not test anything"
    threads, on_ray = parts_of(tmp_path / "threads"), parts_of(tmp_path / "ray")
    assert list(on_ray) == list(threads) and all(on_ray[n].equals(t) for n, t in threads.items())
    assert not list((tmp_path / "ray" / "metadata").glob("*.tmp"))
    assert stats_counts(tmp_path / "ray") == stats_counts(tmp_path / "threads")


@pytest.mark.parametrize("make_args, expected", [
    (lambda s, bad: [*s, "--limit", "0"], "--limit must be at least 1"),
    (lambda s, bad: [*s, "--url-column", "nope"], "column 'nope' is not in"),
    (lambda s, bad: [bad], "none of the 1 files could be read"),
    (lambda s, bad: [*s, "--keywords", "Xyzzyville"], "no caption names Xyzzyville"),
])
def test_01_bad_inputs_give_the_same_one_line_errors_under_ray(ray_local, tmp_path, capsys, make_args, expected):
    good = [str(write_relaion_parquet(tmp_path / "s.parquet", 300, seed=1))]
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    args = make_args(good, str(bad))
    keywords = ["--keywords", "Madrid"] if "--keywords" not in args else []
    lines = []
    for extra in ([], ["--ray"]):
        argv = ["--data-dir", str(tmp_path / f"d{len(extra)}"), *keywords, "--source", *args, *extra]
        assert step01.main(argv) == 2
        lines.append(error_line(capsys))
    assert lines[0] == lines[1] and expected in lines[1]


def test_01_hub_token_reaches_workers_but_no_log_or_file(ray_local, hub_server, tmp_path, capsys):
    from tests.test_01_hub_source import REPO, publish

    publish(hub_server, tmp_path, n=2)
    data = tmp_path / "d"
    assert step01.main(["--data-dir", str(data), "--keywords", "Madrid", "--token", hub_server.token, "--ray"]) == 0
    assert sorted(parts_of(data)) == ["part-00000.parquet", "part-00001.parquet"]
    assert any(f"/datasets/{REPO}/resolve/" in p for p in hub_server.paths_requested("GET"))
    secret = hub_server.token.encode()
    out = capsys.readouterr()
    assert hub_server.token not in out.out + out.err
    session = Path(ray_local._private.worker._global_node.get_session_dir_path())
    for folder in (session, data):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    assert secret not in path.read_bytes(), f"the token is in {path}"


def test_the_command_line_ray_records_as_the_job_leaves_out_the_token():
    line = ray_runner.redact_command(["python", "01_download_and_filter.py", "--token", "hf_secret1", "--keywords",
                                      "Madrid", "--token=hf_secret2", "--tok", "hf_secret3", "--ray"])
    assert "hf_secret" not in line and line.count("***") == 3 and "--keywords Madrid" in line


def test_a_ray_without_the_recorded_entrypoint_hook_refuses_a_token_on_the_command_line(monkeypatch):
    fake_ray = types.SimpleNamespace(_private=types.SimpleNamespace(utils=types.SimpleNamespace()))
    monkeypatch.setattr(sys, "orig_argv", ["python", "05_process_images.py", "--token", "hf_secret", "--ray"])
    with pytest.raises(UserError, match="HF_TOKEN"), ray_runner._entrypoint_redacted(fake_ray):
        pass


# ---------------------------------------------------------------------------- step 05
def write_input(tree: DataTree, urls: list) -> None:
    tree.metadata.mkdir(parents=True, exist_ok=True)
    rows = [{"url": u, "caption": f"caption {i}"} for i, u in enumerate(urls)]
    pq.write_table(pa.Table.from_pylist(rows), tree.metadata_part(0))


def run05(tree: DataTree, model_dir: str, *extra: str) -> int:
    return step05.main(["--data-dir", str(tree.root), "--model", f"local-dir:{model_dir}", "--timeout", "2",
                        "--retries", "1", "--allow-private-hosts", "127.0.0.1", "--workers", "4",
                        "--tags-vocab", str(Path(model_dir) / "tags.txt"), *extra])


def shards_of(tree: DataTree) -> list[tuple[pa.Table, np.ndarray]]:
    return [read_shard(tree, n) for n in finished_shards(tree)]


def assert_same_shards(a: DataTree, b: DataTree) -> None:
    sa, sb = shards_of(a), shards_of(b)
    assert len(sa) == len(sb) > 0
    for (ia, ea), (ib, eb) in zip(sa, sb):
        for column in ("id", "url", "caption", "status", "error"):
            assert ia.column(column).to_pylist() == ib.column(column).to_pylist(), column
        assert ea.shape == eb.shape and ea.dtype == eb.dtype == np.float16
        np.testing.assert_allclose(ea.astype(np.float32), eb.astype(np.float32), atol=2e-3)


def test_05_ray_writes_the_same_shards_statuses_and_embeddings_as_threads(ray_local, image_server, model_dir, tmp_path):
    good = [image_server.add(f"g{i}.png", sample.png(size=(40 + i, 30)), "image/png") for i in range(6)]
    urls = [*good, image_server.url("/status/404"), image_server.url("/html"), None, good[0], good[3]]
    threads, on_ray = DataTree(tmp_path / "threads"), DataTree(tmp_path / "ray")
    for tree in (threads, on_ray):
        write_input(tree, urls)
    assert run05(threads, model_dir, "--shard-size", "4") == 0
    hits = len(image_server.hits("/img/"))
    assert run05(on_ray, model_dir, "--shard-size", "4", "--ray") == 0
    assert len(image_server.hits("/img/")) == 2 * hits  # a URL in two shards is downloaded once, as with threads
    assert_same_shards(threads, on_ray)
    statuses = set(pa.concat_tables([t for t, _ in shards_of(on_ray)]).column("status").to_pylist())
    assert statuses == {"success", "http_404", "not_an_image", "bad_url"}
    doc = json.loads((on_ray.embeddings / "_stats.json").read_text())
    assert doc["statuses"] == json.loads((threads.embeddings / "_stats.json").read_text())["statuses"]
    assert doc["downloaded"] == 6 and doc["tags"]["edges"] > 0
    pairs = [[line.split(",")[:2] for line in t.tags_file.read_text().splitlines()] for t in (threads, on_ray)]
    assert pairs[0] == pairs[1]  # the same tags (confidences are floats of the embeddings above)


def test_05_ray_after_dropping_rows_fetches_nothing_known_and_equals_a_fresh_run(ray_local, image_server, model_dir,
                                                                                 tmp_path):
    good = [image_server.add(f"r{i}.png", sample.png(size=(40 + i, 30)), "image/png") for i in range(8)]
    urls = [*good, image_server.url("/status/404")]
    tree, fresh = DataTree(tmp_path / "tree"), DataTree(tmp_path / "fresh")
    write_input(tree, urls)
    assert run05(tree, model_dir, "--shard-size", "3") == 0
    hits = len(image_server.hits("/"))
    kept = urls[:1] + urls[2:]  # the second row is cleaned away: every later row moves one place up
    write_input(tree, kept)
    assert run05(tree, model_dir, "--shard-size", "3", "--ray") == 0
    assert len(image_server.hits("/")) == hits  # reused vectors and the known 404: nothing fetched
    assert json.loads((tree.embeddings / "_stats.json").read_text())["embeddings_reused"] == 7
    write_input(fresh, kept)
    assert run05(fresh, model_dir, "--shard-size", "3") == 0
    assert_same_shards(tree, fresh)
    assert not tree.embeddings_previous.exists()


def test_05_a_model_actor_killed_mid_shard_restarts_and_the_shards_are_right(ray_local, image_server, model_dir,
                                                                            tmp_path):
    urls = [image_server.url(f"/hold/{i}") for i in range(24)]
    threads, on_ray = DataTree(tmp_path / "threads"), DataTree(tmp_path / "ray")
    for tree in (threads, on_ray):
        write_input(tree, urls)
    assert run05(threads, model_dir, "--shard-size", "6") == 0
    with kill_once("ray::EmbedActor.embed") as killed:
        assert run05(on_ray, model_dir, "--shard-size", "6", "--ray") == 0
    assert killed, "no actor was embedding: the test did not test anything"
    assert_same_shards(threads, on_ray)
    assert not list(on_ray.embeddings.glob("*.tmp"))


@pytest.mark.parametrize("extra, expected", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--input_dir", "/nonexistent/rows"], "01_download_and_filter.py"),
    (["--tags-vocab", "/nonexistent/vocab.txt"], "vocab"),
])
def test_05_bad_inputs_give_the_same_one_line_errors_under_ray(ray_local, model_dir, tmp_path, capsys, extra,
                                                               expected):
    lines = []
    for ray_flag in ([], ["--ray"]):
        tree = DataTree(tmp_path / f"d{len(ray_flag)}")
        write_input(tree, ["http://127.0.0.1:9/a.jpg"])
        assert run05(tree, model_dir, *extra, *ray_flag) == 2
        lines.append(error_line(capsys))
    assert lines[0] == lines[1] and expected in lines[1]


def test_05_no_embeddable_image_is_the_same_exit_and_message_under_ray(ray_local, image_server, model_dir, tmp_path,
                                                                      capsys):
    lines = []
    for ray_flag in ([], ["--ray"]):
        tree = DataTree(tmp_path / f"d{len(ray_flag)}")
        write_input(tree, [image_server.url("/status/404")])
        assert run05(tree, model_dir, *ray_flag) == 1
        lines.append(error_line(capsys))
    assert lines[0] == lines[1] and "no image could be embedded" in lines[1]


# ---------------------------------------------------------------------------- set-up
def test_without_the_flag_ray_is_never_imported(tmp_path):
    source = write_relaion_parquet(tmp_path / "s.parquet", 300, seed=1)
    code = ("import importlib, sys; s1 = importlib.import_module('01_download_and_filter'); "
            "s5 = importlib.import_module('05_process_images'); "
            f"assert s1.main(['--data-dir', {str(tmp_path / 'd')!r}, '--keywords', 'Madrid', '--source', {str(source)!r}]) == 0; "
            "assert s5.main(['--workers', '0']) == 2; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "d" / "metadata" / "part-00000.parquet").exists()


def test_a_node_that_cannot_read_the_data_tree_says_what_is_wrong(ray_local, tmp_path):
    probe = tmp_path / ".ray-probe-x"
    assert "FileNotFoundError" in ray_runner._probe(str(probe), "token")
    probe.write_text("another run's token")
    assert ray_runner._probe(str(probe), "token") == "its probe file holds something else"
    probe.write_text("token")
    assert ray_runner._probe(str(probe), "token") is None
    assert list(tmp_path.glob(".ray-probe-x.*")), "the node wrote no probe of its own"
    ray_runner.check_shared_storage(tmp_path / "tree")  # the one real node shares it: no error, no probe left
    assert not list((tmp_path / "tree").iterdir())


# ---------------------------------------------------------------------------- local means local
def _on_loopback(address) -> bool:
    ip = ipaddress.ip_address(address.ip.split("%")[0])
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_local_ray_binds_and_connects_on_loopback_only(ray_local):
    assert ray_local.get(ray_local.remote(lambda: 1).remote()) == 1  # a worker is up and talking
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    names = {p.name() for p in procs}
    assert {"raylet", "gcs_server"} <= names, names
    sockets = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sockets += [(proc.name(), c) for c in proc.net_connections(kind="inet")]
    assert len(sockets) > 5
    exposed = [(name, c.laddr, c.raddr) for name, c in sockets
               if not _on_loopback(c.laddr) or (c.raddr and not _on_loopback(c.raddr))]
    assert exposed == []
    nodes = ray_local.nodes()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]


def test_a_step_01_file_task_sizes_polars_to_the_cpus_it_holds(monkeypatch):
    import common.filter_file as filter_file

    seen = {}
    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    monkeypatch.setattr(filter_file, "process_file", lambda src, job: seen.setdefault("threads", os.environ.get("POLARS_MAX_THREADS")))
    monkeypatch.setattr(ray_runner, "_enter", lambda cwd: None)
    ray_runner._file_task(types.SimpleNamespace(repo=None), None, None, ".")
    assert seen == {"threads": str(ray_runner.FILE_TASK_CPUS)}
