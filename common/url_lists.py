"""Posts with several pictures: a URL cell that holds a list of image URLs becomes one row per image.

Tools that collect social-media posts (4CAT, for one) put all of a post's pictures in one cell,
e.g. `images` = "https://a.example/1.jpg,https://a.example/2.jpg". Step 01 gives each picture its
own row: the post's columns, the picture's URL, and two columns that keep the post traceable:

    post_id       hash of the whole URL cell as the source has it (16 hex digits, like `id`):
                  the same for every picture of a post; equal to `id` for a one-picture post
    image_index   the picture's place in the post, from 0

`id` stays the hash of one picture's URL. The post's own identifier, when the export has one,
stays in its own column (a column named `id` is kept as `source_id`).

Separator "auto" splits a cell only when it reads as a list of pictures:
- a JSON or Python list (`["https://…", "https://…"]`, `['https://…']`, as pandas writes a list
  column to CSV, and as common.cells writes a parquet list column): its strings; a media object
  (`{"url": "https://…", "type": "photo"}`) gives its URL;
- http(s) URLs joined by commas, semicolons, `|` or whitespace, when every piece is such a URL
  (a URL with a comma inside, as some image CDNs use, stays whole).
Any other separator splits every cell on exactly that string. Pieces are trimmed and empty ones
dropped.
"""
from __future__ import annotations

import ast
import json
import re

import numpy as np
import pyarrow as pa

from common.columns import row_ids

AUTO = "auto"
NONE = "none"
POST_COLUMNS = ("post_id", "image_index")
# (a cell of http(s) URLs joined by one separator, that separator)
_JOINED = [(re.compile(rf"^https?://[^\s{sep}]+(?:\s*{sep}\s*https?://[^\s{sep}]+)+$", re.IGNORECASE),
            re.compile(rf"\s*{sep}\s*")) for sep in (",", ";", r"\|")]
_JOINED.append((re.compile(r"^https?://\S+(?:\s+https?://\S+)+$", re.IGNORECASE), re.compile(r"\s+")))
MAX_LIST_CHARS = 1_000_000  # a longer cell is not read as a list: no row costs more than a moment
URL_KEYS = ("url", "media_url_https", "media_url", "src", "href", "link", "image", "image_url")


def split_cell(cell: str | None, separator: str) -> list[str]:
    """The image URLs in one cell (an empty list when it has none)."""
    if not cell:
        return []
    if separator != AUTO:
        return [p.strip() for p in cell.split(separator) if p.strip()]
    text = cell.strip()
    if text[:1] in "[{" and text[-1:] in "]}" and len(text) <= MAX_LIST_CHARS:
        found = _literal(text)
        if found is not None:
            return [u for u in (_url_of(v) for v in (found if isinstance(found, list) else [found])) if u]
    for joined, separator in _JOINED:
        if joined.match(text):
            return separator.split(text)
    return [cell]


def _literal(text: str):
    """The list or object a cell spells in JSON or as a Python literal, or None."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, (list, dict)) else None


def _url_of(value) -> str | None:
    """A list element's URL: a string, or a media object's URL field (or its first http(s) value)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        for key in URL_KEYS:
            if isinstance(value.get(key), str) and value[key].strip():
                return value[key].strip()
        return next((v.strip() for v in value.values() if isinstance(v, str)
                     and v.strip().lower().startswith(("http://", "https://"))), None)
    return None


def split_cells(cells: list[str | None], separator: str) -> tuple[list[int], list[str], list[int], list[str]]:
    """(source row per image, image URL, image index, post id) for a column of URL cells."""
    rows, urls, index, posts = [], [], [], []
    post_ids = row_ids([c if c else None for c in cells])
    for r, (cell, post) in enumerate(zip(cells, post_ids)):
        for k, url in enumerate(split_cell(cell, separator)):
            rows.append(r)
            urls.append(url)
            index.append(k)
            posts.append(post)
    return rows, urls, index, posts


def explode(table: pa.Table, which: np.ndarray, separator: str) -> tuple[pa.Table, np.ndarray, int, dict]:
    """One row per image: (rows, keyword per row, posts without any URL, post columns to append)."""
    cells = table["url"].cast(pa.string()).to_pylist()
    rows, urls, index, posts = split_cells(cells, separator)
    dropped = len(cells) - len(set(rows))
    take = pa.array(rows, pa.int64())
    out = table.take(take)
    out = out.set_column(out.column_names.index("url"), "url", pa.array(urls, pa.string()))
    extra = {"post_id": pa.array(posts, pa.string()), "image_index": pa.array(index, pa.int64())}
    return out, np.asarray(which)[np.asarray(rows, dtype=np.int64)], dropped, extra
