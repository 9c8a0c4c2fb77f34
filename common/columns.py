"""One internal name per column, whatever the source calls it, and the stable row id.

RE-LAION-5B and LAION-5B spell their columns differently (`url`/`URL`, `caption`/`TEXT`), and
researchers bring CSVs with their own names (a TCAT export has `media_url` and `text`).

Internal `width` and `height` are always the source image's own size. RE-LAION-5B's rows also
carry what LAION's own download run (img2dataset) recorded: `status` and `error_message`, `width`
and `height` of its resized copy, and `original_width`/`original_height`, the size of the image
it decoded. Those are renamed once, here (`RELAION_RENAMES`), so that step 05's own `status` and
`error` never overwrite LAION's and every later step reads one meaning per name.
"""
from __future__ import annotations

import pyarrow as pa
import xxhash

# internal name -> names seen in the wild, in order of preference
ALIASES: dict[str, tuple[str, ...]] = {
    "url": ("url", "URL", "image_url", "media_url"),
    "caption": ("caption", "TEXT", "text", "alt", "title"),
    "language": ("language", "LANGUAGE", "lang"),
    "width": ("width", "WIDTH", "original_width"),
    "height": ("height", "HEIGHT", "original_height"),
    "similarity": ("similarity", "SIMILARITY", "clip_similarity"),
    "punsafe": ("punsafe", "PUNSAFE"),
    "pwatermark": ("pwatermark", "PWATERMARK"),
}

# RE-LAION-5B's columns from LAION's download run -> the names every step here uses. Applied
# when a source has all of them (a RE-LAION shard, from the Hub or a local copy).
RELAION_RENAMES: dict[str, str] = {
    "status": "laion_status",                # LAION's download outcome, not step 05's
    "error_message": "laion_error_message",
    "width": "laion_width",                  # LAION's resized copy
    "height": "laion_height",
    "original_width": "width",               # the source image, as LAION decoded it
    "original_height": "height",
}
# step 05 writes these on every row; a source column of the same name keeps its data as `source_<name>`
LATER_COLUMNS = ("status", "error")

# RE-LAION-5B on the Hugging Face Hub, by subset and release variant. Every repo is gated (a
# token and accepted terms are needed) and holds 128 Spark-written shards at its root,
# `part-NNNNN-<uuid>-c000.snappy.parquet`. Note the lower-case `b` of the nolang research-safe repo.
RELAION_REPOS: dict[tuple[str, str], str] = {
    ("en", "research-safe"): "laion/relaion2B-en-research-safe",
    ("en", "research"): "laion/relaion2B-en-research",
    ("multi", "research-safe"): "laion/relaion2B-multi-research-safe",
    ("multi", "research"): "laion/relaion2B-multi-research",
    ("nolang", "research-safe"): "laion/relaion1b-nolang-research-safe",
    ("nolang", "research"): "laion/relaion1B-nolang-research",
}
RELAION_SUBSETS = ("multi", "en", "nolang")  # also the order of their blocks of part numbers
RELAION_VARIANTS = ("research-safe", "research")


def variant_renames(names) -> dict[str, str]:
    """source name -> name used here, for a known source layout (RE-LAION-5B's); else empty."""
    return dict(RELAION_RENAMES) if set(RELAION_RENAMES) <= set(names) else {}


def find_column(names, internal: str, override: str | None = None) -> str | None:
    """The source's name for an internal column (an explicit override wins), or None."""
    if override:
        return override if override in names else None
    for candidate in ALIASES.get(internal, (internal,)):
        if candidate in names:
            return candidate
    return None


def rename_map(names, overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """source name -> internal name, for every known column the source has."""
    overrides = overrides or {}
    variant = variant_renames(names)
    renamed = [variant.get(n, n) for n in names]
    generic = {}
    for internal in ALIASES:
        found = find_column(renamed, internal, overrides.get(internal))
        # never rename onto a column the source already has under the internal name
        if found and found != internal and internal not in renamed:
            generic[found] = internal
    return compose(names, variant, generic)


def compose(names, first: dict[str, str], then: dict[str, str]) -> dict[str, str]:
    """One rename map that does `first`, then `then` (whose keys are names after `first`)."""
    out = {}
    for n in names:
        final = then.get(first.get(n, n), first.get(n, n))
        if final != n:
            out[n] = final
    return out


def normalize(table: pa.Table, overrides: dict[str, str | None] | None = None) -> pa.Table:
    mapping = rename_map(table.column_names, overrides)
    return table.rename_columns([mapping.get(n, n) for n in table.column_names])


def row_id(url: str) -> str:
    """Stable 16-hex-char id of an image URL (XXH64, seed 0): names thumbnails and joins every table.

    XXH64 is a fixed, published function, so ids never change with a package version; it is
    several times faster per URL than a cryptographic hash, which step 01 feels on every match.
    """
    return xxhash.xxh64_hexdigest(url.encode("utf-8", "surrogatepass"))


def row_ids(urls) -> list[str | None]:
    """`row_id` of each URL (None stays None); the same function, without a call per URL."""
    digest = xxhash.xxh64_hexdigest
    return [digest(u.encode("utf-8", "surrogatepass")) if u is not None else None for u in urls]
