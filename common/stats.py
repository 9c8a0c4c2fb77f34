"""The `_stats.json` every step writes last: rows in and out, reasons, parameters, versions, time."""
from __future__ import annotations

import importlib.metadata
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from common.files import write_json
from common.paths import stats_file

SECRET_KEYS = {"token", "hf_token", "miro_token"}


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def public_params(args) -> dict:
    """The parsed flags, minus anything secret: tokens are never written anywhere."""
    params = vars(args) if not isinstance(args, dict) else dict(args)
    return {k: v for k, v in params.items() if k.lower() not in SECRET_KEYS}


class StepStats:
    """Counts what a step read, kept and dropped (by named reason), then writes `_stats.json`."""

    def __init__(self, step: str):
        self.step = step
        self.started = time.time()
        self.rows_in = 0
        self.rows_out = 0
        self.reasons: Counter[str] = Counter()

    def drop(self, reason: str, n: int = 1) -> None:
        self.reasons[reason] += n

    @property
    def seconds(self) -> float:
        return time.time() - self.started

    def write(self, folder: Path, params, packages: tuple[str, ...] = (), *, path: Path | None = None,
              **extra) -> dict:
        """Write `folder/_stats.json` (or `path`, for steps that share a folder) and return it."""
        doc = {
            "step": self.step,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.reasons.items())),
            "parameters": public_params(params),
            "versions": versions("pyarrow", *packages),
            "seconds": round(self.seconds, 3),
            **extra,
        }
        write_json(doc, path or stats_file(folder))
        return doc

    def summary(self) -> str:
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(self.reasons.items())) or "none"
        return f"{self.step}: {self.rows_in:,} rows in, {self.rows_out:,} out; dropped: {dropped}; {self.seconds:,.1f}s"
