"""Atomic writes and streaming reads of the shard files the steps hand to each other."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:  # pyarrow is imported where parquet is read or written: embedding images needs none
    import pyarrow as pa

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_json(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def list_parts(folder: Path, pattern: str = "part-*.parquet") -> list[Path]:
    """Finished shards in name order; half-written `*.tmp` files never match."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(pattern) if not p.name.endswith(TMP_SUFFIX)) if folder.is_dir() else []


def require_parts(folder: Path, earlier_step: str) -> list[Path]:
    """The finished shards of `folder`, or the one-line error that says which step makes them."""
    from common.cli import UserError

    parts = list_parts(folder)
    if not parts:
        raise UserError(f"no part-*.parquet files in {folder}: run {earlier_step} first, "
                        "or point --input_dir at a folder of parquet parts")
    return parts


def iter_batches(paths: Sequence[Path], columns: Sequence[str] | None = None,
                 batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Stream record batches from parquet files: memory is bounded by one batch, not the dataset."""
    import pyarrow.parquet as pq

    for path in paths:
        pf = pq.ParquetFile(path)
        cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
        yield from pf.iter_batches(batch_size=batch_size, columns=cols)


def count_rows(paths: Sequence[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
