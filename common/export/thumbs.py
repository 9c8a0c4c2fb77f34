"""Thumbnails into the export folder: hard links to step 05's cache where possible, copies otherwise.

A hard link costs no disk space and no time, which matters at a million thumbnails; across file
systems (or where links are not allowed) the file is copied. Cached thumbnails larger than the
export size (step 05 run with a bigger `--thumb-size`) are shrunk instead.
"""
from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from common.fetch import Fetcher
from common.files import atomic_path
from common.images import save_thumbnail
from common.row_errors import RowFailed, stage

THUMB_SIZE = 256
JPEG_QUALITY = 85
SAMPLE = 16
# linking is impossible here (another file system, no permission, too many links): copy instead
LINK_ERRORS = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


def cache_is_small(paths: list[Path], size: int = THUMB_SIZE) -> bool:
    """True when a sample of the cached thumbnails already fits in `size` px (so linking is right)."""
    step = max(1, len(paths) // SAMPLE)
    for path in paths[::step][:SAMPLE]:
        try:
            with Image.open(path) as im:
                if max(im.size) > size:
                    return False
        except OSError:  # an unreadable file says nothing about the size; it is counted later
            continue
    return True


def shrink(src: Path, dst: Path, size: int = THUMB_SIZE) -> None:
    with Image.open(src) as im:
        im.draft("RGB", (size, size))
        im = im.convert("RGB")
        im.thumbnail((size, size))
        with atomic_path(dst) as tmp:
            im.save(tmp, "JPEG", quality=JPEG_QUALITY, optimize=True)


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link src to dst (a link appears whole or not at all); copy when linking is not possible.

    An existing dst (--overwrite) is replaced through a temporary sibling, so it is never missing.
    """
    try:
        os.link(src, dst)
        return "linked"
    except FileExistsError:
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno not in LINK_ERRORS:
                raise
            return _copy(src, dst)
        os.replace(tmp, dst)
        return "linked"
    except OSError as e:
        if e.errno not in LINK_ERRORS:
            raise
        return _copy(src, dst)


def _copy(src: Path, dst: Path) -> str:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return "copied"


def export_thumbnails(pairs: list[tuple[Path, Path]], already: set[str], overwrite: bool,
                      size: int = THUMB_SIZE) -> tuple[Counter, set[str]]:
    """Put every (cached, exported) pair in place, skipping exported files whose id is in `already`
    (one directory listing instead of a stat per file); counts linked / copied / shrunk / already
    there / unusable, and returns the ids of the cached files that could not be used (unreadable,
    gone): those rows have no thumbnail, and the export goes on."""
    counts: Counter[str] = Counter()
    unusable: set[str] = set()
    todo = pairs if overwrite else [(s, d) for s, d in pairs if d.stem not in already]
    counts["already there"] = len(pairs) - len(todo)
    if not todo:
        return counts, unusable
    todo[0][1].parent.mkdir(parents=True, exist_ok=True)
    small = cache_is_small([s for s, _ in todo], size)
    for src, dst in tqdm(todo, desc="thumbnails", unit="file", mininterval=1.0):
        try:
            with stage("unusable"):
                if small:
                    counts[link_or_copy(src, dst)] += 1
                else:
                    shrink(src, dst, size)
                    counts["shrunk"] += 1
        except RowFailed:
            counts["unusable in step 05's cache"] += 1
            unusable.add(dst.stem)
    return counts, unusable


def download_one(fetcher: Fetcher, url, dst: Path, size: int = THUMB_SIZE) -> tuple[str, str | None]:
    """(status, error) of one missing thumbnail: whatever goes wrong is the row's, not the run's."""
    try:
        with stage("row_error"):
            result = fetcher.fetch(url)  # never raises for what a URL or a server does
            if result.ok:
                with stage("write_error"):
                    save_thumbnail(result.image, dst, size)
            return result.status, result.error
    except RowFailed as e:
        return e.status, e.message


def download_missing(todo: list[tuple[str, Path]], fetcher: Fetcher, workers: int = 16,
                     size: int = THUMB_SIZE) -> tuple[set[int], Counter, dict[str, str]]:
    """Fetch (url, exported path) pairs with step 05's safe fetcher; returns the positions that
    succeeded, the count of each outcome (success, http_404, bad_url, ...) and the first error
    of each failed outcome."""
    counts: Counter[str] = Counter()
    first_error: dict[str, str] = {}
    done: set[int] = set()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = pool.map(lambda pair: download_one(fetcher, pair[0], pair[1], size), todo)
            for k, (status, error) in enumerate(tqdm(outcomes, total=len(todo), desc="downloading missing",
                                                     unit="image")):
                counts[status] += 1
                if status == "success":
                    done.add(k)
                elif error:
                    first_error.setdefault(status, f"{str(todo[k][0])[:200]}: {error}")
    finally:
        fetcher.close()
    return done, counts, first_error
