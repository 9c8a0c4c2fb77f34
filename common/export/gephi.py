"""Gephi files for the image-tag network: nodes.csv, edges.csv and network.gexf.

A researcher opens network.gexf and, with the Image Preview plugin, renders nodes as images with
no spreadsheet work: every image node carries a column named exactly `image` holding its file
name (`<id>.jpg`), to be joined to the export's `images/256` folder in Preview. The GEXF is
written here rather than with networkx, whose writer numbers attribute ids "0", "1", ... (the
plugin then finds no `image` column) and writes `z="None"` for 2D positions (which its own
reader cannot parse); here the attribute id and title are both `image` and every position has z.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv

from common.cli import UserError
from common.columns import row_ids
from common.files import atomic_path

GEXF_NS = "http://www.gexf.net/1.2draft"
VIZ_NS = "http://www.gexf.net/1.2draft/viz"
LABEL_CHARS = 100
TAG_PREFIX = "tag:"
NOISE_COLOR = (170, 170, 170)
TAG_COLOR = (40, 40, 40)
# tab20: distinct, print-safe cluster colours
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
           (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
           (219, 219, 141), (158, 218, 229)]
NODE_COLUMNS = ["Id", "Label", "type", "image", "x", "y", "size", "cluster", "cluster_label"]
ATTRIBUTES = [("type", "string"), ("image", "string"), ("cluster", "integer"), ("cluster_label", "string")]
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def cluster_color(cluster: int) -> tuple[int, int, int]:
    return NOISE_COLOR if cluster < 0 else PALETTE[cluster % len(PALETTE)]


@dataclass
class Network:
    """Node table (one entry per column, equal lengths) and edge table of the image-tag network."""

    nodes: dict[str, list]
    colors: list[tuple[int, int, int]]
    edges: list[tuple[str, str, float]]


def xml_text(value) -> str:
    """An attribute value XML 1.0 can hold: control characters and lone surrogates removed."""
    return quoteattr(_XML_BAD.sub("", str(value)))


def layout_scale(n_nodes: int) -> float:
    """Gephi units across the map: about 40 per node side, so default-sized nodes do not pile up."""
    return max(1000.0, 40.0 * math.sqrt(max(n_nodes, 1)))


def write_csvs(net: Network, nodes_path: Path, edges_path: Path) -> None:
    with atomic_path(nodes_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(NODE_COLUMNS)
        w.writerows(zip(*(net.nodes[c] for c in NODE_COLUMNS)))
    with atomic_path(edges_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Source", "Target", "Weight"])
        w.writerows(net.edges)


def _node_xml(values: dict, color) -> str:
    atts = "".join(f'<attvalue for="{name}" value={xml_text(values[name])}/>' for name, _ in ATTRIBUTES)
    return (f'<node id={xml_text(values["Id"])} label={xml_text(values["Label"])}><attvalues>{atts}</attvalues>'
            f'<viz:size value="{values["size"]:.3f}"/>'
            f'<viz:position x="{values["x"]:.3f}" y="{values["y"]:.3f}" z="0.0"/>'
            f'<viz:color r="{color[0]}" g="{color[1]}" b="{color[2]}"/></node>\n')


def write_gexf(net: Network, path: Path, title: str) -> None:
    """Stream the network as GEXF 1.2 with viz positions, sizes, colours and the `image` column."""
    columns = list(net.nodes)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<gexf xmlns="{GEXF_NS}" xmlns:viz="{VIZ_NS}" version="1.2">\n'
                f'<meta><creator>City Identity Explorer</creator><description>{xml_text(title)[1:-1]}'
                '</description></meta>\n<graph mode="static" defaultedgetype="directed">\n'
                '<attributes class="node" mode="static">\n')
        for name, kind in ATTRIBUTES:
            f.write(f'<attribute id="{name}" title="{name}" type="{kind}"/>\n')
        f.write("</attributes>\n<nodes>\n")
        for values, color in zip(zip(*(net.nodes[c] for c in columns)), net.colors):
            f.write(_node_xml(dict(zip(columns, values)), color))
        f.write("</nodes>\n<edges>\n")
        for k, (source, target, weight) in enumerate(net.edges):
            f.write(f'<edge id="{k}" source={xml_text(source)} target={xml_text(target)} weight="{weight:g}"/>\n')
        f.write("</edges>\n</graph>\n</gexf>\n")


def density_sizes(count: np.ndarray, smallest: float = 4.0, largest: float = 20.0) -> np.ndarray:
    """Node sizes growing with the log of the local density, as on the poster and the Miro board."""
    top = max(float(count.max()) if len(count) else 1.0, 1.0)
    return smallest + (largest - smallest) * np.log1p(count) / math.log1p(top)


def read_tag_edges(path: Path, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image position in `ids`, tag, weight) of each edge in step 05's tags.csv whose image is exported.

    Its Source is the image's row id; a Source that is a URL (a hand-made edge table, as in the
    spreadsheet recipe) is hashed to the row id.
    """
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"Source": "string", "Target": "string", "Weight": "float64"}))
    missing = {"Source", "Target", "Weight"} - set(table.column_names)
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(sorted(missing))}: it needs Source, Target, Weight "
                        "(re-run step 05, or rename the columns)")
    source = np.asarray(table.column("Source").to_pylist(), dtype=object)
    lookup = pd.Index(ids)
    where = lookup.get_indexer(source)
    if len(source) and not (where >= 0).any():
        where = lookup.get_indexer(np.asarray(row_ids(source), dtype=object))
    keep = (where >= 0) & np.asarray(table.column("Target").is_valid())
    weight = np.nan_to_num(table.column("Weight").to_numpy(zero_copy_only=False), nan=1.0)
    target = np.asarray(table.column("Target").to_pylist(), dtype=object)
    return where[keep], target[keep], weight[keep]


def _tag_layout(tags, code, img_x, img_sy, weight, tag_nodes: Path):
    """Tag positions (screen coords) and sizes: step 06's network layout if it wrote one (sized by its
    size, weight or degree column), else the weighted mean position of each tag's images, sized by
    weighted degree."""
    w = np.clip(weight, 1e-9, None)
    wdeg = np.bincount(code, w, len(tags))
    tx = np.bincount(code, w * img_x, len(tags)) / wdeg
    tsy = np.bincount(code, w * img_sy, len(tags)) / wdeg
    size = 8.0 + 52.0 * np.sqrt(wdeg / max(wdeg.max(initial=0.0), 1e-9))
    if tag_nodes.is_file():
        laid = pd.read_parquet(tag_nodes).drop_duplicates("tag").set_index("tag")
        hit = laid.index.get_indexer(tags)
        ok = hit >= 0
        tx[ok] = laid["x"].to_numpy(float)[hit[ok]]
        tsy[ok] = 1.0 - laid["y"].to_numpy(float)[hit[ok]]
        weight_column = next((c for c in ("size", "weight", "degree") if c in laid), None)
        if weight_column and ok.any():
            s = laid[weight_column].to_numpy(float)[hit[ok]]
            size[ok] = 8.0 + 52.0 * s / max(s.max(), 1e-9)
    return tx, tsy, size


def build_network(ids, captions, x, sy, cluster, cluster_label, has_thumb, density,
                  tags_csv: Path, tag_nodes: Path) -> Network:
    """Image nodes (and tag nodes with their edges when step 05 wrote tags.csv), in Gephi units."""
    edges_img, tag_of_edge, weight = (read_tag_edges(tags_csv, ids) if tags_csv.is_file()
                                      else (np.zeros(0, int), np.zeros(0, object), np.zeros(0)))
    tags, code = np.unique(tag_of_edge.astype(str), return_inverse=True)
    tx, tsy, tsize = _tag_layout(tags, code, x[edges_img], sy[edges_img], weight, tag_nodes)
    scale = layout_scale(len(ids) + len(tags))
    tag_ids = [TAG_PREFIX + t for t in tags.tolist()]
    nodes = {
        "Id": ids.tolist() + tag_ids,
        "Label": [c[:LABEL_CHARS] for c in captions.tolist()] + tags.tolist(),
        "type": ["image"] * len(ids) + ["tag"] * len(tags),
        "image": [f"{i}.jpg" if t else "" for i, t in zip(ids.tolist(), has_thumb.tolist())] + [""] * len(tags),
        "x": (np.r_[x, tx] - 0.5) * scale,
        "y": (0.5 - np.r_[sy, tsy]) * scale,  # Gephi's y grows upward
        "size": np.r_[density_sizes(density), tsize],
        "cluster": cluster.tolist() + [-1] * len(tags),
        "cluster_label": cluster_label.tolist() + [""] * len(tags),
    }
    nodes["x"], nodes["y"], nodes["size"] = (np.round(nodes[k], 3).tolist() for k in ("x", "y", "size"))
    colors = [cluster_color(c) for c in cluster.tolist()] + [TAG_COLOR] * len(tags)
    edges = list(zip(ids[edges_img].tolist(), [tag_ids[c] for c in code.tolist()], weight.tolist()))
    return Network(nodes, colors, edges)
