"""Step 05 after re-cleaning: rows already embedded with the same model are never fetched or
embedded again, whatever shard they fall in now, and the shards equal a fresh run's."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import embedding_reuse
from common.embedding_shards import finished_shards, read_shard
from common.paths import DataTree
from tests.conftest import load_step
from tests.image_server import image_server  # noqa: F401
from tests.tiny_clip import ColourClip

MODEL = "hf-hub:test/colour"


class SpyClip(ColourClip):
    """Counts the images the model is asked to embed."""

    def __init__(self, name: str = MODEL):
        super().__init__(name)
        self.encoded = 0

    def encode_pixels(self, pixels):
        self.encoded += len(pixels)
        return super().encode_pixels(pixels)


@pytest.fixture(scope="module")
def step():
    return load_step("05_process_images")


@pytest.fixture(scope="module")
def clean():
    return load_step("03_clean_metadata")


@pytest.fixture
def spy(step, monkeypatch):
    clips: list[SpyClip] = []

    def load(name, *a, **kw):
        clips.append(SpyClip(name))
        return clips[-1]

    monkeypatch.setattr(step, "load_clip", load)
    return clips


@pytest.fixture
def vocab(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("red\ngreen\nblue\n", encoding="utf-8")
    return str(path)


def write_rows(tree: DataTree, urls: list[str], football_every: int = 10, parts: int = 2) -> None:
    """Step 01's output: every `football_every`-th caption names football (step 03 drops those)."""
    tree.metadata.mkdir(parents=True, exist_ok=True)
    rows = [{"url": u, "caption": f"Lisbon {'football' if i % football_every == 3 else 'tram'} {i}"}
            for i, u in enumerate(urls)]
    size = -(-len(rows) // parts)
    for p in range(parts):
        pq.write_table(pa.Table.from_pylist(rows[p * size:(p + 1) * size]), tree.metadata_part(p))


def args(tree: DataTree, vocab: str, *extra: str) -> list[str]:
    return ["--data-dir", str(tree.root), "--model", MODEL, "--pretrained", "none", "--device", "cpu",
            "--timeout", "2", "--retries", "1", "--allow-private-hosts", "127.0.0.1", "--workers", "4",
            "--tags-vocab", vocab, *extra]


def outputs(tree: DataTree) -> tuple[list, list, np.ndarray, list[int]]:
    n = finished_shards(tree)
    index = pa.concat_tables([read_shard(tree, i)[0] for i in n])
    emb = np.concatenate([read_shard(tree, i)[1] for i in n]).astype(np.float32)
    return index.column("id").to_pylist(), index.column("status").to_pylist(), emb, n


def assert_same(a: DataTree, b: DataTree) -> None:
    ids_a, status_a, emb_a, shards_a = outputs(a)
    ids_b, status_b, emb_b, shards_b = outputs(b)
    assert (ids_a, status_a, shards_a) == (ids_b, status_b, shards_b)
    np.testing.assert_allclose(emb_a, emb_b, atol=2e-3)
    for i in shards_a:  # the shard contract: the success rows, in order, are the npy's rows
        index, emb = read_shard(a, i)
        assert index.column("status").to_pylist().count("success") == len(emb)


def fresh_run(step, clean, tree: DataTree, urls, vocab, *extra, exclude=True) -> None:
    write_rows(tree, urls)
    if exclude:
        assert clean.main(["--data-dir", str(tree.root), "--exclude", "football"]) == 0
    assert step.main(args(tree, vocab, *extra)) == 0


def test_dropping_rows_with_step_03_reuses_every_vector(step, clean, spy, image_server, vocab, tmp_path, capsys):
    urls = [image_server.url(f"/hold/{i}") for i in range(60)] + [image_server.url("/status/404")]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls)
    assert step.main(args(tree, vocab, "--shard-size", "8")) == 0
    assert "step 01's rows: step 03 has not run" in capsys.readouterr().out.splitlines()[0]
    assert spy[-1].encoded == 60
    hits = len(image_server.hits("/"))
    assert clean.main(["--data-dir", str(tree.root), "--exclude", "football"]) == 0
    capsys.readouterr()
    assert step.main(args(tree, vocab, "--shard-size", "8")) == 0
    out = capsys.readouterr().out
    assert "step 03's cleaned rows" in out.splitlines()[0] and "1 shard(s) past the end" in out
    assert spy[-1].encoded == 0  # no model work at all
    assert len(image_server.hits("/")) == hits  # nothing fetched: the 404 is known for good
    assert not tree.embeddings_previous.exists()
    fresh = DataTree(tmp_path / "fresh")
    fresh_run(step, clean, fresh, urls, vocab, "--shard-size", "8")
    assert_same(tree, fresh)
    assert len(outputs(tree)[0]) == 55 and outputs(tree)[3] == list(range(7))


def test_limit_trial_then_full_run_reuses_the_trial(step, clean, spy, image_server, vocab, tmp_path):
    urls = [image_server.url(f"/hold/{i}") for i in range(30)]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls, football_every=1000)
    assert step.main(args(tree, vocab, "--shard-size", "50", "--limit", "12")) == 0
    assert spy[-1].encoded == 12
    assert step.main(args(tree, vocab, "--shard-size", "50")) == 0
    assert spy[-1].encoded == 18  # only the rows the trial did not reach
    fresh = DataTree(tmp_path / "fresh")
    write_rows(fresh, urls, football_every=1000)
    assert step.main(args(fresh, vocab, "--shard-size", "50")) == 0
    assert_same(tree, fresh)


def test_rows_moving_to_later_shards_are_reused(step, clean, spy, image_server, vocab, tmp_path):
    """Rows added in front push every row to a later shard, and shard n's old vectors are needed by n+1."""
    old = [image_server.url(f"/hold/{i}") for i in range(20)]
    new = [image_server.url(f"/hold/new{i}") for i in range(5)]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, old, football_every=1000, parts=1)
    assert step.main(args(tree, vocab, "--shard-size", "6")) == 0
    write_rows(tree, new + old, football_every=1000, parts=1)
    assert step.main(args(tree, vocab, "--shard-size", "6")) == 0
    assert spy[-1].encoded == 5
    fresh = DataTree(tmp_path / "fresh")
    write_rows(fresh, new + old, football_every=1000, parts=1)
    assert step.main(args(fresh, vocab, "--shard-size", "6")) == 0
    assert_same(tree, fresh)


def test_another_model_never_reuses(step, clean, spy, image_server, vocab, tmp_path):
    urls = [image_server.url(f"/hold/{i}") for i in range(12)]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls, football_every=1000)
    assert step.main(args(tree, vocab, "--shard-size", "5")) == 0
    other = args(tree, vocab, "--shard-size", "5")
    other[other.index(MODEL)] = "hf-hub:test/colour-2"
    assert step.main(other + ["--overwrite"]) == 0
    assert spy[-1].encoded == 12
    # a killed run's retired shards of the first model are still not used by the second
    assert step.main(args(tree, vocab, "--shard-size", "5", "--overwrite")) == 0
    embedding_reuse.retire(tree, finished_shards(tree))
    assert finished_shards(tree) == [] and embedding_reuse.retired_pairs(tree)
    assert step.main(other) == 0
    assert spy[-1].encoded == 12
    assert not tree.embeddings_previous.exists()


def test_a_run_killed_after_retiring_resumes_with_reuse(step, clean, spy, image_server, vocab, tmp_path,
                                                        monkeypatch, capsys):
    urls = [image_server.url(f"/hold/{i}") for i in range(40)]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls)
    assert step.main(args(tree, vocab, "--shard-size", "8")) == 0
    assert clean.main(["--data-dir", str(tree.root), "--exclude", "football"]) == 0
    real = step.process_shard

    def killed_at_shard_2(n, *a, **kw):
        if n == 2:
            raise KeyboardInterrupt
        return real(n, *a, **kw)

    monkeypatch.setattr(step, "process_shard", killed_at_shard_2)
    assert step.main(args(tree, vocab, "--shard-size", "8")) == 130
    assert embedding_reuse.retired_pairs(tree)  # the vectors later shards need survive the kill
    monkeypatch.setattr(step, "process_shard", real)
    (tree.embeddings_previous / "7.tmp").mkdir()  # a retirement cut short: ignored and cleared
    assert step.main(args(tree, vocab, "--shard-size", "8")) == 0
    assert spy[-1].encoded == 0 and not tree.embeddings_previous.exists()
    fresh = DataTree(tmp_path / "fresh")
    fresh_run(step, clean, fresh, urls, vocab, "--shard-size", "8")
    assert_same(tree, fresh)


def test_permanent_failures_are_kept_and_transient_ones_tried_again(step, clean, spy, image_server, vocab, tmp_path):
    urls = ([image_server.url(f"/hold/{i}") for i in range(6)]
            + [image_server.url("/status/404"), image_server.url("/status/503"), "ftp://example.org/a.jpg"])
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls, parts=1)  # row 3 names football
    assert step.main(args(tree, vocab, "--shard-size", "4")) == 0
    before_404, before_503 = len(image_server.hits("/status/404")), len(image_server.hits("/status/503"))
    assert clean.main(["--data-dir", str(tree.root), "--exclude", "football"]) == 0
    assert step.main(args(tree, vocab, "--shard-size", "4")) == 0
    assert len(image_server.hits("/status/404")) == before_404
    assert len(image_server.hits("/status/503")) > before_503
    ids, status, _, _ = outputs(tree)
    assert status[-3:] == ["http_404", "http_503", "bad_url"] and spy[-1].encoded == 0


def test_lookup_finds_vectors_by_id_across_files(tmp_path, step, spy, image_server, vocab):
    urls = [image_server.url(f"/hold/{i}") for i in range(9)]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls, football_every=1000)
    assert step.main(args(tree, vocab, "--shard-size", "4")) == 0
    pairs = [(tree.index_file(n), tree.embeddings_file(n)) for n in finished_shards(tree)]
    ids, _, emb, _ = outputs(tree)
    reuse = embedding_reuse.Reuse.build(pairs, (MODEL, "none"))
    found, failed = reuse.take(ids[::-1] + ["0123456789abcdef"])
    assert set(found) == set(ids) and not failed
    for j, i in enumerate(ids):
        np.testing.assert_array_equal(found[i].astype(np.float32), emb[j])
    assert len(embedding_reuse.Reuse.build(pairs, ("hf-hub:test/other", "none"))) == 0


def test_rows_dropped_only_from_the_last_shard_remove_it_and_its_tags(step, clean, spy, image_server, vocab, tmp_path):
    urls = [image_server.url(f"/hold/{i}") for i in range(10)]
    tree = DataTree(tmp_path / "city")
    write_rows(tree, urls, football_every=1000, parts=1)
    assert step.main(args(tree, vocab, "--shard-size", "5")) == 0
    write_rows(tree, urls[:5], football_every=1000, parts=1)
    assert step.main(args(tree, vocab, "--shard-size", "5")) == 0
    assert finished_shards(tree) == [0] and spy[-1].encoded == 0
    kept = set(outputs(tree)[0])
    tagged = {line.split(",")[0] for line in tree.tags_file.read_text().splitlines()[1:]}
    assert tagged == kept
