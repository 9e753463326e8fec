"""sha256 of large files (checkpoints, ONNX graphs), hashed once per (path, size, mtime).

The digests are remembered in one JSON file in the user cache folder (hash_cache_path():
$SAM_INSPECT_CACHE or ~/.cache/sam-inspect/embeddings, file sha256.json), keyed by the resolved
path and holding its size and mtime_ns, so a 2.5 GB vit_h checkpoint is read in full once and a
checkpoint in a read-only folder is cached too. A record made less than RACY_NS after the file's
mtime is not trusted: the file may have been rewritten within the file system's timestamp
granularity (git's "racy clean" case). The record file is written atomically; losing it (or a
race between two processes) only means hashing again. No torch, no Qt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

HASH_CACHE_NAME = "sha256.json"
RACY_NS = 3_000_000_000  # coarser than any file system's mtime granularity (FAT: 2 s)
MAX_RECORDS = 512  # oldest records are dropped beyond this
_CHUNK = 1 << 20
_PROGRESS_BYTES = 256 << 20  # a progress bar for files above this
_lock = threading.Lock()


def hash_cache_path() -> Path:
    """The JSON file holding remembered digests (beside the embedding cache)."""
    from sam_engine.embedding_cache import default_cache_dir

    return default_cache_dir() / HASH_CACHE_NAME


def _key(path: Path) -> str:
    return str(path.resolve())


def _read_records(cache: Path) -> dict[str, dict]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_records(cache: Path, records: dict[str, dict]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(records, f)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: readable by other users, like the cache
        os.replace(tmp, cache)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cached_sha256(path: str | Path) -> str | None:
    """The sha256 remembered for `path` if its size and mtime are unchanged since, else None."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    rec = _read_records(hash_cache_path()).get(_key(path))
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
        return None
    fresh = rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
    recorded = rec.get("recorded_ns")
    racy = not isinstance(recorded, int) or recorded - st.st_mtime_ns < RACY_NS
    return rec["sha256"] if fresh and not racy else None


def remember_sha256(path: str | Path, sha256: str) -> None:
    """Remember `path`'s sha256 for its current size and mtime (best effort: an unwritable
    cache folder only means hashing again next time)."""
    path = Path(path)
    cache = hash_cache_path()
    try:
        st = path.stat()
        with _lock:
            records = _read_records(cache)
            records.pop(_key(path), None)
            records[_key(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "sha256": sha256, "recorded_ns": time.time_ns()}
            while len(records) > MAX_RECORDS:
                records.pop(next(iter(records)))
            _write_records(cache, records)
    except OSError as exc:
        log.debug("cannot remember the sha256 of %s in %s: %s", path, cache, exc)


def hash_file(path: Path, progress: bool = False) -> str:
    """The sha256 of a file, read in full (with a tqdm bar on stderr when progress)."""
    if not progress:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    from tqdm import tqdm

    h = hashlib.sha256()
    with path.open("rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
        desc=f"sha256 {path.name}", leave=False,
    ) as bar:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def file_sha256(path: str | Path, *, progress: bool | None = None, use_cache: bool = True) -> str:
    """sha256 of a file, hashed once per (path, size, mtime) thanks to hash_cache_path().

    progress None: a progress bar for files over 256 MiB. Raises OSError when unreadable.
    """
    path = Path(path)
    if use_cache and (sha := cached_sha256(path)) is not None:
        return sha
    if progress is None:
        progress = path.stat().st_size > _PROGRESS_BYTES
    sha = hash_file(path, progress)
    if use_cache:
        remember_sha256(path, sha)
    return sha
