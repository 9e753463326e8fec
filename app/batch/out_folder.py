"""The batch output folder: checked writable and locked for the run, stale temporaries removed.

The lock is an flock on OUT/.sam-inspect-batch.lock holding the owner's pid: a second run on the
same folder stops with a message naming the other process, and the kernel releases the lock
when its owner dies, so a killed run never blocks the next one. While the lock is held no other
batch writes the folder, so temporaries (app.outputs.atomic_write) older than the lock are left by a
killed run and are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from app.outputs import atomic_write
from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)

LOCK_NAME = ".sam-inspect-batch.lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; the folder is not locked
    fcntl = None


class OutputFolderError(SamEngineError):
    """The output folder cannot be written or another run holds it."""


class OutputLock:
    """An exclusive lock on a batch output folder (creating it); use as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.since = 0.0
        self._fd = -1

    def acquire(self) -> OutputLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputFolderError(
                f"cannot write to the output folder {self.folder}: {exc.strerror or exc}; "
                "give a writable --out") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                other = os.read(fd, 64).decode("ascii", "replace").strip()
                os.close(fd)
                who = f"process {other}" if other.isdigit() else "another process"
                raise OutputFolderError(
                    f"{self.folder} is in use by another batch run ({who}); wait for it to "
                    "finish or give another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise OutputFolderError(
                f"cannot write to the output folder {self.folder}: {exc.strerror or exc}; "
                "give a writable --out or free space") from None
        self._fd = fd
        self.since = time.time()
        return self

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temporaries(folder: Path, older_than: float) -> int:
    """Delete atomic_write temporaries under folder last modified before `older_than` (epoch
    seconds); call only while holding the folder's OutputLock. Returns how many were removed."""
    removed = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if not atomic_write.is_temporary(name):
                continue
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < older_than:
                    p.unlink()
                    removed += 1
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run", folder, removed)
    return removed
