"""Download (or reuse), thumbnail and CLIP-embed a set of images, with the three stages overlapped.

Worker threads fetch, decode, write the thumbnail and cut the model's input square (network and
PIL both release the GIL); the calling thread batches those squares and runs the model, so the
GPU computes one batch while the workers prepare the next ones.

CLIP always sees the thumbnail (as written to disk, decoded again), never the original: a run
that resumes from cached thumbnails then gives exactly the embeddings of a run that downloaded
everything, and step 07's thumbnails are the pictures that were embedded.

A row that fails at any stage gets that stage's status (the fetcher's own reasons, then
`write_error`, `preprocess_error`, `embed_error`) and the others go on. A batch the model cannot
embed is retried one image at a time, so one bad image costs only its own row; when not one
image of a batch of two or more embeds on its own, the fault is the model's or the device's,
not the rows', and the run stops (finished shards are kept).
"""
from __future__ import annotations

import concurrent.futures as cf
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from common.fetch import Fetcher
from common.images import open_rgb, model_square, save_thumbnail, write_bytes
from common.paths import DataTree
from common.row_errors import RowFailed, describe, is_run_level, stage

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
                with stage("preprocess_error"):
                    return Outcome(SUCCESS, cached=True), model_square(open_rgb(thumb), self.input_size)
            except RowFailed:
                thumb.unlink(missing_ok=True)  # unreadable cache entry: fetch it again
        result = self.fetcher.fetch(url)  # never raises: a failed fetch names its reason
        if not result.ok:
            return Outcome(result.status, result.error), None
        with stage("write_error"):
            jpeg = save_thumbnail(result.image, thumb, self.thumb_size)
            if self.keep_images and result.data is not None:
                self._keep(row_id, result)
        with stage("preprocess_error"):
            return Outcome(SUCCESS), model_square(open_rgb(jpeg), self.input_size)

    def _keep(self, row_id: str, result) -> None:
        ext = EXTENSIONS.get(str(result.image.info.get("source_format")), "bin")
        write_bytes(result.data, self.tree.original_image(row_id, ext))


def prepare_row(source: ImageSource, row_id: str, url: str):
    """One row's (id, outcome, model input or None); whatever goes wrong is the row's status."""
    try:
        with stage("row_error"):
            return row_id, *source.prepare(row_id, url)
    except RowFailed as e:
        return row_id, Outcome(e.status, e.message), None


class Embedder:
    """Batches model inputs and keeps the model busy: one batch computes while the next is stacked.

    `add` rows as their inputs arrive; `finish` once. Vectors land in `vectors`; a row the model
    cannot embed gets `embed_error` in `outcomes`.
    """

    def __init__(self, clip, batch_size: int, outcomes: dict[str, Outcome], vectors: dict[str, np.ndarray]):
        self.clip, self.batch_size, self.outcomes, self.vectors = clip, batch_size, outcomes, vectors
        self.ids: list[str] = []
        self.pixels: list[np.ndarray] = []
        self.lagged: list = []  # (ids, stacked pixels, handle) of the batch the model is computing now

    def add(self, row_id: str, pixels: np.ndarray) -> None:
        self.ids.append(row_id)
        self.pixels.append(pixels)
        if len(self.ids) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Submit batch N, then collect N-1: the device computes N while the workers decode N+1."""
        if self.ids:
            ids, pixels = list(self.ids), list(self.pixels)
            self.ids.clear()
            self.pixels.clear()
            handle = self._submit(pixels)
            self._collect()
            self.lagged.append((ids, pixels, handle))

    def finish(self) -> None:
        self.flush()
        self._collect()

    @property
    def overlapped(self) -> bool:
        return hasattr(self.clip, "submit_pixels")  # else a plain encode_pixels (numpy stand-ins)

    def _submit(self, pixels: list[np.ndarray]):
        try:
            return self.clip.submit_pixels(pixels) if self.overlapped else self.clip.encode_pixels(np.stack(pixels))
        except Exception as e:
            if is_run_level(e):
                raise
            return e  # collected (retried one by one) in turn, so rows keep their order of arrival

    def _collect(self) -> None:
        if not self.lagged:
            return
        ids, pixels, handle = self.lagged.pop()
        try:
            if isinstance(handle, Exception):
                raise handle
            self._keep(ids, np.asarray(self.clip.collect(handle) if self.overlapped else handle))
        except Exception as e:
            if is_run_level(e):
                raise
            self._one_by_one(ids, pixels, e)

    def _keep(self, ids: list[str], out: np.ndarray) -> None:
        assert len(out) == len(ids), f"the model returned {len(out)} vectors for {len(ids)} images"
        for row_id, vector in zip(ids, out):
            if np.isfinite(vector).all():
                self.vectors[row_id] = vector
            else:
                self.outcomes[row_id] = Outcome("embed_error", "the model returned a non-finite embedding")

    def _one_by_one(self, ids: list[str], pixels: list[np.ndarray], batch_error: Exception) -> None:
        failed = 0
        for row_id, square in zip(ids, pixels):
            try:
                with stage("embed_error"):
                    self._keep([row_id], np.asarray(self.clip.encode_pixels(square[None])))
            except RowFailed as e:
                self.outcomes[row_id] = Outcome(e.status, e.message)
                failed += 1
        if len(ids) > 1 and failed == len(ids):
            raise RuntimeError(f"CLIP could not embed any of a batch of {len(ids)} images, not even one at a "
                               f"time ({describe(batch_error)}): the model or the device is at fault, "
                               "not the images") from batch_error


def embed_images(items: list[tuple[str, str]], source: ImageSource, clip, workers: int, batch_size: int,
                 desc: str = "images") -> tuple[dict[str, Outcome], dict[str, np.ndarray], Counter]:
    """(id, url) pairs (unique ids) -> outcome per id, embedding per successful id, counts."""
    outcomes: dict[str, Outcome] = {}
    vectors: dict[str, np.ndarray] = {}
    embedder = Embedder(clip, batch_size, outcomes, vectors)
    window = max(2 * batch_size, 4 * workers)  # bounded: memory stays flat whatever the shard size
    todo = iter(items)
    with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool, \
            tqdm(total=len(items), desc=desc, unit="img", leave=False) as bar:
        running = set()
        try:
            while True:
                for row_id, url in todo:
                    running.add(pool.submit(prepare_row, source, row_id, url))
                    if len(running) >= window:
                        break
                if not running:
                    break
                done, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    row_id, outcome, pixels = future.result()
                    outcomes[row_id] = outcome
                    if pixels is not None:
                        embedder.add(row_id, pixels)
                    bar.update(1)
            embedder.finish()
        except BaseException:
            for future in running:  # Ctrl-C: stop queued downloads now, let running ones time out
                future.cancel()
            raise
    return outcomes, vectors, _counts(outcomes)


def _counts(outcomes: dict[str, Outcome]) -> Counter:
    """downloaded / cached / failed this run (a row the model could not embed counts as failed)."""
    return Counter("failed" if o.status != SUCCESS else ("cached" if o.cached else "downloaded")
                   for o in outcomes.values())


def stack_in_order(ids: list[str], vectors: dict[str, np.ndarray], dim: int) -> np.ndarray:
    """The npy for a shard: one row per successful input row, in input order, float16."""
    if not ids:
        return np.zeros((0, dim), np.float16)
    return np.stack([vectors[i] for i in ids]).astype(np.float16)
