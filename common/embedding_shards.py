"""Step 05's shards: the input cut into numbered slices, and per slice `index-NNNNN.parquet`
(every row, with status) + `embeddings-NNNNN.npy`.

The rows of an index whose `status` is "success", in order, are the rows of the npy with the
same number. The index is written after the npy, so a shard is finished when its index exists.
Each index carries, in its parquet metadata, the model that made the embeddings: a resumed run
can refuse to mix two models in one collection.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.cells import readable
from common.cli import UserError
from common.columns import normalize, row_id
from common.files import atomic_path, iter_batches
from common.paths import DataTree, is_row_id

SUCCESS = "success"
_META_KEY = b"city_identity_explorer"
_INDEX_RE = re.compile(r"^index-(\d{5})\.parquet$")
_VECTORS_RE = re.compile(r"^embeddings-(\d{5})\.npy$")


# ---------------------------------------------------------------------------- input side
def with_ids(table: pa.Table) -> pa.Table:
    table = normalize(table)
    if "url" not in table.column_names:
        raise UserError(f"the input has no URL column (columns: {', '.join(table.column_names)}): "
                        "it needs one named url, URL, image_url or media_url")
    urls = table.column("url").to_pylist()
    ids = table.column("id").to_pylist() if "id" in table.column_names else [None] * len(urls)
    fixed = [i if isinstance(i, str) and is_row_id(i) else (row_id(u) if u else None) for i, u in zip(ids, urls)]
    column = pa.array(fixed, pa.string())
    if "id" in table.column_names:
        return table.set_column(table.column_names.index("id"), "id", column)
    return table.add_column(0, "id", column)


def iter_input_shards(parts: list[Path], shard_size: int, limit: int | None):
    """(shard number, table) in input order; shard n holds rows [n*size, (n+1)*size)."""
    buf, have, n, left = [], 0, 0, limit if limit else float("inf")
    for batch in iter_batches(parts):
        table = readable(normalize(pa.Table.from_batches([batch])))  # a collection's own file may hold bytes, lists
        table = table.slice(0, int(min(left, table.num_rows)))
        left -= table.num_rows
        buf.append(table)
        have += table.num_rows
        while have >= shard_size:
            whole = pa.concat_tables(buf, promote_options="permissive")
            yield n, with_ids(whole.slice(0, shard_size))
            n, buf = n + 1, [whole.slice(shard_size)]
            have = buf[0].num_rows
        if left <= 0:
            break
    if have:
        yield n, with_ids(pa.concat_tables(buf, promote_options="permissive"))


# ---------------------------------------------------------------------------- output side
def finished_shards(tree: DataTree) -> list[int]:
    folder = tree.embeddings
    if not folder.is_dir():
        return []
    found = (_INDEX_RE.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m and tree.embeddings_file(int(m.group(1))).exists())


def index_meta(index: Path) -> dict:
    """What an index file records about its shard (model, pretrained, ...), wherever the file is."""
    meta = pq.read_schema(index).metadata or {}
    return json.loads(meta.get(_META_KEY, b"{}"))


def shard_meta(tree: DataTree, n: int) -> dict:
    return index_meta(tree.index_file(n))


def shard_ids(tree: DataTree, n: int) -> list[str]:
    return pq.read_table(tree.index_file(n), columns=["id"]).column("id").to_pylist()


def shard_done(tree: DataTree, n: int, table: pa.Table, model_meta: dict, overwrite: bool) -> bool:
    if overwrite or not (tree.index_file(n).exists() and tree.embeddings_file(n).exists()):
        return False
    meta = shard_meta(tree, n)
    if (meta.get("model"), meta.get("pretrained")) != (model_meta["model"], model_meta["pretrained"]):
        raise UserError(f"shard {n:05d} was embedded with {meta.get('model')} ({meta.get('pretrained')}); "
                        "pass the same --model/--pretrained to resume, or --overwrite to redo everything")
    if shard_ids(tree, n) != table.column("id").to_pylist():
        print(f"shard {n:05d} was made from other rows (input, --limit or --shard-size changed): redoing it")
        return False
    return True


def write_shard(tree: DataTree, n: int, index: pa.Table, embeddings: np.ndarray, meta: dict) -> None:
    n_success = sum(1 for s in index.column("status").to_pylist() if s == SUCCESS)
    assert n_success == len(embeddings), f"shard {n}: {n_success} success rows but {len(embeddings)} embeddings"
    with atomic_path(tree.embeddings_file(n)) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, embeddings)
    schema_meta = dict(index.schema.metadata or {})
    schema_meta[_META_KEY] = json.dumps(meta).encode()
    with atomic_path(tree.index_file(n)) as tmp:
        pq.write_table(index.replace_schema_metadata(schema_meta), tmp, compression="zstd")


def read_shard(tree: DataTree, n: int, columns=None) -> tuple[pa.Table, np.ndarray]:
    """(index table, embeddings) of one finished shard."""
    index = pq.read_table(tree.index_file(n), columns=columns)
    return index, np.load(tree.embeddings_file(n))


def vector_shards(tree: DataTree) -> list[int]:
    """Numbers of the embeddings-NNNNN.npy files present (the readers after step 05 start here)."""
    folder = tree.embeddings
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for m in map(_VECTORS_RE.match, (p.name for p in folder.iterdir())) if m)


def success_index(tree: DataTree, n: int, npy_rows: int, columns=None) -> pa.Table:
    """The success rows of shard n's index, checked against its npy: one line to fix it if they disagree."""
    index_path = tree.index_file(n)
    if not index_path.is_file():
        raise UserError(f"{tree.embeddings_file(n).name} has no {index_path.name} beside it: "
                        "re-run step 05 to finish that shard")
    names = pq.read_schema(index_path).names
    for column in ("id", "status"):
        if column not in names:
            raise UserError(f"{index_path} has no {column!r} column: re-run step 05 with --overwrite")
    cols = None if columns is None else [c for c in dict.fromkeys([*columns, "id", "status"]) if c in names]
    table = pq.read_table(index_path, columns=cols)
    ok = table.filter(pc.equal(table.column("status"), SUCCESS))
    if ok.num_rows != npy_rows:
        raise UserError(f"{tree.embeddings_file(n).name} holds {npy_rows:,} vectors but {index_path.name} "
                        f"lists {ok.num_rows:,} successful rows: re-run step 05 with --overwrite")
    return ok


def iter_success(tree: DataTree, columns=("id",)) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Per finished shard: its success rows (selected columns) and their embeddings, aligned."""
    cols = list(dict.fromkeys([*columns, "status"]))
    for n in finished_shards(tree):
        index, emb = read_shard(tree, n, cols)
        ok = index.filter(pc.equal(index.column("status"), SUCCESS))
        yield ok.drop_columns(["status"]) if "status" not in columns else ok, emb
