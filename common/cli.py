"""What every step's command line shares: the data-dir flag and the one-line user error."""
from __future__ import annotations

import argparse
import errno
import functools
import sys
from typing import Callable, Sequence

from common.paths import DEFAULT_DATA_DIR

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix. Printed as one line (say what to do), exit code 2."""


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the first paragraph of the script's docstring."""
    description = (doc or "").strip().split("\n\n")[0]
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", "--data_dir", dest="data_dir", default=str(DEFAULT_DATA_DIR),
                   help=f"root of the data tree for this city or collection (default: {DEFAULT_DATA_DIR}/)")
    return p


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="redo finished shards instead of skipping them")


def add_ray(p: argparse.ArgumentParser, unit: str) -> None:
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help=f"run on Ray ({unit}): alone, a Ray on this machine (loopback only); "
                        "`auto` or ray://HOST:10001 joins a cluster whose nodes share --data-dir")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def entrypoint(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Turn user mistakes, Ctrl-C and a full disk into one line and an exit code, never a traceback."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as e:
            return fail(str(e))
        except KeyboardInterrupt:
            print("\ninterrupted: finished shards are kept; run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        except OSError as e:
            if e.errno == errno.ENOSPC:
                return fail(f"disk full while writing {e.filename or 'output'}: free some space and re-run "
                            "(finished shards are kept)")
            raise

    return wrapper
