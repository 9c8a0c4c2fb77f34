"""A bad row is data, never a crash: what goes wrong while one row is handled becomes its status.

Each step that handles rows one at a time (05's downloads, 07's missing thumbnails and domains,
04's domains) marks its stages with `stage(status)` and catches `RowFailed` once, at the row's
boundary:

    try:
        with stage("row_error"):
            result = fetcher.fetch(url)           # raises nothing: its own stages name the reason
            with stage("write_error"):
                save_thumbnail(result.image, path)
    except RowFailed as e:
        status, error = e.status, e.message

An exception a stage did not expect (a library bug, an input no one foresaw) then names the stage
it happened in and carries its type and message, and the run goes on. What is not the row's
fault is never caught: Ctrl-C, a user mistake (UserError) and a full disk stop the whole run,
which says so in one line and keeps its finished shards.
"""
from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Iterator

from common.cli import UserError

# the output tree is full: every later row would fail the same way, so the run stops (exit 2)
RUN_LEVEL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
MAX_MESSAGE = 300


class RowFailed(Exception):
    """One row could not be handled; `status` names the reason (bad_url, decode_error, ...)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status

    @property
    def message(self) -> str:
        return str(self)


def is_run_level(e: BaseException) -> bool:
    """True for what no row causes: Ctrl-C and exits, user mistakes, a full disk."""
    if not isinstance(e, Exception) or isinstance(e, UserError):
        return True
    return isinstance(e, OSError) and e.errno in RUN_LEVEL_ERRNOS


def describe(e: BaseException) -> str:
    """'TypeName: first line of the message', short enough for an `error` cell."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else "no message"
    return f"{type(e).__name__}: {text}"[:MAX_MESSAGE]


def as_row_failure(e: BaseException, status: str) -> RowFailed:
    """What an exception caught at a row's boundary means for the row; re-raises what is run-level.

    For hot loops, where `stage`'s context manager would cost more than the row's own work:
        try: ...
        except Exception as e:  # noqa: BLE001 (the row's boundary)
            failure = as_row_failure(e, "bad_url")
    """
    if isinstance(e, RowFailed):
        return e
    if is_run_level(e):
        raise e
    return RowFailed(status, describe(e))


@contextmanager
def stage(status: str) -> Iterator[None]:
    """Inside: any unexpected exception becomes RowFailed(status, its type and message).

    A RowFailed raised inside (a reason named deeper down) passes unchanged; run-level
    exceptions pass unchanged too.
    """
    try:
        yield
    except RowFailed:
        raise
    except BaseException as e:
        raise as_row_failure(e, status) from e
