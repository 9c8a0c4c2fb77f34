"""Step 01 reads several RE-LAION-5B subsets into one tree (loopback Hub with the three repos)."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from common.columns import RELAION_REPOS, RELAION_SUBSETS, row_id
from common.match import compile_keywords, first_match
from tests.conftest import load_step
from tests.hub_server import hub_server  # noqa: F401

step = load_step("01_download_and_filter")
REPOS = {subset: RELAION_REPOS[(subset, "research-safe")] for subset in RELAION_SUBSETS}
FIRST_PART = {"multi": 0, "en": 10_000, "nolang": 20_000}
CITY = {"multi": "Lisboa", "en": "Lisbon", "nolang": "Lisbon"}


def publish_three(hub, parts: int = 2) -> dict[str, dict[str, bytes]]:
    """The three subsets; the same Spark job uuid in each, so their file names are the same too."""
    return {subset: hub.add_relaion(repo, parts=parts, rows=200, city=CITY[subset], seed=i)
            for i, (subset, repo) in enumerate(REPOS.items())}


def run(tmp_path, *args, keywords=("Lisbon", "Lisboa")):
    return step.main(["--data-dir", str(tmp_path / "d"), "--keywords", *keywords, *map(str, args)])


def parts(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "d" / "metadata").glob("part-*.parquet"))


def read(tmp_path, name: str) -> pa.Table:
    return pq.read_table(tmp_path / "d" / "metadata" / name)


def expected(files: dict[str, bytes], name: str) -> list[str]:
    patterns = compile_keywords(["Lisbon", "Lisboa"])
    rows = pq.read_table(pa.BufferReader(files[name])).to_pylist()
    return [row_id(r["url"]) for r in rows if r["url"] and first_match(patterns, r["caption"])]


def stats(tmp_path) -> dict:
    return json.loads((tmp_path / "d" / "metadata" / "_stats.json").read_text())


def fetched(hub) -> list[str]:
    return [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]


def test_subset_all_reads_every_subset_into_one_tree_with_a_subset_column(hub_server, tmp_path):
    published = publish_three(hub_server)
    assert run(tmp_path, "--token", hub_server.token, "--subset", "all") == 0
    assert parts(tmp_path) == [f"part-{FIRST_PART[s] + i:05d}.parquet" for s in RELAION_SUBSETS for i in range(2)]
    for subset, files in published.items():
        for i, name in enumerate(sorted(files)):
            t = read(tmp_path, f"part-{FIRST_PART[subset] + i:05d}.parquet")
            assert t["id"].to_pylist() == expected(files, name)
            assert set(t["subset"].to_pylist()) == {subset} and set(t["source_file"].to_pylist()) == {name}
    assert sorted(fetched(hub_server)) == sorted(f"/datasets/{REPOS[s]}/resolve/main/{n}"
                                                 for s, files in published.items() for n in files)


def test_stats_count_per_subset_and_in_total(hub_server, tmp_path):
    publish_three(hub_server)
    assert run(tmp_path, "--token", hub_server.token, "--subset", "en,nolang", "multi") == 0
    doc = stats(tmp_path)
    per = doc["per_subset"]
    assert list(per) == ["multi", "en", "nolang"]
    for subset in RELAION_SUBSETS:
        rows = pa.concat_tables([read(tmp_path, f"part-{FIRST_PART[subset] + i:05d}.parquet") for i in range(2)])
        assert per[subset]["rows_written"] == len(rows) > 0
        assert per[subset]["files_done"] == 2 and per[subset]["rows_scanned"] == 400
    assert doc["rows_out"] == sum(p["rows_written"] for p in per.values())
    assert doc["rows_in"] == 1200 and doc["files_done"] == 6
    for keyword in ("Lisbon", "Lisboa"):
        assert doc["matched_per_keyword"][keyword] == sum(p["matched_per_keyword"][keyword] for p in per.values())
    assert doc["source"] == ", ".join(f"{REPOS[s]} (2 parquet files)" for s in RELAION_SUBSETS) + ", as loopback-user"


def test_a_subset_added_later_fetches_only_its_files_and_the_tree_holds_the_union(hub_server, tmp_path, capsys):
    published = publish_three(hub_server)
    assert run(tmp_path, "--token", hub_server.token, "--subset", "multi") == 0
    multi_parts = {name: (tmp_path / "d" / "metadata" / name).stat().st_mtime_ns for name in parts(tmp_path)}
    hub_server.requests.clear()
    assert run(tmp_path, "--token", hub_server.token, "--subset", "en") == 0
    assert sorted(fetched(hub_server)) == sorted(f"/datasets/{REPOS['en']}/resolve/main/{n}" for n in published["en"])
    assert parts(tmp_path) == sorted([*multi_parts, "part-10000.parquet", "part-10001.parquet"])
    assert all((tmp_path / "d" / "metadata" / n).stat().st_mtime_ns == t for n, t in multi_parts.items())
    doc = stats(tmp_path)
    assert list(doc["per_subset"]) == ["multi", "en"] and doc["files_done"] == 4
    # then all: only nolang is new
    hub_server.requests.clear()
    capsys.readouterr()
    assert run(tmp_path, "--token", hub_server.token, "--subset", "all") == 0
    assert "skipping 4 finished file(s) of 6" in capsys.readouterr().out
    assert all(f"/datasets/{REPOS['nolang']}/" in p for p in fetched(hub_server)) and len(fetched(hub_server)) == 2
    assert list(stats(tmp_path)["per_subset"]) == ["multi", "en", "nolang"]


def test_the_same_file_fills_the_same_part_whichever_subsets_a_run_reads(hub_server, tmp_path):
    publish_three(hub_server)
    assert run(tmp_path / "alone", "--token", hub_server.token, "--subset", "nolang") == 0
    assert run(tmp_path / "all", "--token", hub_server.token, "--subset", "all") == 0
    alone = parts(tmp_path / "alone")
    assert alone == ["part-20000.parquet", "part-20001.parquet"]
    for name in alone:
        assert read(tmp_path / "alone", name).equals(read(tmp_path / "all", name))


def test_other_keywords_for_a_new_subset_are_refused(hub_server, tmp_path, capsys):
    publish_three(hub_server)
    assert run(tmp_path, "--token", hub_server.token, "--subset", "multi") == 0
    capsys.readouterr()
    assert run(tmp_path, "--token", hub_server.token, "--subset", "en", keywords=("Porto",)) == 2
    first = tmp_path / "d" / "metadata" / "part-00000.parquet"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {first} was made with other keywords/--match: pass --overwrite to redo the tree, "
        "or use another --data-dir")
    assert parts(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]


def test_a_mirror_with_repo_is_labelled_with_its_subset(hub_server, tmp_path):
    files = hub_server.add_relaion("someone/relaion-en-mirror", parts=1, rows=200, city="Lisbon", gated=False)
    assert run(tmp_path, "--token", hub_server.token, "--subset", "en", "--repo", "someone/relaion-en-mirror") == 0
    t = read(tmp_path, "part-10000.parquet")
    assert set(t["subset"].to_pylist()) == {"en"} and t["id"].to_pylist() == expected(files, sorted(files)[0])


def test_local_files_carry_a_subset_column_only_when_one_is_named(hub_server, tmp_path):
    files = hub_server.add_relaion(REPOS["en"], parts=1, rows=200, city="Lisbon")
    (name, data), = files.items()
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / name).write_bytes(data)
    assert run(tmp_path / "plain", "--source", tmp_path / "copy") == 0
    assert "subset" not in read(tmp_path / "plain", "part-00000.parquet").column_names
    assert "per_subset" not in stats(tmp_path / "plain")
    assert run(tmp_path / "en", "--source", tmp_path / "copy", "--subset", "en") == 0
    t = read(tmp_path / "en", "part-10000.parquet")
    assert set(t["subset"].to_pylist()) == {"en"} and t["id"].to_pylist() == expected(files, name)
    assert stats(tmp_path / "en")["per_subset"]["en"]["rows_written"] == len(t)
