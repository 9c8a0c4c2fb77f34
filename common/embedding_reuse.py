"""Step 05's memory of earlier runs: a row already embedded with the same model is not fetched or
embedded again, whatever shard it falls in now.

Shards are cut by position, so dropping rows (step 03) or reading more of them (after a `--limit`
trial) moves rows between shards. At the start of a run every finished shard that will be
rewritten, or that lies past the end of the input, is retired into `embeddings/.previous/`
(linked, then renamed into place, then removed from `embeddings/`: a run killed at any moment
leaves every vector either where it was or in a complete retired pair). A lookup, id -> (file,
row), is then built over the retired pairs and the finished shards this run keeps; the shard work
copies the vectors it needs out of memory-mapped npys. `.previous/` is removed once every shard is
written; a killed run leaves it for the next one.

Only vectors made with the same model and weights are reused. Failures are reused only when
asking again cannot help (`PERMANENT`): a malformed URL, a 404 or a 410. A timeout, a 5xx, a 429,
a refused host or a file over the size caps (which depend on this run's flags) is tried again.

Memory: the lookup is 16 bytes per earlier success (ids as 64-bit integers, sorted) plus the
permanent failures' ids and errors; vectors are read per shard, never all at once.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.download_embed import Outcome
from common.embedding_shards import SUCCESS, finished_shards, index_meta
from common.paths import DataTree, is_row_id

PERMANENT = frozenset({"bad_url", "http_404", "http_410"})
_RETIRED_RE = re.compile(r"^\d+$")
INDEX, VECTORS = "index.parquet", "embeddings.npy"


def id_keys(ids: list[str]) -> np.ndarray:
    """16-hex-digit row ids as uint64 (8 bytes each instead of a Python string)."""
    if not ids:
        return np.zeros(0, np.uint64)
    return np.frombuffer(bytes.fromhex("".join(ids)), dtype=">u8").astype(np.uint64)


def _valid(ids: list) -> list[str]:
    return [i for i in ids if isinstance(i, str) and is_row_id(i)]


# ---------------------------------------------------------------------------- retiring shards
def retired_pairs(tree: DataTree) -> list[tuple[Path, Path]]:
    folder = tree.embeddings_previous
    if not folder.is_dir():
        return []
    dirs = sorted((p for p in folder.iterdir() if p.is_dir() and _RETIRED_RE.match(p.name)), key=lambda p: int(p.name))
    return [(d / INDEX, d / VECTORS) for d in dirs if (d / INDEX).is_file() and (d / VECTORS).is_file()]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links: a copy keeps the same guarantee
        shutil.copy2(src, dst)


def retire(tree: DataTree, numbers: list[int]) -> int:
    """Move finished shards `numbers` into .previous/ (each pair complete or not at all); how many moved."""
    folder = tree.embeddings_previous
    moved = 0
    for n in numbers:
        index, vectors = tree.index_file(n), tree.embeddings_file(n)
        if not (index.is_file() and vectors.is_file()):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name.split(".")[0]) for p in folder.iterdir() if p.name.split(".")[0].isdigit()]
        slot = folder / str(max(taken, default=-1) + 1)
        tmp = slot.with_name(slot.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _link_or_copy(index, tmp / INDEX)
        _link_or_copy(vectors, tmp / VECTORS)
        os.replace(tmp, slot)
        index.unlink()  # the index first: without it the shard is unfinished, and will be redone
        vectors.unlink()
        moved += 1
    return moved


def clear_partial(tree: DataTree) -> None:
    """Half-made retirements of a killed run (their originals were never removed)."""
    folder = tree.embeddings_previous
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True)


def finish(tree: DataTree) -> None:
    """Every shard is written: the retired vectors are no longer needed."""
    shutil.rmtree(tree.embeddings_previous, ignore_errors=True)


# ---------------------------------------------------------------------------- the lookup
def _model_of(index: Path) -> tuple:
    meta = index_meta(index)
    return meta.get("model"), meta.get("pretrained")


@dataclass
class Reuse:
    """id -> an earlier vector (file, row) or an earlier permanent failure. Picklable: plain arrays
    and paths, npys opened per call, so the same object serves threads and cluster workers."""

    files: list[str] = field(default_factory=list)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    where: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (file, row) per key
    failures: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @classmethod
    def build(cls, pairs: list[tuple[Path, Path]], model: tuple) -> "Reuse":
        files, keys, where, failures = [], [], [], {}
        for index, vectors in pairs:
            if _model_of(index) != model:
                continue
            table = pq.read_table(index, columns=["id", "status", "error"])
            status = table.column("status")
            ok = pc.fill_null(pc.equal(status, SUCCESS), False)
            ids = table.column("id").filter(ok).to_pylist()
            if len(ids) != np.load(vectors, mmap_mode="r").shape[0] or len(_valid(ids)) != len(ids):
                continue  # a pair that does not add up is not trusted
            keys.append(id_keys(ids))
            where.append(np.column_stack([np.full(len(ids), len(files)), np.arange(len(ids))]))
            files.append(str(vectors))
            bad = table.filter(pc.fill_null(pc.is_in(status, pa.array(sorted(PERMANENT), pa.string())), False))
            for i, s, e in zip(*(bad.column(c).to_pylist() for c in ("id", "status", "error"))):
                if i:
                    failures.setdefault(i, (s, e))
        if not keys:
            return cls(failures=failures)
        all_keys, all_where = np.concatenate(keys), np.concatenate(where)
        order = np.argsort(all_keys, kind="stable")
        all_keys, first = np.unique(all_keys[order], return_index=True)
        return cls(files, all_keys, all_where[order][first], failures)

    def __len__(self) -> int:
        return len(self.keys)

    def unknown(self, items: dict[str, str]) -> dict[str, str]:
        """The id -> URL items this lookup has nothing for (the ones still to fetch)."""
        ids = list(items)
        known = set(self.failures).intersection(ids)
        if len(self.keys) and ids:
            valid = _valid(ids)
            wanted = id_keys(valid)
            pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
            known.update(i for i, hit in zip(valid, self.keys[pos] == wanted) if hit)
        return {i: u for i, u in items.items() if i not in known}

    def take(self, ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, Outcome]]:
        """(earlier vector per id found, earlier permanent failure per id found) for these ids."""
        ids = list(dict.fromkeys(_valid(ids)))
        failed = {i: Outcome(*self.failures[i]) for i in ids if i in self.failures}
        if not len(self.keys) or not ids:
            return {}, failed
        wanted = id_keys(ids)
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        hit = self.keys[pos] == wanted
        vectors: dict[str, np.ndarray] = {}
        found = [(i, *self.where[p]) for i, p, h in zip(ids, pos, hit) if h]
        for f in sorted({f for _, f, _ in found}):
            mine = [(i, r) for i, ff, r in found if ff == f]
            array = np.load(self.files[f], mmap_mode="r")
            rows = np.asarray(array[sorted(r for _, r in mine)])
            vectors.update(zip((i for i, _ in sorted(mine, key=lambda t: t[1])), rows))
        return vectors, {i: o for i, o in failed.items() if i not in vectors}


# ---------------------------------------------------------------------------- a run's start
def prepare(tree: DataTree, redo: list[int], past_end: list[int], model: tuple, overwrite: bool) -> Reuse:
    """Retire the shards this run rewrites (and those past the input's end) and build the lookup.

    With --overwrite nothing is reused: every row is embedded again (thumbnails stay cached)."""
    clear_partial(tree)
    if overwrite:
        finish(tree)
        for n in past_end:
            for path in (tree.index_file(n), tree.embeddings_file(n)):
                path.unlink(missing_ok=True)
        return Reuse()
    retire(tree, sorted(set(redo) | set(past_end)))
    if not redo:
        finish(tree)  # nothing to write: a killed run's leftovers are of no more use
        return Reuse()
    keep = [n for n in finished_shards(tree) if n not in set(redo)]
    pairs = retired_pairs(tree) + [(tree.index_file(n), tree.embeddings_file(n)) for n in keep]
    return Reuse.build(pairs, model)

