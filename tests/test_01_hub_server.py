"""The loopback Hub behaves like the Hub for the real huggingface_hub client."""
from __future__ import annotations

import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, list_repo_files
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.hub_server import hub_server  # noqa: F401

FILES = {
    "README.md": b"# card\n",
    "data/part-00000.parquet": b"PAR1" + bytes(range(256)) * 40 + b"PAR1",
    "data/part-00001.parquet": b"PAR1second file PAR1",
    "data/sub/extra.txt": b"x",
}


def test_client_lists_a_gated_dataset_recursively(hub_server):
    hub_server.add_repo("laion/test-research", FILES, gated=True)
    files = list_repo_files("laion/test-research", repo_type="dataset", token=hub_server.token)
    assert sorted(files) == sorted(FILES)
    info = HfApi().dataset_info("laion/test-research", token=hub_server.token)
    assert info.gated == "manual" and info.sha and len(info.sha) == 40


def test_tree_listing_follows_pagination(hub_server):
    hub_server.page_size = 2
    hub_server.add_repo("org/many", {f"f{i:02d}.parquet": bytes([i]) for i in range(7)})
    entries = list(HfApi().list_repo_tree("org/many", repo_type="dataset", recursive=True))
    assert [e.path for e in entries] == [f"f{i:02d}.parquet" for i in range(7)]
    assert entries[0].lfs is not None and entries[0].size == 1
    assert sum("cursor=" in p for p in hub_server.paths_requested("GET")) == 3


def test_download_sends_head_then_get_with_bearer_token(hub_server, tmp_path):
    hub_server.add_repo("laion/test-research", FILES, gated=True)
    path = hf_hub_download("laion/test-research", "data/part-00000.parquet", repo_type="dataset",
                           token=hub_server.token, cache_dir=tmp_path)
    assert Path(path).read_bytes() == FILES["data/part-00000.parquet"]
    methods = [m for m, p, _ in hub_server.requests if "/resolve/" in p]
    assert methods == ["HEAD", "GET"]
    assert all(h.get("authorization") == f"Bearer {hub_server.token}" for _, _, h in hub_server.requests)


def test_model_repo_file_downloads_without_datasets_prefix(hub_server):
    hub_server.add_repo("org/tiny-clip", {"open_clip_config.json": b"{}"}, repo_type="model")
    path = hf_hub_download("org/tiny-clip", "open_clip_config.json")
    assert Path(path).read_bytes() == b"{}"
    assert Path(path).is_relative_to(Path(os.environ["HF_HOME"]))  # the default cache is private to the test
    assert any(p.startswith("/org/tiny-clip/resolve/main/") for p in hub_server.paths_requested("HEAD"))


def test_range_request_returns_partial_content(hub_server):
    repo = hub_server.add_repo("org/data", FILES)
    url = f"{hub_server.url}/datasets/org/data/resolve/main/data/part-00000.parquet"
    r = httpx2.get(url, headers={"Range": "bytes=4-9"})
    assert r.status_code == 206
    assert r.content == FILES["data/part-00000.parquet"][4:10]
    assert r.headers["Content-Range"] == f"bytes 4-9/{len(FILES['data/part-00000.parquet'])}"
    assert r.headers["X-Repo-Commit"] == repo.sha


def test_bad_token_is_401_and_not_a_missing_repo(hub_server, tmp_path):
    hub_server.add_repo("org/data", FILES)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi().whoami(token="hf_notAValidToken")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download("org/data", "README.md", repo_type="dataset", token="hf_wrong", cache_dir=tmp_path)
    assert err.value.response.status_code == 401
    assert not isinstance(err.value, RepositoryNotFoundError)


def test_gated_repo_without_accepted_terms_raises_gated_error(hub_server, tmp_path):
    hub_server.add_repo("laion/test-research", FILES, gated=True)
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download("laion/test-research", "README.md", repo_type="dataset",
                        token=hub_server.unaccepted_token, cache_dir=tmp_path)
    assert err.value.response.status_code == 403
    with pytest.raises(GatedRepoError) as err:
        hf_hub_download("laion/test-research", "README.md", repo_type="dataset", token=False, cache_dir=tmp_path)
    assert err.value.response.status_code == 401


def test_unknown_repo_file_and_revision_raise_their_own_errors(hub_server, tmp_path):
    hub_server.add_repo("org/data", FILES)
    with pytest.raises(RepositoryNotFoundError):
        list_repo_files("org/missing", repo_type="dataset")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/data", "nope.parquet", repo_type="dataset", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/data", "README.md", repo_type="dataset", revision="v9", cache_dir=tmp_path)


def test_paths_info_reports_files_and_folders(hub_server):
    hub_server.add_repo("org/data", FILES)
    infos = HfApi().get_paths_info("org/data", ["data", "README.md", "missing"], repo_type="dataset")
    assert sorted(i.path for i in infos) == ["README.md", "data"]


def test_a_file_on_disk_is_streamed_whole_and_by_range(hub_server, tmp_path):
    body = bytes(range(256)) * 4000 + b"tail"  # several CHUNKs
    on_disk = tmp_path / "big.parquet"
    on_disk.write_bytes(body)
    hub_server.add_repo("org/big", {"big.parquet": on_disk}, gated=True)
    path = hf_hub_download("org/big", "big.parquet", repo_type="dataset", token=hub_server.token,
                           local_dir=tmp_path / "dl")
    assert Path(path).read_bytes() == body
    url = f"{hub_server.url}/datasets/org/big/resolve/main/big.parquet"
    auth = {"Authorization": f"Bearer {hub_server.token}"}
    r = httpx2.get(url, headers={**auth, "Range": "bytes=1000000-"})
    assert r.status_code == 206 and r.content == body[1000000:]
    assert r.headers["Content-Range"] == f"bytes 1000000-{len(body) - 1}/{len(body)}"
    entry = next(iter(HfApi().list_repo_tree("org/big", repo_type="dataset", token=hub_server.token)))
    assert entry.size == len(body) and entry.lfs is not None


def test_rate_spaces_the_chunks_of_all_downloads_together(monkeypatch):
    from tests import hub_server as module

    clock, slept = [100.0], []
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(module.time, "sleep", lambda s: slept.append(round(s, 6)))
    hub = module.LoopbackHub(rate=1000.0)  # bytes per second
    for n in (500, 500, 1000):  # as if three downloads each sent a chunk at the same instant
        hub.pace(n)
    assert slept == [0.0, 0.5, 1.0]  # the link sends 500 + 500 bytes before the third chunk can go
    clock[0] = 110.0  # idle for a while: the next chunk goes at once, no burst allowance saved up
    hub.pace(1000)
    hub.pace(1)
    assert slept[3:] == [0.0, 1.0]
    module.LoopbackHub().pace(10**9)  # no rate: never waits
    assert len(slept) == 5
