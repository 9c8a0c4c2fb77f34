"""Export the map for the web viewer, for Gephi and as a poster.

Reads step 06's projection (data/projection/umap_projection.parquet), step 05's embeddings and
thumbnails (data/embeddings/, data/images/) and, when present, its image-tag edges (tags.csv)
and step 06's tag layout (tag_nodes.parquet). Writes data/export/:
  grid_{16,32,64,128,256}.json                one record per non-empty cell: count, and a
                                              representative (the member closest to the cell's mean
                                              embedding among those with a thumbnail; a coarse cell's
                                              is one of its children's, so zooming does not flicker)
  rows/{tx}_{ty}.json                         every row, in 16x16 tiles by map position
  images/256/<id>.jpg                         thumbnails (hard links to step 05's cache when possible;
                                              missing ones downloaded)
  sprites/{level}-NNN.jpg                     sprite sheets of each level's representatives (64 px tiles)
  nodes.csv, edges.csv, network.gexf          the image-tag network for Gephi (node column `image`)
  map.png                                     the poster: images at their positions, sized by density
  index.html + the viewer                     copied from web/, so the folder is self-contained
  _stats.json, then manifest.json (last: its presence means the export is complete)

Example:
  python 07_export_for_web.py --data-dir data/madrid --poster-size 8000
  python -m http.server -d data/madrid/export 8000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from common import grid
from common.export import gephi, poster, sprites
from common.export import rows as export_rows, thumbs as export_thumbs, web as web_export
from common import embedding_means as em
from common.cli import UserError, add_overwrite, entrypoint, parser
from common.fetch import Fetcher
from common.files import read_json, write_json
from common.paths import GRID_LEVELS, DataTree, stats_file
from common.stats import StepStats, public_params

STEP = "07_export_for_web"
WEB_DIR = Path(__file__).resolve().parent / "web"
DEFAULT_POSTER = 4000
POSTER_RANGE = (500, 16000)
DEFAULT_GEPHI_IMAGES = 50_000


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--levels", type=int, nargs="+", default=list(GRID_LEVELS),
                   help="grid levels, cells per side, powers of two (default: 16 32 64 128 256)")
    p.add_argument("--title", default=None, help="title shown by the viewer and on the poster "
                   "(default: the data folder's name)")
    p.add_argument("--poster-size", "--poster_size", dest="poster_size", type=int, default=DEFAULT_POSTER,
                   help=f"long side of map.png in px (cropped to the data), e.g. 8000 for print "
                        f"(default {DEFAULT_POSTER}; 0: no poster)")
    p.add_argument("--sprite-tile", "--sprite_tile", dest="sprite_tile", type=int, default=sprites.TILE,
                   help=f"side of one image in the sprite sheets, px (default {sprites.TILE})")
    p.add_argument("--gephi", action=argparse.BooleanOptionalAction, default=True,
                   help="write nodes.csv, edges.csv and network.gexf (default: yes)")
    p.add_argument("--gephi-max-images", "--gephi_max_images", dest="gephi_max_images", type=int,
                   default=DEFAULT_GEPHI_IMAGES, help="at most this many image nodes in the Gephi files: every "
                   f"cell's representative first, then others by id (default {DEFAULT_GEPHI_IMAGES:,}; 0: all)")
    p.add_argument("--download-missing", "--download_missing", dest="download_missing",
                   action=argparse.BooleanOptionalAction, default=True,
                   help="download thumbnails that step 05's cache lacks (default: yes)")
    p.add_argument("--allow-private-hosts", "--allow_private_hosts", dest="allow_private_hosts",
                   action="store_true", help="allow image URLs on private or loopback addresses (tests, intranets)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an image server (default 10)")
    p.add_argument("--retries", type=int, default=2, help="retries per image after a transient failure (default 2)")
    p.add_argument("--web-dir", "--web_dir", dest="web_dir", default=str(WEB_DIR),
                   help="the viewer to copy into the export (default: this repository's web/)")
    add_overwrite(p)
    return p


def check_args(args) -> None:
    args.levels = grid.check_levels(args.levels)
    if args.poster_size and not POSTER_RANGE[0] <= args.poster_size <= POSTER_RANGE[1]:
        raise UserError(f"--poster-size {args.poster_size}: use {POSTER_RANGE[0]} to {POSTER_RANGE[1]} px, "
                        "or 0 for no poster")
    if not 4 <= args.sprite_tile <= 256:
        raise UserError(f"--sprite-tile {args.sprite_tile}: use 4 to 256 px")
    if args.gephi_max_images < 0 or args.retries < 0 or args.timeout <= 0:
        raise UserError("--gephi-max-images and --retries must be 0 or more, --timeout more than 0")


def input_fingerprint(tree: DataTree, web_dir: Path) -> dict:
    """Size and mtime of every input (the viewer too): unchanged inputs and flags leave nothing to do."""
    paths = [tree.projection_file, tree.tags_file, tree.tag_nodes_file, tree.images,
             *sorted(tree.embeddings.glob("*-*.npy")), *sorted(tree.embeddings.glob("index-*.parquet")),
             *sorted(p for p in web_dir.rglob("*") if p.is_file())]
    return {p.as_posix(): [p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns]
            for p in paths if p.exists()}


def up_to_date(tree: DataTree, params: dict, inputs: dict) -> bool:
    if not (tree.manifest_file.is_file() and stats_file(tree.export).is_file()):
        return False
    previous = read_json(stats_file(tree.export))
    return previous.get("parameters") == params and previous.get("inputs") == inputs


def thumbnails(args, tree: DataTree, rows) -> dict:
    """Mark rows with a thumbnail; download the missing ones when allowed; hard-link the cached ones.

    A row without a thumbnail stays in the export (its cell shows a dot); the outcomes are counted.
    """
    cached = export_rows.cached_thumbnail_ids(tree.images)
    exported = export_rows.cached_thumbnail_ids(tree.export / "images" / str(export_thumbs.THUMB_SIZE))
    in_cache = np.fromiter((i in cached for i in rows.ids), bool, len(rows))
    in_export = np.fromiter((i in exported for i in rows.ids), bool, len(rows)) & ~in_cache
    missing = np.flatnonzero(~in_cache & ~in_export)
    outcomes = {"in step 05's cache": int(in_cache.sum()), "already exported": int(in_export.sum())}
    if len(missing) and args.download_missing:
        fetcher = Fetcher(timeout=args.timeout, retries=args.retries, allow_private_hosts=args.allow_private_hosts)
        todo = [(rows.url[k], tree.export_thumbnail(rows.ids[k])) for k in missing.tolist()]
        done, statuses, first_errors = export_thumbs.download_missing(todo, fetcher)
        in_export[missing[sorted(done)]] = True
        outcomes.update({f"download {k}": v for k, v in sorted(statuses.items())})
        outcomes["download errors, first of each"] = first_errors
        print(f"downloaded {len(done):,} of {len(missing):,} missing thumbnails")
    elif len(missing):
        outcomes["missing, not downloaded"] = len(missing)
    pairs = [(tree.thumbnail(i), tree.export_thumbnail(i)) for i in rows.ids[in_cache].tolist()]
    counts, unusable = export_thumbs.export_thumbnails(pairs, exported, args.overwrite)
    print("thumbnails: " + ", ".join(f"{n:,} {how}" for how, n in sorted(counts.items()) if n))
    if unusable:
        in_cache &= np.fromiter((i not in unusable for i in rows.ids), bool, len(rows))
        outcomes["unusable in step 05's cache"] = len(unusable)
    rows.has_thumb = in_cache | in_export
    outcomes["without a thumbnail"] = int((~rows.has_thumb).sum())
    return outcomes


def write_sprites(args, tree: DataTree, rows, levels: dict) -> tuple[dict, list[str]]:
    meta, jobs = {}, []
    for size, level in levels.items():
        with_sprite = np.flatnonzero(level.sprite >= 0)
        ids = rows.ids[level.rep[with_sprite[np.argsort(level.sprite[with_sprite])]]].tolist()
        columns = sprites.columns_for(args.sprite_tile)
        level_jobs = sprites.sheet_jobs(size, [tree.export_thumbnail(i) for i in ids], tree.sprites_dir,
                                        args.sprite_tile, columns)
        meta[size] = {"tile": args.sprite_tile, "columns": columns,
                      "sheets": [f"sprites/{job[1].name}" for job in level_jobs]}
        jobs += level_jobs
    unreadable = sprites.write_sheets(jobs)
    if unreadable:
        print(f"sprites: {unreadable:,} thumbnails could not be read (their tiles are blank)")
    return meta, [name for m in meta.values() for name in m["sheets"]]


def write_gephi(args, tree: DataTree, rows, levels: dict) -> list[str]:
    base = levels[grid.base_level(levels)]
    density = base.count[base.row_cell]
    # a capped network keeps what the map shows: coarse representatives, then finer ones, then the rest
    order = np.concatenate([levels[s].rep for s in sorted(levels)] + [np.arange(len(rows))])
    _, first = np.unique(order, return_index=True)
    chosen = order[np.sort(first)]
    if args.gephi_max_images and len(chosen) > args.gephi_max_images:
        chosen = chosen[:args.gephi_max_images]
        print(f"gephi: {len(chosen):,} of {len(rows):,} images (--gephi-max-images; representatives first)")
    chosen = np.sort(chosen)
    net = gephi.build_network(rows.ids[chosen], rows.caption[chosen], rows.x[chosen], rows.sy[chosen],
                              rows.cluster[chosen], rows.cluster_label[chosen], rows.has_thumb[chosen],
                              density[chosen], tree.tags_file, tree.tag_nodes_file)
    gephi.write_csvs(net, tree.nodes_csv, tree.edges_csv)
    gephi.write_gexf(net, tree.gexf_file, args.title)
    print(f"gephi: {len(net.colors):,} nodes, {len(net.edges):,} edges -> {tree.gexf_file}")
    return ["nodes.csv", "edges.csv", "network.gexf"]


def read_rows(args, tree: DataTree, stats: StepStats):
    rows = export_rows.load_rows(tree)
    for reason, n in rows.dropped.items():
        stats.drop(reason, n)
    stats.rows_in = len(rows) + sum(rows.dropped.values())
    for note in rows.notes:
        print(f"note: {note}")
    category_source = export_rows.attach_domains(rows, tree)
    return rows, category_source, thumbnails(args, tree, rows)


def label_source(tree: DataTree) -> dict:
    """Where step 06's cluster names come from, and the note a reader must see (random weights)."""
    path = stats_file(tree.projection)
    labels = read_json(path).get("labels") if path.is_file() else None
    return labels or {"from": None, "note": None}


def write_files(args, tree: DataTree, rows, levels: dict, cluster_list: list[dict],
                labels: dict) -> tuple[dict, list[str]]:
    """Everything but the manifest; returns the sprite sheets' description and every file written."""
    sprite_meta, files = write_sprites(args, tree, rows, levels)
    for size, level in levels.items():
        web_export.write_grid(level, rows, tree.grid_file(size))
        files.append(tree.grid_file(size).name)
        print(f"grid {size}: {len(level.keys):,} cells, {int(level.sprite.max()) + 1:,} with an image")
    files += web_export.write_row_tiles(rows, tree.export)
    if args.gephi:
        files += write_gephi(args, tree, rows, levels)
    if args.poster_size:
        drawn = poster.draw_poster(tree.poster_file, args.poster_size, levels, rows.has_thumb, rows.ids,
                                   tree.export_thumbnail, cluster_list, args.title, labels.get("note"))
        files.append(tree.poster_file.name)
        width, height = drawn["size"]
        print(f"poster: {drawn['images']:,} images at level {drawn['level']}, {len(drawn['labels']):,} cluster "
              f"labels, {width:,} x {height:,} px -> {tree.poster_file}")
    files += web_export.copy_viewer(Path(args.web_dir), tree.export)
    removed = web_export.remove_stale(tree.export, set(files), ("rows", "sprites"))
    if removed:
        print(f"removed {removed:,} files a previous export left in rows/ and sprites/")
    return sprite_meta, files


@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    tree = DataTree.at(args.data_dir)
    args.title = args.title or tree.root.resolve().name
    params = {k: v for k, v in public_params(args).items() if k != "overwrite"}
    inputs = input_fingerprint(tree, Path(args.web_dir))
    if not args.overwrite and up_to_date(tree, params, inputs):
        print(f"{tree.manifest_file} is up to date with its inputs and flags: nothing to do (--overwrite redoes it)")
        return 0
    stats = StepStats(STEP)
    rows, category_source, thumb_outcomes = read_rows(args, tree, stats)
    tree.manifest_file.unlink(missing_ok=True)  # until the new one is written, the export is incomplete
    index = em.load_index(tree, rows.ids)
    method = "embedding" if index is not None else "position (no embeddings found)"
    levels = grid.build_levels(rows.x, rows.sy, rows.has_thumb, rows.cluster, index, args.levels)
    grid.assign_sprites(levels, rows.has_thumb)
    cluster_list = web_export.clusters(rows)
    labels = label_source(tree)
    sprite_meta, files = write_files(args, tree, rows, levels, cluster_list, labels)

    stats.rows_out = len(rows)
    stats.write(tree.export, params, packages=("numpy", "Pillow", "networkx"), inputs=inputs,
                thumbnails=thumb_outcomes, representative=method, notes=rows.notes)
    doc = web_export.manifest(args.title, len(rows), levels, sprite_meta, cluster_list,
                              sorted(set(rows.category.tolist())),
                              {**params, "representative": method, "categories": category_source},
                              files + ["_stats.json"], export_thumbs.THUMB_SIZE, web_export.extent(rows), labels)
    write_json(doc, tree.manifest_file)
    print(stats.summary() + f"; {thumb_outcomes['without a thumbnail']:,} rows without a thumbnail")
    print(f"open the map: python -m http.server -d {tree.export} 8000   (then http://localhost:8000/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
