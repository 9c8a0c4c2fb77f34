"""Posts with several pictures: a URL cell that holds a list of image URLs becomes one row per image.

Tools that collect social-media posts (4CAT, for one) put all of a post's pictures in one cell,
e.g. `images` = "https://a.example/1.jpg,https://a.example/2.jpg". Step 01 gives each picture its
own row: the post's columns, the picture's URL, and two columns that keep the post traceable:

    post_id       hash of the whole URL cell as the source has it (16 hex digits, like `id`):
                  the same for every picture of a post; equal to `id` for a one-picture post
    image_index   the picture's place in the post, from 0

`id` stays the hash of one picture's URL. The post's own identifier, when the export has one,
stays in its own column (a column named `id` is kept as `source_id`).

Separator "auto" splits a cell only when it reads as a comma-joined list of http(s) URLs (a URL
with a comma inside, as some image CDNs use, stays whole); any other separator splits every
cell on exactly that string. Pieces are trimmed and empty ones dropped.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from common.columns import row_ids

AUTO = "auto"
NONE = "none"
POST_COLUMNS = ("post_id", "image_index")
_LIST_RE = re.compile(r"^\s*https?://[^\s,]+(?:\s*,\s*https?://[^\s,]+)+\s*$", re.IGNORECASE)


def split_cell(cell: str | None, separator: str) -> list[str]:
    """The image URLs in one cell (an empty list when it has none)."""
    if not cell:
        return []
    if separator == AUTO:
        return [p.strip() for p in cell.split(",")] if _LIST_RE.match(cell) else [cell]
    return [p.strip() for p in cell.split(separator) if p.strip()]


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
