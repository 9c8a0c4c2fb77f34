"""Step 05's unit of work: one input shard -> index-NNNNN.parquet + embeddings-NNNNN.npy.

`process_shard` is a plain function of the shard's input rows and a context (the model, the image
source, the settings): it downloads or reuses each image's thumbnail, embeds it and writes the
shard atomically. Step 05 runs shards one after another with fetch threads inside; Ray
(common/ray_runner.py) runs the same function on actors that hold the model, after CPU tasks
have stored the thumbnails with `fetch_thumbnails` (the two stages meet in the data tree).
"""
from __future__ import annotations

import concurrent.futures as cf
from collections import Counter

import pyarrow as pa

from common import embedding_shards as shards
from common.embedding_reuse import Reuse
from common.download_embed import ImageSource, Outcome, embed_images, prepare_row, stack_in_order
from common.fetch import Fetcher
from common.paths import DataTree

SUCCESS = shards.SUCCESS


def make_fetcher(args, input_size: int, host_slots=None) -> Fetcher:
    """`host_slots`: where the --per-host cap is counted (default: among this fetcher's threads)."""
    allow = True if args.allow_private_hosts == [] else (args.allow_private_hosts or False)
    return Fetcher(timeout=args.timeout, retries=args.retries, respect_noai=args.respect_noai,
                   allow_private_hosts=allow, max_bytes=int(args.max_mb * 1e6), max_pixels=args.max_pixels,
                   per_host=args.per_host, draft_size=max(args.thumb_size, input_size),
                   keep_bytes=args.keep_images, pool_size=args.workers, host_slots=host_slots)


def shard_context(args, tree: DataTree, clip, reuse: Reuse | None = None) -> dict:
    """What process_shard needs besides the rows; close ctx["source"].fetcher when done. `reuse`:
    earlier vectors and permanent failures by id (common/embedding_reuse.py), taken before any fetch."""
    return {"tree": tree, "clip": clip, "workers": args.workers, "reuse": reuse or Reuse(),
            "batch_size": args.batch_size or (256 if clip.device.startswith("cuda") else 32),
            "meta": {"model": clip.name, "pretrained": clip.pretrained, "dim": clip.dim},
            "source": ImageSource(tree, make_fetcher(args, clip.input_size), args.thumb_size, clip.input_size,
                                  args.keep_images)}


def shard_items(table: pa.Table, memo: dict) -> dict[str, str]:
    """id -> URL of the shard's rows that have both, once each, except those already failed this run."""
    ids, urls = table.column("id").to_pylist(), table.column("url").to_pylist()
    return {i: u for i, u in zip(ids, urls) if i and u and i not in memo}


def process_shard(n: int, table: pa.Table, ctx: dict, memo: dict) -> Counter:
    ids = table.column("id").to_pylist()
    todo = shard_items(table, memo)
    reused, reused_failed = ctx.get("reuse", Reuse()).take(list(todo))  # earlier runs' work, whatever its shard
    todo = {i: u for i, u in todo.items() if i not in reused and i not in reused_failed}
    outcomes, vectors, counts = embed_images(list(todo.items()), ctx["source"], ctx["clip"], ctx["workers"],
                                             ctx["batch_size"], desc=f"shard {n:05d}")
    memo.update({i: o for i, o in outcomes.items() if o.status != SUCCESS})  # failed once: not again this run
    outcomes = {**memo, **reused_failed, **{i: Outcome(SUCCESS) for i in reused}, **outcomes}
    vectors.update(reused)
    counts.update(reused=len(reused), reused_failures=len(reused_failed))
    status = [outcomes[i].status if i in outcomes else "bad_url" for i in ids]
    error = [outcomes[i].error if i in outcomes else "row has no URL" for i in ids]
    table = table.drop_columns([c for c in ("status", "error") if c in table.column_names])
    index = table.append_column("status", pa.array(status, pa.string())).append_column("error", pa.array(error, pa.string()))
    ok_ids = [i for i, s in zip(ids, status) if s == SUCCESS]
    shards.write_shard(ctx["tree"], n, index, stack_in_order(ok_ids, vectors, ctx["clip"].dim), ctx["meta"])
    counts.update(status)
    return counts


def fetch_thumbnails(items: dict[str, str], source: ImageSource, workers: int) -> tuple[dict[str, Outcome], Counter]:
    """Store the thumbnail of every id -> URL not yet on disk: (outcome per failed id, counts).

    The first stage of process_shard on its own, for engines that place it apart from the model;
    process_shard then finds every thumbnail cached."""
    failed, counts = {}, Counter()
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        for row_id, outcome, pixels in pool.map(lambda item: prepare_row(source, *item), items.items()):
            counts["cached" if outcome.cached else ("downloaded" if pixels is not None else "failed")] += 1
            if pixels is None:
                failed[row_id] = outcome
    return failed, counts
