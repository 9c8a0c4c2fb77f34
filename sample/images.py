"""Small generated images in every form the web serves, for the tests and the offline demo.

Each function returns the file's bytes. Solid colours make zero-shot tags checkable ("red" wins
on a red square); the odd forms (CMYK, palette, alpha, 16-bit, animated, EXIF-rotated, a
decompression bomb's header) exercise the decoder.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 210), "yellow": (240, 220, 40),
    "orange": (245, 140, 20), "purple": (130, 50, 170), "pink": (240, 130, 190), "black": (10, 10, 10),
    "white": (245, 245, 245), "grey": (128, 128, 128), "brown": (120, 75, 40),
}
FORMATS = ("jpeg", "png", "webp", "gif", "cmyk", "palette", "alpha", "png16", "animated", "exif_rotated")


def _save(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def solid(colour=(220, 30, 30), size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, tuple(colour))


def jpeg(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    return _save(solid(colour, size), "JPEG", quality=90)


def png(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    return _save(solid(colour, size), "PNG")


def webp(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    return _save(solid(colour, size), "WEBP", quality=90)


def gif(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    return _save(solid(colour, size), "GIF")


def cmyk_jpeg(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    return _save(solid(colour, size).convert("CMYK"), "JPEG", quality=90)


def palette_png(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    return _save(solid(colour, size).convert("P", palette=Image.Palette.ADAPTIVE, colors=4), "PNG")


def alpha_png(colour=(220, 30, 30), size=(64, 48)) -> bytes:
    """Left half opaque `colour`, right half fully transparent."""
    img = Image.new("RGBA", size, (*colour, 255))
    img.paste((0, 0, 0, 0), (size[0] // 2, 0, size[0], size[1]))
    return _save(img, "PNG")


def png16(level: int = 40000, size=(64, 48)) -> bytes:
    """16-bit greyscale; `level` of 65535 (a naive 8-bit conversion clips most levels to white)."""
    arr = np.full((size[1], size[0]), level, dtype=np.uint16)
    return _save(Image.fromarray(arr), "PNG")


def animated_gif(colours=((220, 30, 30), (30, 60, 210)), size=(64, 48)) -> bytes:
    frames = [solid(c, size) for c in colours]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated_jpeg(colour=(220, 30, 30), size=(80, 40)) -> bytes:
    """Stored `size` wide, EXIF orientation 6: shown (and decoded) rotated, size[1] wide."""
    img = solid(colour, size)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, "JPEG", quality=90, exif=exif.tobytes())


def bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A PNG whose header claims width x height pixels but whose data is a few bytes: a bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def in_format(fmt: str, colour=(220, 30, 30), size=(64, 48)) -> bytes:
    """One of FORMATS in `colour` (png16 ignores the colour: it is greyscale)."""
    makers = {"jpeg": jpeg, "png": png, "webp": webp, "gif": gif, "cmyk": cmyk_jpeg, "palette": palette_png,
              "alpha": alpha_png, "exif_rotated": exif_rotated_jpeg}
    if fmt == "png16":
        return png16(size=size)
    if fmt == "animated":
        return animated_gif((colour, (255 - colour[0], 255 - colour[1], 255 - colour[2])), size)
    return makers[fmt](colour, size)


def demo_image(i: int, size=(160, 120)) -> bytes:
    """The i-th demo picture: a colour field with a few shapes, different for every i, as JPEG."""
    rng = np.random.default_rng(i)
    names = list(COLOURS)
    base = np.array(COLOURS[names[i % len(names)]], dtype=np.float64)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.empty((h, w, 3))
    arr[:] = base * (0.75 + 0.25 * (yy / h))[..., None]
    for _ in range(3):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(8, 40)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        arr[mask] = rng.integers(0, 255, 3)
    return _save(Image.fromarray(arr.clip(0, 255).astype(np.uint8)), "JPEG", quality=88)
