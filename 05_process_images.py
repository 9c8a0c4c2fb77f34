"""Step 05: download each image once, keep a thumbnail, embed it with CLIP, and tag it.

Reads the cleaned rows of step 03 (or step 01's rows when step 03 has not run) and, shard by
shard, downloads every distinct URL (politely and safely: see common/fetch.py), keeps a thumbnail,
embeds it with CLIP and records what happened to each row. Zero-shot tags from a shipped
vocabulary make the image-tag network of the second recipe.
A re-run after re-cleaning reuses every vector already made with the same model, whatever shard
its row falls in now (common/embedding_reuse.py): only new rows are fetched and embedded.

Inputs:  data/metadata_cleaned/part-*.parquet once step 03 finished, else data/metadata/part-*.parquet
         (columns url, caption, ...; id added if missing)
Outputs: data/images/<id>.jpg                        thumbnails, long side --thumb-size
         data/embeddings/embeddings-NNNNN.npy         float16, L2-normalised, one row per success
         data/embeddings/index-NNNNN.parquet          every row of the shard + status, error
         data/embeddings/tags.csv                     Source (id), Target (tag), Weight (confidence)
         data/embeddings/_stats.json                  counts per status, images/s, model, pretrained

Example:
    python 05_process_images.py --model ViT-L/14@336px --batch-size 256 --workers 32
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from functools import partial
from pathlib import Path

from common import embedding_reuse, embedding_shards as shards
from common.cli import UserError, add_overwrite, add_ray, entrypoint, parser
from common.clip import DEFAULT_VOCAB, TEMPLATES, load_clip, pick_device, read_vocab, resolve_model
from common.concept_vectors import concept_vectors, tags_cache_file
from common.cpu_eta import TimedClip
from common.embed_shard import process_shard, shard_context
from common.files import read_json, require_parts
from common.paths import DataTree, stats_file
from common.reports import pick_input
from common.stats import StepStats
from common.tags import top_tags, write_tags_csv

DEFAULT_MODEL = "ViT-L/14@336px"
SUCCESS = shards.SUCCESS


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    a = p.add_argument
    a("--input_dir", "--input-dir", dest="input_dir",
      help="rows to process (default: <data-dir>/metadata_cleaned once step 03 finished, else <data-dir>/metadata)")
    a("--model", default=DEFAULT_MODEL, help="CLIP model: OpenAI name (ViT-L/14@336px), open_clip name "
      "(ViT-L-14-336 with --pretrained openai) or hf-hub:org/name (default: %(default)s)")
    a("--pretrained", help="open_clip weights tag or checkpoint file; 'none' = random weights for smoke "
      "tests (default: openai for OpenAI names, the repo's weights for hf-hub ids)")
    a("--batch-size", "--batch_size", dest="batch_size", type=int,
      help="images per model batch (default: 256 on a GPU, 32 on the CPU)")
    a("--workers", "--threads", dest="workers", type=int, default=16, help="download/decode threads (default: %(default)s)")
    a("--per-host", "--per_host", dest="per_host", type=int, default=8,
      help="most requests in flight to one host (default: %(default)s)")
    a("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    a("--limit", type=int, help="process only the first N rows (for trials)")
    a("--timeout", type=float, default=10.0, help="seconds to wait for a server, per attempt (default: %(default)s)")
    a("--retries", type=int, default=2,
      help="extra attempts after a 429, 5xx, timeout or dropped connection (default: %(default)s)")
    a("--thumb-size", "--thumb_size", dest="thumb_size", type=int, default=256,
      help="long side of the kept thumbnails, px; CLIP sees the thumbnail (default: %(default)s)")
    a("--keep-images", "--keep_images", dest="keep_images", action="store_true",
      help="also keep the downloaded originals under images/originals/")
    a("--allow-private-hosts", "--allow_private_hosts", dest="allow_private_hosts", nargs="*", metavar="HOST",
      help="allow private/loopback addresses: all of them, or only the HOSTs/addresses listed (local mirrors, tests)")
    a("--respect-noai", "--respect_noai", dest="respect_noai", action=argparse.BooleanOptionalAction, default=True,
      help="skip images served with X-Robots-Tag noai/noimageai (default: respect; --no-respect-noai to ignore)")
    a("--max-mb", "--max_mb", dest="max_mb", type=float, default=30.0,
      help="largest download accepted, MB (default: %(default)s)")
    a("--max-pixels", "--max_pixels", dest="max_pixels", type=int, default=60_000_000,
      help="largest image accepted, pixels (default: %(default)s)")
    a("--tags-vocab", "--tags_vocab", dest="tags_vocab", default=str(DEFAULT_VOCAB),
      help="tag vocabulary, one concept per line (default: the shipped one)")
    a("--tags-k", "--tags_k", dest="tags_k", type=int, default=5, help="tags kept per image (default: %(default)s)")
    a("--shard-size", "--shard_size", dest="shard_size", type=int, default=10_000,
      help="input rows per output shard (default: %(default)s)")
    add_ray(p, "CPU tasks fetch, one model actor per GPU embeds")
    add_overwrite(p)
    return p


def check_args(args) -> None:
    for name in ("workers", "per_host", "thumb_size", "shard_size", "max_pixels"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("batch_size", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.retries < 0 or args.timeout <= 0 or args.max_mb <= 0 or args.tags_k < 0:
        raise UserError("--retries must be >= 0; --timeout, --max-mb must be > 0; --tags-k >= 0")


# ---------------------------------------------------------------------------- input shards
def input_parts(tree: DataTree, input_dir: str | None) -> list[Path]:
    folder = pick_input(tree, input_dir)
    why = "" if input_dir else (" (step 03's cleaned rows)" if folder == tree.metadata_cleaned
                                else " (step 01's rows: step 03 has not run)")
    print(f"05: reading {folder}{why}")
    return require_parts(folder, "01_download_and_filter.py")


# ---------------------------------------------------------------------------- tags and totals
def vocab_key(vocab_path: str, k: int) -> dict:
    concepts = read_vocab(vocab_path)
    digest = hashlib.sha1("\n".join(concepts).encode("utf-8")).hexdigest()
    return {"vocabulary": str(vocab_path), "concepts": len(concepts), "sha1": digest, "k": k}


def tags_current(tree: DataTree, key: dict) -> bool:
    """tags.csv exists and was made from this vocabulary and k (the model is checked per shard)."""
    stats_path = stats_file(tree.embeddings)
    if not (tree.tags_file.exists() and stats_path.exists()):
        return False
    old = read_json(stats_path).get("tags", {})
    return all(old.get(name) == key[name] for name in ("sha1", "k"))


def write_tags(tree: DataTree, clip, key: dict) -> dict:
    concepts = read_vocab(key["vocabulary"])
    concept_emb, _ = concept_vectors(tree, clip.name, clip.pretrained, concepts, lambda: clip.encode_concepts(concepts),
                                     TEMPLATES, write_to=tags_cache_file(tree))
    seen: set[str] = set()

    def edges():
        for table, emb in shards.iter_success(tree):
            ids = table.column("id").to_pylist()
            keep = [j for j, i in enumerate(ids) if not (i in seen or seen.add(i))]  # an image once
            yield from top_tags([ids[j] for j in keep], emb[keep].astype("float32"), concepts, concept_emb,
                                clip.logit_scale, key["k"])

    count = write_tags_csv(edges(), tree.tags_file)
    return {**key, "edges": count, "images": len(seen),
            "confidence": "softmax over the vocabulary of cosine similarity x the model's logit scale"}


def totals(tree: DataTree) -> Counter:
    counts = Counter()
    for n in shards.finished_shards(tree):
        counts.update(shards.read_shard(tree, n, ["status"])[0].column("status").to_pylist())
    return counts


# ---------------------------------------------------------------------------- the run
def plan(args, tree: DataTree, parts: list[Path], meta: dict, stats: StepStats) -> tuple[list[int], list[int]]:
    """(shards to do, finished shards skipped), without loading the model."""
    todo, skipped = [], []
    for n, table in shards.iter_input_shards(parts, args.shard_size, args.limit):
        stats.rows_in += table.num_rows
        (skipped if shards.shard_done(tree, n, table, meta, args.overwrite) else todo).append(n)
    return todo, skipped


def rows_to_embed(args, parts: list[Path], todo: list[int], reuse) -> int:
    """Rows of the shards to do that no earlier run embedded or failed for good: what the model has left."""
    wanted, left = set(todo), 0
    for n, table in shards.iter_input_shards(parts, args.shard_size, args.limit):
        if n in wanted:
            left += len(reuse.unknown(dict(zip(table.column("id").to_pylist(), table.column("url").to_pylist()))))
    return left


def prepare_reuse(args, tree: DataTree, todo: list[int], skipped: list[int], model: tuple):
    """(lookup of earlier vectors, shards removed): the shards to rewrite, and those past the input's
    end (after rows were dropped), are retired into the lookup. A --limit trial leaves the latter alone."""
    last = max(todo + skipped, default=-1)
    past_end = [] if args.limit else [n for n in shards.finished_shards(tree) if n > last]
    if past_end:
        print(f"{len(past_end):,} shard(s) past the end of the input: their rows are gone or moved; removing them")
    reuse = embedding_reuse.prepare(tree, todo, past_end, model, args.overwrite)
    if len(reuse) or reuse.failures:
        print(f"reusing earlier work: {len(reuse):,} embedded images and {len(reuse.failures):,} permanent "
              f"failures ({', '.join(sorted(embedding_reuse.PERMANENT))}) from the same model")
    return reuse, past_end


def run_shards(args, tree: DataTree, parts: list[Path], todo: list[int], clip, reuse) -> Counter:
    if not clip.device.startswith("cuda"):
        print("CLIP runs on the CPU (a CUDA GPU is ~100x faster): the time it takes is measured on the first batch")
        clip = TimedClip(clip, rows_to_embed(args, parts, todo, reuse))
    ctx = shard_context(args, tree, clip, reuse)
    run, memo, wanted = Counter(), {}, set(todo)
    try:
        for n, table in shards.iter_input_shards(parts, args.shard_size, args.limit):
            if n in wanted:
                run.update(process_shard(n, table, ctx, memo))
    finally:
        ctx["source"].fetcher.close()
    embedding_reuse.finish(tree)  # every shard is written: the retired ones are no longer needed
    return run


def finish(args, tree: DataTree, stats: StepStats, clip, run: Counter, skipped: list[int], tags: dict) -> int:
    status = totals(tree)
    stats.rows_out = status.get(SUCCESS, 0)
    for reason, count in status.items():
        if reason != SUCCESS:
            stats.drop(reason, count)
    images = run["downloaded"] + run["cached"] + run["failed"]
    stats.write(tree.embeddings, args, packages=("open_clip_torch", "torch", "pillow", "urllib3"),
                model=clip.name, pretrained=clip.pretrained, dim=clip.dim, device=clip.device,
                statuses=dict(sorted(status.items())), shards_done=len(shards.finished_shards(tree)),
                shards_skipped=len(skipped), downloaded=run["downloaded"], thumbnails_reused=run["cached"],
                embeddings_reused=run["reused"], failures_reused=run["reused_failures"],
                images_per_second=round(images / max(stats.seconds, 1e-9), 2), tags=tags)
    print(stats.summary())
    print(f"{run['downloaded']:,} downloaded, {run['cached']:,} from cached thumbnails, {run['failed']:,} failed, "
          f"{run['reused']:,} embeddings reused this run; {tags['edges']:,} tag edges in {tree.tags_file}")
    if not stats.rows_out:
        print("no image could be embedded: see the status counts above and index-*.parquet", file=sys.stderr)
        return 1
    return 0


@entrypoint
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    tree = DataTree.at(args.data_dir)
    parts = input_parts(tree, args.input_dir)
    key = vocab_key(args.tags_vocab, args.tags_k)  # a bad vocabulary fails now, not after hours of downloads
    name, pretrained = resolve_model(args.model, args.pretrained)
    if args.ray is None:
        pick_device(args.device)  # under --ray the cluster's GPUs decide (common/ray_runner.py)
    stats = StepStats("05_process_images")
    todo, skipped = plan(args, tree, parts, {"model": name, "pretrained": pretrained}, stats)
    reuse, removed = prepare_reuse(args, tree, todo, skipped, (name, pretrained))
    if skipped:
        print(f"skipped {len(skipped):,} finished shard(s) ({', '.join(f'{n:05d}' for n in skipped[:10])}"
              f"{', ...' if len(skipped) > 10 else ''}); --overwrite redoes them")
    if not todo and not removed and tags_current(tree, key):
        print(f"nothing to do: all {len(skipped):,} shards finished and {tree.tags_file} is current")
        return 0
    if args.ray is not None:
        from common import ray_runner  # Ray is imported only when asked for

        run, clip, tags = ray_runner.run_shards(args, tree, parts, todo, (name, pretrained), partial(write_tags, tree, key=key),
                                                reuse)
        embedding_reuse.finish(tree)
        return finish(args, tree, stats, clip, run, skipped, tags)
    clip = load_clip(name, pretrained, args.device)
    run = run_shards(args, tree, parts, todo, clip, reuse)
    return finish(args, tree, stats, clip, run, skipped, write_tags(tree, clip, key))


if __name__ == "__main__":
    sys.exit(main())
