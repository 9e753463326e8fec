"""The resume ledger: an append-only JSON-lines file, one fsynced line per event.

An image counts as done once its "done" line is on disk, and that line is written only after the
image's outputs (atomic renames) and its inspection-store transaction. A kill can at worst leave a
half line at the end, which reading ignores. Keys are the image's content digest + the job's
settings digest + its prompts' digest (config.image_key), so a changed image, recipe, model or
prompt file is redone and an unchanged one is skipped.

Before the store transaction a "storing" line is written (for the record of a run; a kill
between it and "done" is one of the fault-injection steps). The store is the source of truth:
the runner looks an image's key up in the store (it keeps the key in the inspection's audit
row) before storing it and before skipping it, so a kill, a lost or damaged ledger, or `--force`
under unchanged settings never stores an image twice, and an image whose inspection is missing
from the store is inspected again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"


class Ledger:
    """Append-only record of finished images in OUT/ledger.jsonl (thread-safe appends)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.done: set[tuple[str, str]] = set()  # (key, rel)
        self._lock = threading.Lock()
        if self.path.exists():
            self._read()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.path.stat().st_size and not self._ends_with_newline():
            os.write(self._fd, b"\n")  # finish a line cut by a kill, so the next one is whole

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _read(self) -> None:
        bad = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    e = json.loads(line)
                    event, key = e["event"], e["key"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1
                    continue
                if event == "done":
                    self.done.add((key, e.get("rel", "")))
        if bad > 1:
            log.warning("%s: ignored %d unreadable lines; images without a readable 'done' line "
                        "are inspected again (the store is checked, so none is stored twice)",
                        self.path, bad)
        elif bad:
            log.info("%s: ignored 1 incomplete line (an interrupted run)", self.path)

    def is_done(self, key: str, rel: str) -> bool:
        return (key, rel) in self.done

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            os.fsync(self._fd)

    def mark_storing(self, key: str, rel: str) -> None:
        self._append({"event": "storing", "key": key, "rel": rel, "time": time.time()})

    def mark_done(self, key: str, rel: str) -> None:
        self._append({"event": "done", "key": key, "rel": rel, "time": time.time()})
        self.done.add((key, rel))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
