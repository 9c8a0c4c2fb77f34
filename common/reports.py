"""What the analysis steps (02 words, 04 domains) share: which metadata they read, ranked CSV
tables, horizontal bar charts, and the check that lets a re-run skip an unchanged analysis."""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from common.files import atomic_path, read_json, require_parts
from common.paths import DataTree, stats_file

CHART_BARS = 30


def pick_input(tree: DataTree, input_dir: str | None) -> Path:
    """--input_dir if given; else step 03's cleaned rows once that step finished; else step 01's."""
    if input_dir:
        return Path(input_dir)
    return tree.metadata_cleaned if stats_file(tree.metadata_cleaned).exists() else tree.metadata


def input_parts(folder: Path) -> list[Path]:
    return require_parts(folder, "01_download_and_filter.py")


def fingerprint(parts: list[Path]) -> list[list]:
    """Name, size and modification time of each input part: changes when an earlier step re-ran."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in parts]


def unchanged(stats_path: Path, prints: list[list], params: dict, outputs: list[Path]) -> bool:
    """True when the last finished run read the same parts with the same parameters."""
    if not stats_path.exists() or not all(p.exists() for p in outputs):
        return False
    done = read_json(stats_path)
    return done.get("input_parts") == prints and done.get("parameters") == params


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def bar_chart(labels: list[str], values: list[float], title: str, xlabel: str, path: Path) -> None:
    """The first CHART_BARS rows as horizontal bars, largest on top. Words in scripts DejaVu Sans
    lacks (kanji, Hangul, Thai, ...) are drawn with an installed font that has them
    (common/chart_fonts.py); characters no font has are named once, and show as boxes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; chosen here, not at import, so importing configures nothing
    import matplotlib.pyplot as plt

    from common import chart_fonts

    labels, values = [str(x)[:60] for x in labels[:CHART_BARS]][::-1], list(values[:CHART_BARS])[::-1]
    fonts, missing = chart_fonts.families("".join(labels) + title + xlabel)
    chart_fonts.say_missing(missing)
    height = 0.28 * max(len(labels), 4) + 1.4
    with plt.rc_context({"font.family": fonts}), warnings.catch_warnings():
        # the missing glyphs were named above, once: not matplotlib's warning for each
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig, ax = plt.subplots(figsize=(9, height))
        ax.barh(range(len(labels)), values, color="#3b6ea5")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.01)
        # fixed room for the labels: tight_layout would draw everything twice
        fig.subplots_adjust(left=0.33, right=0.97, bottom=0.6 / height, top=1 - 0.4 / height)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)

