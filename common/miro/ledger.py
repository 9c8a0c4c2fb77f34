"""The ledger of one board: which planned item (cell, label, frame) became which Miro item.

`data/miro/<board_id>.json`, rewritten atomically after every item the API confirmed, so a kill
at any moment leaves the last good version. It is created (empty, `complete: false`) before the
first create: a ledger that is not complete tells the next run that items may have landed
unrecorded, and that run reconciles against the board first. `namespace` is a random id fixed at
creation and written into every placed title, so two data trees placing maps on one board never
mistake each other's items.
"""
from __future__ import annotations

import json
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path

from common.cli import UserError
from common.files import atomic_path

VERSION = 1


class Ledger:
    def __init__(self, path: Path, board: str, doc: dict | None = None):
        self.path = Path(path)
        self.board = board
        doc = doc or {}
        self.namespace: str = doc.get("namespace") or secrets.token_hex(4)
        self.layout: dict | None = doc.get("layout")
        self.items: dict[str, dict] = dict(doc.get("items") or {})
        self.complete: bool = bool(doc.get("complete", False))
        self.exists = bool(doc)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, board: str) -> "Ledger":
        path = Path(path)
        if not path.is_file():
            return cls(path, board)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"the ledger {path} is not valid JSON: restore it from a backup, or move it away "
                            "and clear the board by hand (re-running without it would place every item again)") from None
        if doc.get("board") != board:
            raise UserError(f"the ledger {path} belongs to board {doc.get('board')!r}, not {board!r}: move it away")
        return cls(path, board, doc)

    # ------------------------------------------------------------------ queries
    def __contains__(self, key: str) -> bool:
        return key in self.items

    def item_id(self, key: str) -> str | None:
        entry = self.items.get(key)
        return entry["id"] if entry else None

    # ------------------------------------------------------------------ changes (each one saved)
    def record(self, key: str, item_id: str, kind: str) -> None:
        with self._lock:
            self.items[key] = {"id": item_id, "kind": kind}
            self._save()

    def forget(self, key: str) -> None:
        with self._lock:
            self.items.pop(key, None)
            self._save()

    def start(self, layout: dict) -> None:
        with self._lock:
            self.layout, self.complete = layout, False
            self._save()

    def finish(self, complete: bool) -> None:
        with self._lock:
            self.complete = complete
            self._save()

    def _save(self) -> None:
        doc = {"version": VERSION, "board": self.board, "namespace": self.namespace, "layout": self.layout,
               "complete": self.complete, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "items": self.items}
        with atomic_path(self.path) as tmp:
            # compact: the ledger is rewritten after every item, thousands of times a run
            tmp.write_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
        self.exists = True
