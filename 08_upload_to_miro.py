"""Step 08: put the map on a Miro board, one image per grid cell, sized by density; safe to re-run per board.

Reads step 07's export (data/export/manifest.json, grid_{L}.json, images/256/<id>.jpg) and places,
through the official Miro REST API v2 client, one image per non-empty cell of one grid level
(positioned by cell x --spacing, the densest cells --base_width wide, sparser ones smaller down to
--min_width, so dense clusters read as a heatmap), the cluster labels as text items, and by default
a frame titled with the city, the date and the parameters. Every item the API confirms is written
to the board's ledger, data/miro/<board_id>.json: a re-run places only what is missing, an
interrupted run resumes, --replace removes this tool's previous map first. Items on the board that
this tool did not place are never touched. The token comes from --token or MIRO_TOKEN, is never
printed or written, and travels only over https (plain http only to a server on this machine).

Outputs: the items on the board; data/miro/<board_id>.json; data/miro/_stats.json (written last).

Example:
    export MIRO_TOKEN=...            # an app token with boards:read and boards:write
    python 08_upload_to_miro.py --board "https://miro.com/app/board/uXjVOabc123=/" --base_width 400
    python 08_upload_to_miro.py --board uXjVOabc123= --limit 50 --dry-run
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from tqdm import tqdm

from common.cli import UserError, entrypoint, parser
from common.miro.client import COST, CREDITS_PER_MINUTE, DEFAULT_API_URL, MiroBoard, MiroUnavailable, check_api_url
from common.miro.ledger import Ledger
from common.miro.plan import (Layout, Plan, board_id, choose_level, frame_item, image_items, label_items,
                              load_manifest, read_grid)
from common.miro.upload import Placer
from common.paths import DataTree
from common.stats import StepStats

STEP = "08_upload_to_miro"
EXIT_UNFINISHED = 1


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--token", help="Miro access token (default: the MIRO_TOKEN environment variable); never printed")
    p.add_argument("--board", help="the board id (e.g. uXjVOabc123=) or the board's URL")
    p.add_argument("--base_width", "--base-width", dest="base_width", type=float, default=400.0,
                   help="width in board pixels of the densest cells' images (default: 400)")
    p.add_argument("--min_width", "--min-width", dest="min_width", type=float, default=None,
                   help="width of the sparsest cells' images (default: a quarter of --base_width)")
    p.add_argument("--spacing", type=float, default=None,
                   help="distance in board pixels between neighbouring grid cells (default: 1.1 x --base_width)")
    p.add_argument("--limit", type=int, default=None,
                   help="place only N images, the densest cells first (useful for testing)")
    p.add_argument("--level", type=int, default=None,
                   help="grid level to place (16 to 256; default: the coarsest level with enough cells "
                        "to fill --limit, 64 without --limit)")
    p.add_argument("--frame", action=argparse.BooleanOptionalAction, default=True,
                   help="put the map in a new frame titled with the city, date and parameters (default: on)")
    p.add_argument("--labels", action=argparse.BooleanOptionalAction, default=True,
                   help="place the cluster labels as text items (default: on)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the plan (items, board extent, time the rate limit implies) and touch nothing")
    p.add_argument("--replace", action="store_true",
                   help="remove the items this tool placed on this board before, then place the map again")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: 8)")
    p.add_argument("--retries", type=int, default=5,
                   help="attempts for a request answered by a 5xx or a timeout (default: 5)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one answer (default: 60)")
    p.add_argument("--api_url", "--api-url", dest="api_url", default=DEFAULT_API_URL,
                   help=f"base URL of the Miro REST API (default: {DEFAULT_API_URL}); https, or plain http "
                        "only to this machine (the token must not travel in clear text)")
    return p


def check_args(args) -> None:
    for name in ("base_width", "spacing", "min_width", "timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name} must be a positive number, not {value:g}")
    for name in ("limit", "concurrency", "retries"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "retries" else 1):
            raise UserError(f"--{name} must be at least {0 if name == 'retries' else 1}, not {value}")
    if not args.board and not args.dry_run:
        raise UserError("--board is required: the board id (e.g. uXjVOabc123=) or the board's URL")
    args.api_url = check_api_url(args.api_url)


def make_plan(tree: DataTree, args, ledger: Ledger | None) -> Plan:
    manifest = load_manifest(tree)
    levels = sorted(int(lv) for lv in manifest["levels"])
    level = args.level
    if level is None and ledger and ledger.layout and ledger.items and not args.replace:
        level = ledger.layout["level"]          # finishing a map: keep its level whatever --limit says now
    wanted = [level] if level in levels else levels
    grids = {lv: read_grid(tree, manifest, lv) for lv in wanted}
    level = choose_level(levels, {lv: len(g) for lv, g in grids.items()}, args.limit, level)
    namespace = ledger.namespace if ledger else "00000000"
    layout = Layout(level=level, spacing=args.spacing or round(args.base_width * 1.1, 1), base_width=args.base_width,
                    min_width=min(args.min_width or args.base_width / 4, args.base_width), frame=args.frame)
    skipped: dict = {}
    images = image_items(tree, grids[level], layout, namespace, args.limit, skipped)
    labels = label_items(manifest, layout) if args.labels else []
    frame = frame_item(manifest, layout, namespace, date.today().isoformat()) if args.frame else None
    return Plan(layout, manifest.get("title") or "", frame, images, labels, len(grids[level]), skipped)


def describe(plan: Plan, ledger: Ledger | None, replace: bool) -> str:
    lay = plan.layout
    done = 0 if (ledger is None or replace) else sum(it.key in ledger for it in plan.items)
    todo = len(plan.items) - done
    deletes = len(ledger.items) if (ledger and replace) else 0
    credits = todo * COST["create"] + deletes * COST["delete"]
    widths = [it.width for it in plan.images] or [0]
    lines = [
        f"plan: level {lay.level}: {len(plan.images):,} images of {plan.cells_at_level:,} cells, "
        f"{len(plan.labels):,} labels, {'1 frame' if plan.frame else 'no frame'}",
        f"board extent: {lay.extent:,.0f} x {lay.extent:,.0f} px centred on the board origin; "
        f"image widths {min(widths):,.0f}-{max(widths):,.0f} px, spacing {lay.spacing:,.0f} px",
        f"already on the board (ledger): {done:,}; to place: {todo:,}; to remove first (--replace): {deletes:,}",
        f"rate limit: {credits:,} credits, at least {credits / CREDITS_PER_MINUTE:,.1f} min at "
        f"{CREDITS_PER_MINUTE:,} credits/min",
    ]
    if plan.skipped:
        lines.append("skipped: " + ", ".join(f"{k} {v:,}" for k, v in sorted(plan.skipped.items())))
    return "\n".join(lines)


def check_layout(ledger: Ledger, plan: Plan, replace: bool) -> None:
    if ledger.layout and ledger.items and ledger.layout != plan.layout.as_dict() and not replace:
        old = ", ".join(f"{k} {v}" for k, v in ledger.layout.items())
        raise UserError(f"board {ledger.board} already holds a map placed with {old}: re-run with the same "
                        "flags to finish it, or add --replace to remove it and place this one")


def run(board: MiroBoard, ledger: Ledger, plan: Plan, args) -> tuple[Placer, list]:
    resuming = ledger.exists and not ledger.complete
    already = sum(it.key in ledger for it in plan.items)
    with tqdm(total=len(plan.items), initial=already, desc="placing on Miro", unit="item") as bar:
        placer = Placer(board, ledger, concurrency=args.concurrency, passes=args.retries + 1, progress=bar)
        if args.replace and ledger.items:
            if resuming:
                placer.adopt([it for it in plan.items if it.key not in ledger], ledger.item_id("frame"))
            placer.remove_all()
            bar.reset(total=len(plan.items))
        ledger.start(plan.layout.as_dict())
        missing = [it for it in plan.items if it.key not in ledger]
        if resuming and missing and not args.replace:
            # a run was interrupted: items it sent may have landed unrecorded
            index = placer.board_index()
            if plan.frame and "frame" not in ledger:
                placer.adopt([plan.frame], None, index)
            placer.adopt([it for it in missing if it.kind != "frame"], ledger.item_id("frame"), index)
            bar.update(sum(it.key in ledger for it in missing))
        left = placer.place([plan.frame], None) if plan.frame else []
        if left:
            return placer, left
        parent = ledger.item_id("frame")
        left = placer.place(plan.images, parent) + placer.place(plan.labels, parent)
    return placer, left


def report(stats: StepStats, tree: DataTree, args, plan: Plan, ledger: Ledger, placer: Placer,
           unconfirmed: int) -> None:
    """`_stats.json` (last) and the one-line summary."""
    tally, gate = placer.tally, placer.board.gate
    stats.rows_in = plan.cells_at_level
    stats.rows_out = sum(1 for k in ledger.items if k.startswith("cell:"))
    for reason, n in plan.skipped.items():
        stats.drop(reason, n)
    if args.limit is not None:
        stats.drop("over_limit", max(plan.cells_at_level - len(plan.images) - sum(plan.skipped.values()), 0))
    stats.write(tree.miro, args, packages=("miro-api",), board=ledger.board, layout=plan.layout.as_dict(),
                placed=dict(tally.placed), found_after_ambiguous_answers=tally.adopted,
                duplicates_removed=tally.duplicates, removed=tally.deleted, unconfirmed=unconfirmed,
                rate_limited=gate.rate_limited, rate_limit_wait_seconds=round(gate.waited, 1),
                items_per_minute=round(placer.rate(), 1))
    kinds = ", ".join(f"{v:,} {k}" for k, v in sorted(tally.placed.items())) or "none"
    print(f"{STEP}: placed {sum(tally.placed.values()):,} new items ({kinds}), found {tally.adopted:,} already on "
          f"the board, removed {tally.deleted:,}; {placer.rate():,.0f} items/min, {gate.waited:,.1f}s waiting on the "
          f"rate limit ({gate.rate_limited:,} answers 429); ledger {ledger.path}")


@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    tree = DataTree.at(args.data_dir)
    stats = StepStats(STEP)
    board_name = board_id(args.board) if args.board else None
    ledger = Ledger.load(tree.miro_ledger(board_name), board_name) if board_name else None
    plan = make_plan(tree, args, ledger)
    if ledger:
        check_layout(ledger, plan, args.replace)
    print(describe(plan, ledger, args.replace))
    if args.dry_run:
        print("dry run: nothing was placed or written")
        return 0
    if not plan.images:
        raise UserError(f"no cell at level {plan.layout.level} has a thumbnail in {tree.export}: re-run "
                        "07_export_for_web.py (and step 05 for the thumbnails)")
    token = args.token or os.environ.get("MIRO_TOKEN")
    if not token:
        raise UserError("no Miro token: pass --token or set MIRO_TOKEN (an app token with boards:read and "
                        "boards:write, from https://miro.com/app/settings/user-profile/apps)")
    board = MiroBoard(token, board_name, args.api_url, retries=args.retries, timeout=args.timeout,
                      pool=args.concurrency + 2)
    try:
        name = board.check()
        print(f"board {board_name} ({name}): {sum(it.key in ledger for it in plan.items):,} of "
              f"{len(plan.items):,} items already placed (ledger {ledger.path}), skipping them")
        placer, left = run(board, ledger, plan, args)
    except MiroUnavailable as e:
        print(f"error: Miro did not answer usefully ({e}); every confirmed item is in {ledger.path}: "
              "run the same command again later to finish", file=sys.stderr)
        return EXIT_UNFINISHED
    ledger.finish(complete=not left)
    report(stats, tree, args, plan, ledger, placer, len(left))
    if left:
        print(f"error: {len(left):,} items are still unconfirmed after {args.retries + 1} attempts: run the same "
              "command again to finish (nothing will be placed twice)", file=sys.stderr)
        return EXIT_UNFINISHED
    return 0


if __name__ == "__main__":
    sys.exit(main())
