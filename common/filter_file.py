"""Step 01's unit of work: one source file -> one metadata part (data/metadata/part-NNNNN.parquet).

`process_file` is a plain function of the run's settings (`Job`) and one `SourceFile`: it fetches
the file from the Hub (or reads it locally), keeps the rows whose caption names a keyword and
writes the part atomically, with its counts in the part's footer. Threads (step 01) and Ray tasks
(common/ray_runner.py) call it unchanged; only the scheduling differs.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common import hub, polars_parts
from common.caption_filter import CaptionMatcher
from common.cells import is_nested
from common.metadata_parts import PartWriter, output_schema, output_table, rename_for_output
from common.paths import DataTree
from common.sources import SourceError, SourceFile, pick_columns, read_matches, source_schema

DEFAULT_WORKERS = 2


@dataclass
class Job:
    tree: DataTree
    matcher: CaptionMatcher
    signature: dict
    url_column: str | None = None
    caption_column: str | None = None
    token: str | None = field(default=None, repr=False)
    keep_downloads: bool = False
    workers: int = DEFAULT_WORKERS
    url_separator: str | None = None  # common.url_lists: None keeps each URL cell whole
    stop: threading.Event = field(default_factory=threading.Event)

    def __getstate__(self) -> dict:  # an Event cannot cross processes: another process gets its own
        return {**self.__dict__, "stop": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stop=threading.Event())


@dataclass
class FileReport:
    source: SourceFile
    rows_scanned: int = 0
    matched: Counter = field(default_factory=Counter)
    no_url: int = 0
    malformed_rows: int = 0
    rows_written: int = 0
    bytes_downloaded: int = 0
    failed: str | None = None

    def info(self, signature: dict) -> dict:
        return {"signature": signature, "source_file": self.source.name, "repo": self.source.repo,
                "subset": self.source.subset, "rows_scanned": self.rows_scanned,
                "matched": dict(self.matched), "no_url": self.no_url, "malformed_rows": self.malformed_rows,
                "rows_written": self.rows_written, "bytes_downloaded": self.bytes_downloaded}


# ---------------------------------------------------------------------------- one file
def filter_into_part(path: Path, src: SourceFile, job: Job, report: FileReport) -> None:
    schema = source_schema(path, src.name, (job.url_column, job.caption_column))
    url, caption = pick_columns(schema.names, src.name, job.url_column, job.caption_column)
    if job.url_separator is None and is_nested(schema.field(url).type):
        raise SourceError(f"column {url} holds lists of URLs ({schema.field(url).type}): leave --url-separator "
                          "at auto for one row per picture")
    renames = rename_for_output(schema.names, job.url_column, job.caption_column)
    out_schema = output_schema(schema, renames, src.subset, job.url_separator)
    part = job.tree.metadata_part(src.index)
    if not src.is_text and polars_parts.usable(path, job.matcher, out_schema, renames):
        counts = polars_parts.write_part(path, src.name, part, job.matcher, caption, url, renames, out_schema,
                                         lambda c: replace(report, **c).info(job.signature), job.stop, src.subset,
                                         job.url_separator)
        if counts is not None:
            for key, value in counts.items():
                setattr(report, key, Counter(value) if key == "matched" else value)
            return
    keywords = job.matcher.keywords
    writer = PartWriter(part, out_schema)
    try:
        for batch in read_matches(path, src.name, job.matcher, job.url_column, job.caption_column, job.stop):
            report.rows_scanned += batch.scanned
            report.malformed_rows += batch.malformed
            if batch.table is None:
                continue
            for k, n in enumerate(np.bincount(batch.which, minlength=len(keywords))):
                report.matched[keywords[k]] += int(n)
            table, dropped = output_table(batch.table, batch.which, keywords, src.name, renames, src.subset,
                                          job.url_separator)
            report.no_url += dropped
            writer.write(table)
        report.rows_written = writer.rows
        writer.finish(report.info(job.signature))
    except BaseException:
        writer.abandon()
        raise


def process_file(src: SourceFile, job: Job) -> FileReport:
    report = FileReport(src)
    path = None if src.repo else Path(src.name)
    try:
        if src.repo:  # one folder per subset: two repos may hold files of the same name
            folder = job.tree.downloads / (src.subset or "repo")
            path, report.bytes_downloaded = hub.download(src.repo, src.name, job.token, folder)
        filter_into_part(path, src, job, report)
    except (SourceError, hub.DownloadFailed) as e:
        report.failed = str(e)
    finally:
        if src.repo and path is not None and not job.keep_downloads:
            path.unlink(missing_ok=True)
    return report
