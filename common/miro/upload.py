"""Placing planned items on a board exactly once, with a bounded number of concurrent requests.

Miro has no idempotency key: a create answered by a 5xx or a timeout may or may not have landed.
Such items are not retried blindly. After each pass the board is listed once (cursor pages) and
every ambiguous item is looked up by the tag in its title (texts, which have no title, by their
visible text, parent and position: Miro lists a text's content as HTML, `<p>a &amp; b</p>`, so
both sides are compared as plain text); what is found is recorded, what is not is created again,
for a bounded number of passes. Items without this tool's tag are never touched.
"""
from __future__ import annotations

import html
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from tqdm import tqdm

from common.miro.client import Ambiguous, BoardItem, MiroBoard, plain_text
from common.miro.ledger import Ledger
from common.miro.plan import TITLE_TAG, PlanItem


@dataclass
class Tally:
    placed: Counter = field(default_factory=Counter)     # kind -> items created and confirmed
    adopted: int = 0          # found on the board after an ambiguous answer or an interrupted run
    duplicates: int = 0       # extra copies of one tagged item (several ambiguous answers that all landed)
    deleted: int = 0          # --replace
    ambiguous: int = 0        # creates answered by a 5xx or a timeout
    started: float = field(default_factory=time.time)


class Placer:
    def __init__(self, board: MiroBoard, ledger: Ledger, *, concurrency: int = 8, passes: int = 5,
                 progress: tqdm | None = None):
        self.board, self.ledger = board, ledger
        self.concurrency, self.passes = concurrency, passes
        self.progress = progress
        self.tally = Tally()

    # ------------------------------------------------------------------ recognising our items
    def signature(self, item: PlanItem, parent: str | None) -> tuple:
        if item.kind == "text":
            return ("text", plain_text(html.escape(item.text, quote=False)), parent, round(item.x), round(item.y))
        m = TITLE_TAG.search(item.text)
        return ("tag", m.group(1), m.group(2))

    def _board_signature(self, it: BoardItem) -> tuple | None:
        if it.type == "text":
            return ("text", it.text, it.parent, round(it.x or 0), round(it.y or 0))
        m = TITLE_TAG.search(it.text or "")
        return ("tag", m.group(1), m.group(2)) if m else None

    def board_index(self) -> dict[tuple, list[str]]:
        index: dict[tuple, list[str]] = {}
        for it in self.board.items():
            sig = self._board_signature(it)
            if sig is not None:
                index.setdefault(sig, []).append(it.id)
        return index

    def adopt(self, items: list[PlanItem], parent: str | None, index: dict | None = None) -> int:
        """Record the items already on the board; remove extra tagged copies. Returns how many were found."""
        index = self.board_index() if index is None else index
        found = 0
        for item in items:
            ids = index.get(self.signature(item, parent))
            if not ids:
                continue
            self.ledger.record(item.key, ids[0], item.kind)
            found += 1
            for extra in ids[1:]:
                self.tally.duplicates += self.board.delete(extra)
        self.tally.adopted += found
        return found

    # ------------------------------------------------------------------ creating
    def _create(self, item: PlanItem, parent: str | None) -> str:
        if item.kind == "image":
            return self.board.create_image(item.path, item.text, item.x, item.y, item.width, parent)
        if item.kind == "text":
            return self.board.create_text(item.text, item.x, item.y, item.width, item.font_size, parent)
        return self.board.create_frame(item.text, item.x, item.y, item.width, item.height)

    def _pass(self, items: list[PlanItem], parent: str | None) -> list[PlanItem]:
        ambiguous = []
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="miro") as pool:
            futures = {pool.submit(self._create, it, parent): it for it in items}
            try:
                for fut in as_completed(futures):
                    item = futures[fut]
                    try:
                        item_id = fut.result()
                    except Ambiguous:
                        ambiguous.append(item)
                        continue
                    self.ledger.record(item.key, item_id, item.kind)
                    self.tally.placed[item.kind] += 1
                    self._tick()
            except BaseException:
                # stop queued creates; the ones in flight finish and are found by the next run's reconcile
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        self.tally.ambiguous += len(ambiguous)
        return ambiguous

    def place(self, items: list[PlanItem], parent: str | None) -> list[PlanItem]:
        """Create every item not in the ledger; returns those still unconfirmed after all passes."""
        pending = [it for it in items if it.key not in self.ledger]
        for attempt in range(self.passes):
            if not pending:
                break
            if attempt:
                time.sleep(min(0.2 * 2 ** attempt, 5.0))     # Miro was failing: give it a moment
            ambiguous = self._pass(pending, parent)
            if ambiguous:
                self.adopt(ambiguous, parent)
                for _ in range(sum(it.key in self.ledger for it in ambiguous)):
                    self._tick()
            pending = [it for it in ambiguous if it.key not in self.ledger]
        return pending

    def remove_all(self) -> int:
        """--replace: delete every item the ledger holds (children first, the frame last)."""
        keys = sorted(self.ledger.items, key=lambda k: k == "frame")
        children = [k for k in keys if k != "frame"]

        def drop(key: str) -> str:
            self.board.delete(self.ledger.items[key]["id"])
            return key

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="miro-del") as pool:
            for fut in tqdm(as_completed([pool.submit(drop, k) for k in children]), total=len(children),
                            desc="removing the previous map", unit="item", disable=not children):
                self.ledger.forget(fut.result())
                self.tally.deleted += 1
        if "frame" in self.ledger:
            drop("frame")
            self.ledger.forget("frame")
            self.tally.deleted += 1
        return self.tally.deleted

    # ------------------------------------------------------------------ progress
    def rate(self) -> float:
        minutes = max(time.time() - self.tally.started, 1e-6) / 60
        return sum(self.tally.placed.values()) / minutes

    def _tick(self) -> None:
        if self.progress is None:
            return
        self.progress.update(1)
        gate = self.board.gate
        self.progress.set_postfix_str(f"{self.rate():,.0f} items/min, waited {gate.waited:,.1f}s on the rate limit",
                                      refresh=False)
