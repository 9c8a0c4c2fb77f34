"""Download (or reuse), thumbnail and CLIP-embed a set of images, with the three stages overlapped.

Worker threads fetch, decode, write the thumbnail and cut the model's input square (network and
PIL both release the GIL); the calling thread batches those squares and runs the model, so the
GPU computes one batch while the workers prepare the next ones.

CLIP always sees the thumbnail (as written to disk, decoded again), never the original: a run
that resumes from cached thumbnails then gives exactly the embeddings of a run that downloaded
everything, and step 07's thumbnails are the pictures that were embedded.
"""
from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.fetch import Fetcher
from common.images import open_rgb, model_square, save_thumbnail, write_bytes
from common.paths import DataTree

SUCCESS = "success"
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
              "MPO": "jpg", "AVIF": "avif", "ICO": "ico"}


@dataclass
class Outcome:
    status: str
    error: str | None = None
    cached: bool = False  # the thumbnail was already on disk: nothing downloaded


class ImageSource:
    """One image's model input: from the cached thumbnail, or downloaded once and cached."""

    def __init__(self, tree: DataTree, fetcher: Fetcher, thumb_size: int, input_size: int,
                 keep_images: bool = False):
        self.tree, self.fetcher = tree, fetcher
        self.thumb_size, self.input_size, self.keep_images = thumb_size, input_size, keep_images

    def prepare(self, row_id: str, url: str) -> tuple[Outcome, np.ndarray | None]:
        thumb = self.tree.thumbnail(row_id)
        if thumb.exists():
            try:
                return Outcome(SUCCESS, cached=True), model_square(open_rgb(thumb), self.input_size)
            except OSError:
                thumb.unlink(missing_ok=True)  # unreadable cache entry: fetch it again
        result = self.fetcher.fetch(url)
        if not result.ok:
            return Outcome(result.status, result.error), None
        jpeg = save_thumbnail(result.image, thumb, self.thumb_size)
        if self.keep_images and result.data is not None:
            self._keep(row_id, result)
        return Outcome(SUCCESS), model_square(open_rgb(jpeg), self.input_size)

    def _keep(self, row_id: str, result) -> None:
        ext = EXTENSIONS.get(str(result.image.info.get("source_format")), "bin")
        write_bytes(result.data, self.tree.original_image(row_id, ext))


def _prepare_safely(source: ImageSource, row_id: str, url: str):
    try:
        return row_id, *source.prepare(row_id, url)
    except OSError as e:  # e.g. the thumbnail folder is not writable: the row says so, the run goes on
        return row_id, Outcome("write_error", f"{type(e).__name__}: {e}"), None


def embed_images(items: list[tuple[str, str]], source: ImageSource, clip, workers: int, batch_size: int,
                 desc: str = "images") -> tuple[dict[str, Outcome], dict[str, np.ndarray], Counter]:
    """(id, url) pairs (unique ids) -> outcome per id, embedding per successful id, counts."""
    outcomes: dict[str, Outcome] = {}
    vectors: dict[str, np.ndarray] = {}
    counts: Counter = Counter()
    pending_ids, pending_px = [], []

    lagged: list = []  # (ids, handle) of the batch the model is computing now
    overlapped = hasattr(clip, "submit_pixels")  # else a plain encode_pixels (numpy stand-ins)

    def collect_lagged():
        if lagged:
            ids, handle = lagged.pop()
            vectors.update(zip(ids, clip.collect(handle) if overlapped else handle))

    def flush():
        # submit batch N, then collect N-1: the device computes N while the workers decode N+1.
        # Never more than batch_size at once: several workers can finish in one wait.
        if pending_ids:
            ids, px = pending_ids[:batch_size], pending_px[:batch_size]
            del pending_ids[:batch_size], pending_px[:batch_size]
            handle = clip.submit_pixels(px) if overlapped else clip.encode_pixels(np.stack(px))
            collect_lagged()
            lagged.append((ids, handle))

    window = max(2 * batch_size, 4 * workers)  # bounded: memory stays flat whatever the shard size
    todo = iter(items)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool, \
            tqdm(total=len(items), desc=desc, unit="img", leave=False) as bar:
        running = set()
        try:
            while True:
                for row_id, url in todo:
                    running.add(pool.submit(_prepare_safely, source, row_id, url))
                    if len(running) >= window:
                        break
                if not running:
                    break
                done, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    row_id, outcome, pixels = future.result()
                    outcomes[row_id] = outcome
                    counts["cached" if outcome.cached else ("downloaded" if pixels is not None else "failed")] += 1
                    if pixels is not None:
                        pending_ids.append(row_id)
                        pending_px.append(pixels)
                    bar.update(1)
                while len(pending_ids) >= batch_size:
                    flush()
            while pending_ids:
                flush()
            collect_lagged()
        except BaseException:
            for future in running:  # Ctrl-C: stop queued downloads now, let running ones time out
                future.cancel()
            raise
    return outcomes, vectors, counts


def stack_in_order(ids: list[str], vectors: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """The npy for a shard: one row per successful input row, in input order, float16."""
    if not ids:
        return np.zeros((0, dim), np.float16)
    return np.stack([vectors[i] for i in ids]).astype(np.float16)


def save_npy(array: np.ndarray, path: Path) -> None:
    from common.files import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
