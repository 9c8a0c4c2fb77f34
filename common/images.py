"""Decode untrusted image bytes into plain RGB, make thumbnails, and cut CLIP's input square.

Decided by content, never by file name or Content-Type. Every odd mode the web serves (CMYK,
palette, alpha, 16-bit, float, animated) ends up as 8-bit RGB, upright per its EXIF orientation.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.files import atomic_path
from common.row_errors import RowFailed

JPEG_QUALITY = 85
BACKGROUND = (255, 255, 255)  # transparent pixels become white, as a browser shows them on a page


class ImageRejected(RowFailed):
    """The bytes are not an image we accept; `status` is the reason recorded for the row."""


def decode(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Bytes -> upright RGB image; raises ImageRejected (not_an_image, too_large, decode_error)."""
    try:
        with warnings.catch_warnings():
            # the pixel cap below is ours; PIL's own bomb warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise ImageRejected("not_an_image", f"content is not an image ({len(data):,} bytes)") from e
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_large", str(e)) from e
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected("too_large", f"{width}x{height} pixels is over the cap of {max_pixels:,}")
    if width < 1 or height < 1:
        raise ImageRejected("decode_error", f"empty image {width}x{height}")
    try:
        if draft_size and img.format == "JPEG":
            # decode a JPEG at a reduced scale (still >= draft_size): much faster on big photos
            img.draft("RGB", (draft_size, draft_size))
        img.seek(0)  # animated: the first frame
        img.load()
        rgb = to_rgb(ImageOps.exif_transpose(img))
        rgb.info["source_format"] = img.format  # the original's kind, for --keep-images file names
        return rgb
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageRejected("decode_error", f"{type(e).__name__}: {e}") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; alpha composited on white, 16-bit and float rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _rescale_wide(img)
    if img.mode == "P" or img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _rescale_wide(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit grey to 8 bits by range, not by clipping (which turns most of it white)."""
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
    if img.mode == "F" and arr.max() <= 1.0:
        top = 1.0
    grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


# ---------------------------------------------------------------------------- thumbnails
def thumbnail_jpeg(img: Image.Image, size: int) -> bytes:
    """JPEG bytes of `img` with its long side at most `size` (never enlarged)."""
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=JPEG_QUALITY)  # optimize=True: ~5% smaller, twice the encode time
    return buf.getvalue()


def write_bytes(data: bytes, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_thumbnail(img: Image.Image, path: Path, size: int = 256) -> bytes:
    """Write the thumbnail atomically (a crash never leaves half a JPEG); return its bytes."""
    data = thumbnail_jpeg(img, size)
    write_bytes(data, path)
    return data


def open_rgb(data_or_path) -> Image.Image:
    """A file we wrote ourselves (a thumbnail): trusted, so no caps."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, (bytes, bytearray)) else data_or_path
    with Image.open(src) as img:
        return to_rgb(img.convert("RGB") if img.mode != "RGB" else img.copy())


# ---------------------------------------------------------------------------- model input
def model_square(img: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """CLIP's input as uint8 HxWx3: short side to `size`, centre crop (torchvision's arithmetic).

    Normalisation happens later on the model's device, so the workers ship 1 byte per value.
    """
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    img = img.resize((max(new_w, 1), max(new_h, 1)), resample)
    w, h = img.size
    if w < size or h < size:  # torchvision pads with black when the crop is larger
        canvas = Image.new("RGB", (max(w, size), max(h, size)), (0, 0, 0))
        canvas.paste(img, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
