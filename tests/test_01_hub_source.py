"""Step 01 end to end against the loopback Hugging Face Hub (real huggingface_hub client)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq

import pyarrow as pa

from common.columns import RELAION_REPOS, row_id
from common.match import compile_keywords, first_match
from tests.conftest import load_step
from tests.hub_server import hub_server  # noqa: F401

step = load_step("01_download_and_filter")
REPO = RELAION_REPOS[("multi", "research-safe")]


def publish(hub, tmp_path=None, n: int = 3, gated: bool = True, repo: str = REPO, **kw) -> dict[str, bytes]:
    return hub.add_relaion(repo, parts=n, gated=gated, **kw)


def rows_of(data: bytes) -> list[dict]:
    return pq.read_table(pa.BufferReader(data)).to_pylist()


def kept_ids(files: dict[str, bytes], keywords=("Madrid",)) -> list[str]:
    patterns = compile_keywords(list(keywords))
    return [row_id(r["url"]) for name in sorted(files) for r in rows_of(files[name])
            if r["url"] and first_match(patterns, r["caption"])]


def run(tmp_path, *args):
    return step.main(["--data-dir", str(tmp_path / "d"), "--keywords", "Madrid", *map(str, args)])


def error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_hub_run_lists_downloads_filters_and_deletes_each_download(hub_server, tmp_path):
    files = publish(hub_server, tmp_path)
    assert run(tmp_path, "--token", hub_server.token) == 0
    meta = tmp_path / "d" / "metadata"
    parts = sorted(meta.glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for part, name in zip(parts, sorted(files)):
        got = pq.read_table(part)
        assert got["id"].to_pylist() == kept_ids({name: files[name]})
        assert set(got["source_file"].to_pylist()) == {name} and set(got["subset"].to_pylist()) == {"multi"}
    doc = json.loads((meta / "_stats.json").read_text())
    assert doc["source"] == f"{REPO} (3 parquet files), as loopback-user"
    assert doc["bytes_downloaded"] == sum(len(b) for b in files.values())
    assert doc["rows_in"] == 900 and doc["files_done"] == 3
    assert not (meta / ".downloads").exists()
    resolved = [p for m, p, _ in hub_server.requests if m == "GET" and "/resolve/" in p]
    assert sorted(resolved) == sorted(f"/datasets/{REPO}/resolve/main/{n}" for n in files)


def test_limit_reads_only_the_first_files_and_a_rerun_adds_the_rest(hub_server, tmp_path, capsys):
    files = publish(hub_server, tmp_path, n=3)
    assert run(tmp_path, "--token", hub_server.token, "--limit", "1") == 0
    assert [p.name for p in (tmp_path / "d" / "metadata").glob("part-*.parquet")] == ["part-00000.parquet"]
    hub_server.requests.clear()
    assert run(tmp_path, "--token", hub_server.token) == 0
    assert "skipping 1 finished file(s) of 3" in capsys.readouterr().out
    fetched = [p for m, p, _ in hub_server.requests if m == "GET" and "/resolve/" in p]
    assert len(fetched) == 2 and not any(sorted(files)[0] in p for p in fetched)


def test_a_listing_of_128_spark_shards_is_numbered_by_spark_part_with_limit(hub_server, tmp_path):
    hub_server.page_size = 50  # the listing comes in three pages, as a long one does from the Hub
    files = publish(hub_server, n=128, rows=40)
    names = sorted(files)
    assert names[0].startswith("part-00000-") and names[0].endswith("-c000.snappy.parquet")
    assert run(tmp_path, "--token", hub_server.token, "--limit", "3") == 0
    meta = tmp_path / "d" / "metadata"
    assert sorted(p.name for p in meta.glob("part-*.parquet")) == [f"part-0000{i}.parquet" for i in range(3)]
    for i in range(3):
        assert set(pq.read_table(meta / f"part-0000{i}.parquet")["source_file"].to_pylist()) == {names[i]}
    doc = json.loads((meta / "_stats.json").read_text())
    assert doc["source"] == f"{REPO} (128 parquet files), as loopback-user" and doc["files_done"] == 3


def test_keep_downloads_leaves_the_files_in_the_data_tree(hub_server, tmp_path):
    files = publish(hub_server, tmp_path, n=2)
    assert run(tmp_path, "--token", hub_server.token, "--keep-downloads") == 0
    kept = tmp_path / "d" / "metadata" / ".downloads" / "multi"
    assert {n: (kept / n).read_bytes() for n in files} == files


def test_token_from_environment_is_used_and_never_shown(hub_server, tmp_path, capsys, monkeypatch):
    publish(hub_server, tmp_path, n=2)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    assert run(tmp_path) == 0
    out, err = capsys.readouterr()
    assert hub_server.token not in out + err
    for path in (tmp_path / "d").rglob("*"):
        if path.is_file():
            assert hub_server.token.encode() not in path.read_bytes(), path
    assert all(h.get("authorization") == f"Bearer {hub_server.token}" for _, _, h in hub_server.requests)


def test_bad_token_is_one_line_exit_2_and_not_echoed(hub_server, tmp_path, capsys):
    publish(hub_server, tmp_path)
    assert run(tmp_path, "--token", "hf_thisTokenIsWrong") == 2
    out, err = capsys.readouterr()
    assert err.strip() == ("error: the Hugging Face Hub refused this token (401): check --token or HF_TOKEN, "
                           "or log in again with `hf auth login`")
    assert "hf_thisTokenIsWrong" not in out + err


def test_no_token_anywhere_says_how_to_give_one(hub_server, tmp_path, capsys):
    publish(hub_server, tmp_path)
    assert run(tmp_path) == 2
    assert error_line(capsys).startswith("error: no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")


def test_gated_terms_not_accepted_is_one_line_exit_2(hub_server, tmp_path, capsys):
    publish(hub_server, tmp_path)
    assert run(tmp_path, "--token", hub_server.unaccepted_token) == 2
    assert error_line(capsys) == (f"error: {REPO} is gated and this account has not accepted its terms: open "
                                  f"{hub_server.url}/datasets/{REPO}, accept the conditions, then re-run")
    assert not list((tmp_path / "d" / "metadata").glob("part-*.parquet"))


def test_unknown_repo_is_one_line_exit_2(hub_server, tmp_path, capsys):
    assert run(tmp_path, "--token", hub_server.token, "--repo", "laion/no-such-dataset") == 2
    assert error_line(capsys) == ("error: dataset laion/no-such-dataset was not found on the Hub (or this token "
                                  "cannot see it): check --repo / --subset")


def test_subset_and_variant_pick_the_relaion_repo(hub_server, tmp_path):
    repo = RELAION_REPOS[("en", "research")]
    publish(hub_server, tmp_path, n=1, repo=repo)
    assert run(tmp_path, "--token", hub_server.token, "--subset", "en", "--variant", "research") == 0
    assert any(f"/datasets/{repo}/resolve/" in p for _, p, _ in hub_server.requests)


def test_a_corrupt_shard_on_the_hub_is_skipped_and_the_run_goes_on(hub_server, tmp_path, capsys):
    good = publish(hub_server, n=1)
    bad = sorted(good)[0].replace("part-00000-", "part-00001-")
    hub_server.add_repo(REPO, {**good, bad: b"PAR1 truncated download"}, gated=True)
    assert run(tmp_path, "--token", hub_server.token) == 0
    doc = json.loads((tmp_path / "d" / "metadata" / "_stats.json").read_text())
    assert doc["files_done"] == 1 and doc["files_failed"][0] == {"file": bad, "subset": "multi",
                                                                 "reason": doc["files_failed"][0]["reason"]}
    assert f"skipped {bad}: ArrowInvalid" in capsys.readouterr().err


def test_unreachable_hub_is_one_line_exit_2(hub_server, tmp_path, capsys):
    url = hub_server.url
    hub_server.stop()  # the port now refuses connections
    assert run(tmp_path, "--token", hub_server.token) == 2
    assert error_line(capsys) == (f"error: cannot reach the Hugging Face Hub at {url} (ConnectError): check the "
                                  "network, or use --source with local copies of the files")
