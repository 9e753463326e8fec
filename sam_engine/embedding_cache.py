"""Two-level (memory LRU + disk) cache of per-image arrays, keyed by image digest and model.

Values are `dict[str, np.ndarray]` (the image embedding, maybe other per-image arrays). The memory
level is bounded in bytes and evicts the least recently used entry; the optional disk level keeps
one verified file per key so embeddings survive restarts. Thread safe: the GUI prefetches in a
worker thread.

Disk file layout (little-endian), raw bytes so a 4 MiB embedding reads in a few ms (no pickle,
no compression):

    MAGIC (8 bytes) | header length (uint32) | header (UTF-8 JSON) | zero padding | payload

The header holds the format version, the key, each array's name/dtype/shape/offset/nbytes and a
blake2b checksum of the payload. A file that fails any check is deleted and treated as a miss.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import struct
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from sam_engine.constants import PREPROCESS_VERSION
from sam_engine.errors import CacheError

log = logging.getLogger(__name__)

MAGIC = b"SAMEMBC\x00"
FORMAT_VERSION = 1
SUFFIX = ".emb"
_ALIGN = 64  # array offsets are multiples of this so np.frombuffer views are aligned
_LEN = struct.Struct("<I")
_ALLOWED_KINDS = "biuf"

Value = dict[str, np.ndarray]


@dataclasses.dataclass
class CacheStats:
    """Counters of an EmbeddingCache (a snapshot when read through `EmbeddingCache.stats`).

    disk_errors counts failed disk writes/reads and corrupt files that were deleted.
    """

    hits_memory: int = 0
    hits_disk: int = 0
    misses: int = 0
    evictions: int = 0
    bytes_in_memory: int = 0
    disk_errors: int = 0


class _CorruptFile(Exception):
    """A cache file failed verification (the message says why)."""


def cache_key(image_digest: str, model_id: str, extra: str = "") -> str:
    """Key of one image's arrays for one model and preprocessing version."""
    parts = [image_digest, model_id, f"pp{PREPROCESS_VERSION}"]
    if extra:
        parts.append(extra)
    return "|".join(parts)


def default_cache_dir() -> Path:
    """$SAM_INSPECT_CACHE, else the platform's user cache folder + sam-inspect/embeddings.

    Linux: $XDG_CACHE_HOME or ~/.cache; macOS: ~/Library/Caches; Windows: %LOCALAPPDATA%.
    """
    env = os.environ.get("SAM_INSPECT_CACHE")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "sam-inspect" / "embeddings"


def _value_nbytes(value: Value) -> int:
    return sum(int(a.nbytes) for a in value.values())


def _checked_value(key: str, value: Value) -> Value:
    if not isinstance(key, str) or not key:
        raise CacheError(f"cache key must be a non-empty string, got {key!r}")
    if not isinstance(value, dict):
        raise CacheError(f"cache value must be a dict[str, np.ndarray], got {type(value).__name__}")
    out: Value = {}
    for name, arr in value.items():
        arr = np.asarray(arr)
        if not isinstance(name, str) or arr.dtype.kind not in _ALLOWED_KINDS:
            raise CacheError(
                f"cache value {name!r} for key {key!r} has dtype {arr.dtype}: only bool, integer "
                "and float arrays under string names can be cached"
            )
        # A private copy: the caller may keep writing into its array.
        out[name] = np.array(arr, order="C", copy=True)
    return out


def _encode(key: str, value: Value) -> list[bytes | np.ndarray]:
    """The file's chunks (header then padded payload), in write order."""
    entries, offset = [], 0
    for name, arr in value.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        entries.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                        "offset": offset, "nbytes": int(arr.nbytes)})
        offset += int(arr.nbytes)
    payload_len = offset
    payload = np.zeros(payload_len, np.uint8)
    for entry, arr in zip(entries, value.values(), strict=True):
        payload[entry["offset"]:entry["offset"] + entry["nbytes"]] = arr.reshape(-1).view(np.uint8)
    checksum = hashlib.blake2b(payload, digest_size=16).hexdigest()
    header = json.dumps({"version": FORMAT_VERSION, "key": key, "arrays": entries,
                         "payload_bytes": payload_len, "checksum": checksum}).encode()
    head_len = len(MAGIC) + _LEN.size + len(header)
    pad = -head_len % _ALIGN
    return [MAGIC, _LEN.pack(len(header) + pad), header, b" " * pad, payload]


def _decode(key: str, data: bytearray) -> Value:
    """Parse and verify a cache file's bytes; arrays are writable views into `data`."""
    if data[:len(MAGIC)] != MAGIC:
        raise _CorruptFile("bad magic (not a sam-inspect cache file)")
    start = len(MAGIC) + _LEN.size
    if len(data) < start:
        raise _CorruptFile("truncated header")
    (hlen,) = _LEN.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(bytes(data[start:start + hlen]))
        version = header["version"]
        file_key = header["key"]
        entries = header["arrays"]
        payload_len = int(header["payload_bytes"])
        checksum = header["checksum"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _CorruptFile(f"unreadable header ({exc})") from None
    if version != FORMAT_VERSION:
        raise _CorruptFile(f"format version {version!r}, expected {FORMAT_VERSION}")
    if file_key != key:
        raise _CorruptFile(f"holds key {file_key!r}, expected {key!r}")
    payload = memoryview(data)[start + hlen:]
    if len(payload) != payload_len:
        raise _CorruptFile(f"payload is {len(payload)} bytes, header says {payload_len}")
    if hashlib.blake2b(payload, digest_size=16).hexdigest() != checksum:
        raise _CorruptFile("payload checksum mismatch")
    value: Value = {}
    try:
        for e in entries:
            dtype = np.dtype(e["dtype"])
            shape = tuple(int(s) for s in e["shape"])
            off, nbytes = int(e["offset"]), int(e["nbytes"])
            if dtype.kind not in _ALLOWED_KINDS or off < 0 or off + nbytes > payload_len:
                raise _CorruptFile(f"bad array entry {e!r}")
            arr = np.frombuffer(payload, dtype, count=nbytes // dtype.itemsize, offset=off)
            value[str(e["name"])] = arr.reshape(shape)
    except (ValueError, KeyError, TypeError) as exc:
        raise _CorruptFile(f"bad array entry ({exc})") from None
    return value


class EmbeddingCache:
    """Memory LRU (bounded in bytes) in front of an optional verified disk store.

    Values returned by `get` are shared with the cache: treat them as read-only.
    """

    def __init__(
        self,
        max_bytes: int = 1 << 30,
        disk_dir: Path | str | None = None,
        max_disk_bytes: int | None = None,
    ) -> None:
        if max_bytes < 0:
            raise CacheError(f"max_bytes must be >= 0, got {max_bytes}")
        if max_disk_bytes is not None and max_disk_bytes < 0:
            raise CacheError(f"max_disk_bytes must be >= 0, got {max_disk_bytes}")
        self.max_bytes = int(max_bytes)
        self.disk_dir = Path(disk_dir).expanduser() if disk_dir is not None else None
        self.max_disk_bytes = max_disk_bytes
        self._mem: OrderedDict[str, Value] = OrderedDict()
        self._stats = CacheStats()
        self._lock = threading.Lock()
        self._warned_write = False

    # ----------------------------------------------------------------- public
    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    def __contains__(self, key: object) -> bool:
        """In memory, or a file for it on disk (not verified until `get`)."""
        if not isinstance(key, str):
            return False
        with self._lock:
            if key in self._mem:
                return True
        path = self._path(key)
        return path is not None and path.is_file()

    def __len__(self) -> int:
        """Entries held in memory."""
        with self._lock:
            return len(self._mem)

    def get(self, key: str) -> Value | None:
        """The value for `key` (memory first, then a verified disk file), or None."""
        with self._lock:
            value = self._mem.get(key)
            if value is not None:
                self._mem.move_to_end(key)
                self._stats.hits_memory += 1
                return value
        value = self._read_disk(key)
        with self._lock:
            if value is None:
                self._stats.misses += 1
                return None
            self._stats.hits_disk += 1
            self._remember(key, value)
        return value

    def put(self, key: str, value: Value) -> None:
        """Store `value` in memory (unless bigger than max_bytes) and on disk when configured."""
        value = _checked_value(key, value)
        with self._lock:
            self._remember(key, value)
        if self.disk_dir is not None:
            self._write_disk(key, value)

    def clear(self) -> None:
        """Forget every entry held in memory (disk files are kept)."""
        with self._lock:
            self._mem.clear()
            self._stats.bytes_in_memory = 0

    # ----------------------------------------------------------------- memory
    def _remember(self, key: str, value: Value) -> None:
        """Insert under the lock, evicting least recently used entries past max_bytes."""
        old = self._mem.pop(key, None)
        if old is not None:
            self._stats.bytes_in_memory -= _value_nbytes(old)
        size = _value_nbytes(value)
        if size > self.max_bytes:
            return
        self._mem[key] = value
        self._stats.bytes_in_memory += size
        while self._stats.bytes_in_memory > self.max_bytes:
            _, evicted = self._mem.popitem(last=False)
            self._stats.bytes_in_memory -= _value_nbytes(evicted)
            self._stats.evictions += 1

    # ------------------------------------------------------------------- disk
    def _path(self, key: str) -> Path | None:
        if self.disk_dir is None:
            return None
        # A hash: keys hold characters (|, :) some file systems refuse, and may be long.
        return self.disk_dir / (hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + SUFFIX)

    def _count_disk_error(self) -> None:
        with self._lock:
            self._stats.disk_errors += 1

    def _read_disk(self, key: str) -> Value | None:
        path = self._path(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = bytearray(size)  # writable, so arrays handed to torch are writable too
                got = f.readinto(data)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._count_disk_error()
            log.warning("embedding cache: cannot read %s (%s); recomputing", path, exc)
            return None
        try:
            if got != size:
                raise _CorruptFile(f"read {got} of {size} bytes")
            value = _decode(key, data)
        except _CorruptFile as exc:
            self._count_disk_error()
            log.warning("embedding cache: deleting corrupt file %s: %s", path, exc)
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # mtime = last use, for pruning
        except OSError:
            pass
        return value

    def _write_disk(self, key: str, value: Value) -> None:
        path = self._path(key)
        assert path is not None and self.disk_dir is not None
        tmp_name = None
        try:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.disk_dir)
            with os.fdopen(fd, "wb") as f:
                for chunk in _encode(key, value):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            self._count_disk_error()
            self._warn_write(exc)
            return
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass
        if self.max_disk_bytes is not None:
            self._prune()

    def _warn_write(self, exc: OSError) -> None:
        if exc.errno == errno.ENOSPC:
            fix = "free disk space or set SAM_INSPECT_CACHE to a folder on another disk"
        else:
            fix = "make it writable or set SAM_INSPECT_CACHE to a writable folder"
        msg = ("embedding cache: cannot write to %s (%s); %s. Embeddings stay in memory only "
               "for this session.")
        if not self._warned_write:
            self._warned_write = True
            log.warning(msg, self.disk_dir, exc.strerror or exc, fix)
        else:
            log.debug(msg, self.disk_dir, exc.strerror or exc, fix)

    def _prune(self) -> None:
        """Delete the least recently used files (oldest mtime) until under max_disk_bytes."""
        assert self.disk_dir is not None and self.max_disk_bytes is not None
        files = []
        try:
            with os.scandir(self.disk_dir) as it:
                for entry in it:
                    if entry.name.endswith(SUFFIX) and not entry.name.startswith(".tmp-"):
                        try:
                            st = entry.stat()
                        except FileNotFoundError:
                            continue  # pruned by another thread
                        files.append((st.st_mtime_ns, entry.name, st.st_size))
        except OSError as exc:
            log.warning("embedding cache: cannot list %s for pruning (%s)", self.disk_dir, exc)
            return
        total = sum(size for _, _, size in files)
        for _, name, size in sorted(files):
            if total <= self.max_disk_bytes:
                break
            try:
                (self.disk_dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("embedding cache: cannot delete %s (%s)", self.disk_dir / name, exc)
                continue
            total -= size
