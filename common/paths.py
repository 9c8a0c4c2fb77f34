"""Every file the steps hand to each other, defined once.

Scripts never write a path literal: they build a `DataTree` from `--data-dir` and ask it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path("data")
STATS_NAME = "_stats.json"
GRID_LEVELS = (16, 32, 64, 128, 256)

_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_=\-]{1,100}$")


def part_name(n: int) -> str:
    return f"part-{n:05d}.parquet"


def is_row_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


@dataclass(frozen=True)
class DataTree:
    """The data folder of one city (or one image collection)."""

    root: Path

    @classmethod
    def at(cls, data_dir: str | Path | None) -> "DataTree":
        return cls(Path(data_dir) if data_dir else DEFAULT_DATA_DIR)

    # ---------------------------------------------------------------- step folders
    @property
    def metadata(self) -> Path:
        return self.root / "metadata"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def metadata_cleaned(self) -> Path:
        return self.root / "metadata_cleaned"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def projection(self) -> Path:
        return self.root / "projection"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def miro(self) -> Path:
        return self.root / "miro"

    # ---------------------------------------------------------------- 01 / 03
    def metadata_part(self, n: int) -> Path:
        return self.metadata / part_name(n)

    @property
    def downloads(self) -> Path:
        """01's downloads in progress; each file is deleted once filtered (unless --keep-downloads)."""
        return self.metadata / ".downloads"

    def cleaned_part(self, n: int) -> Path:
        return self.metadata_cleaned / part_name(n)

    @property
    def excluded_file(self) -> Path:
        return self.metadata_cleaned / "excluded.parquet"

    def excluded_part(self, n: int) -> Path:
        """Removed rows of one input part; step 03 joins them into excluded.parquet at the end."""
        return self.metadata_cleaned / "excluded_parts" / part_name(n)

    # ---------------------------------------------------------------- 02 / 04
    def analysis_csv(self, name: str) -> Path:
        """words, bigrams, trigrams, top_domains, domain_categories."""
        return self.analysis / f"{name}.csv"

    def analysis_chart(self, name: str) -> Path:
        return self.analysis / f"{name}.png"

    def analysis_stats(self, name: str) -> Path:
        """Steps 02 and 04 share analysis/, so each keeps its own stats file: _stats_text.json, _stats_urls.json."""
        return self.analysis / f"_stats_{name}.json"

    # ---------------------------------------------------------------- 05
    def thumbnail(self, row_id: str) -> Path:
        assert is_row_id(row_id), f"not a row id: {row_id!r}"
        return self.images / f"{row_id}.jpg"

    def original_image(self, row_id: str, ext: str) -> Path:
        """A downloaded original (kept only when asked); `ext` comes from the decoded format."""
        assert is_row_id(row_id), f"not a row id: {row_id!r}"
        assert ext.isalnum() and len(ext) <= 5, f"not a file extension: {ext!r}"
        return self.images / "originals" / f"{row_id}.{ext}"

    def embeddings_file(self, n: int) -> Path:
        return self.embeddings / f"embeddings-{n:05d}.npy"

    def index_file(self, n: int) -> Path:
        return self.embeddings / f"index-{n:05d}.parquet"

    @property
    def embeddings_previous(self) -> Path:
        """Shards a run of 05 rewrites, kept until it ends so their vectors can be reused."""
        return self.embeddings / ".previous"

    @property
    def tags_file(self) -> Path:
        return self.embeddings / "tags.csv"

    # ---------------------------------------------------------------- 06
    @property
    def projection_file(self) -> Path:
        return self.projection / "umap_projection.parquet"

    @property
    def tag_nodes_file(self) -> Path:
        return self.projection / "tag_nodes.parquet"

    # ---------------------------------------------------------------- 07
    def export_thumbnail(self, row_id: str, size: int = 256) -> Path:
        assert is_row_id(row_id), f"not a row id: {row_id!r}"
        return self.export / "images" / str(size) / f"{row_id}.jpg"

    def grid_file(self, level: int) -> Path:
        return self.export / f"grid_{level}.json"

    @property
    def manifest_file(self) -> Path:
        return self.export / "manifest.json"

    @property
    def sprites_dir(self) -> Path:
        return self.export / "sprites"

    @property
    def gexf_file(self) -> Path:
        return self.export / "network.gexf"

    @property
    def nodes_csv(self) -> Path:
        return self.export / "nodes.csv"

    @property
    def edges_csv(self) -> Path:
        return self.export / "edges.csv"

    @property
    def poster_file(self) -> Path:
        return self.export / "map.png"

    # ---------------------------------------------------------------- 08
    def miro_ledger(self, board_id: str) -> Path:
        """Board ids look like 'uXjVOabc123='; anything else is hashed, never used as a path."""
        name = board_id if _SAFE_NAME_RE.match(board_id) else hashlib.sha1(board_id.encode()).hexdigest()
        return self.miro / f"{name}.json"


def stats_file(folder: Path) -> Path:
    return folder / STATS_NAME
