"""Resumable, verified checkpoint downloads with the standard library (urllib) only.

Bytes go to DEST.part; an existing .part is resumed with an HTTP Range request; the file is
renamed to DEST only once its size and sha256 match.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from sam_engine.errors import DownloadError
from sam_engine.weights.file_hash import file_sha256, remember_sha256

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "sam-inspect (urllib)"
_SPACE_MARGIN = 64 << 20  # keep some room for everything else on the disk
_RETRY = "run the same command again to resume"


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: Path,
    expected_size: int | None,
    expected_sha256: str | None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Download `url` to `dest` (resuming DEST.part), verify size and sha256, return dest.

    Raises DownloadError naming the URL and the file on network failure (the .part is kept:
    run again to resume), on a size or checksum mismatch (the .part is deleted and nothing is
    installed) and when the disk is too full.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if _already_there(dest, expected_size, expected_sha256):
        log.info("%s is already complete: nothing to download", dest)
        return dest
    part = part_path(dest)
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        log.info("%s is larger than the expected file: starting again", part)
        part.unlink()
        have = 0
    _check_space(dest.parent, expected_size, have, url)

    sha = hashlib.sha256()
    if have:
        with part.open("rb") as f:  # the hash must cover the bytes already there
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
    if expected_size is None or have < expected_size:
        have, sha = _fetch(url, part, have, sha, expected_size, progress, timeout)

    if expected_size is not None and have != expected_size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"download of {url} gave {have:,} bytes, expected {expected_size:,}: the server has "
            f"a different file, so {dest} was not installed; check the URL (--url for a mirror)"
        )
    got = sha.hexdigest()
    if expected_sha256 is not None and got != expected_sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"download of {url} has sha256 {got}, expected {expected_sha256}: the file is "
            f"corrupt or not the official one, so {dest} was not installed (the partial file "
            "was deleted); run the command again, or check the URL (--url for a mirror)"
        )
    os.replace(part, dest)
    remember_sha256(dest, got)  # `models verify` and load_sam need not hash it again
    return dest


def _already_there(dest: Path, expected_size: int | None, expected_sha256: str | None) -> bool:
    """True when dest exists with the expected size and sha256 (both must be known)."""
    if expected_size is None or expected_sha256 is None or not dest.is_file():
        return False
    if dest.stat().st_size != expected_size:
        return False
    return file_sha256(dest) == expected_sha256


def _check_space(folder: Path, expected_size: int | None, have: int, url: str) -> None:
    if expected_size is None:
        return
    need = expected_size - have
    free = shutil.disk_usage(folder).free
    if free < need + _SPACE_MARGIN:
        raise DownloadError(
            f"not enough free disk space in {folder} for {url}: {need / 2**20:,.0f} MiB needed, "
            f"{free / 2**20:,.0f} MiB free; free some space or choose another folder with --dir"
        )


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _range_start(resp) -> int | None:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _fetch(url, part, have, sha, expected_size, progress, timeout, retried=False):
    """Append the rest of `url` to `part`; returns (bytes now in `part`, their running sha256)."""
    try:
        resp = _open(url, have, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and not retried:  # range not satisfiable: .part unusable
            part.unlink(missing_ok=True)
            return _fetch(url, part, 0, hashlib.sha256(), expected_size, progress, timeout, True)
        raise DownloadError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL "
            f"(--url for a mirror) or {_RETRY} later"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(url, part, have, exc) from None
    with resp:
        if have and (resp.status != 206 or _range_start(resp) != have):
            log.info("%s ignored the resume request: downloading from the start", url)
            have, sha = 0, hashlib.sha256()
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else expected_size
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url} is {total:,} bytes, expected {expected_size:,}: the server has a "
                f"different file, so nothing was installed; check the URL (--url for a mirror)"
            )
        return _stream(url, resp, part, have, sha, total, progress), sha


def _stream(url, resp, part, have, sha, total, progress) -> int:
    """Copy the response body to `part` (appending when have > 0); returns the bytes in `part`."""
    from tqdm import tqdm

    try:
        with part.open("ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), file=sys.stderr, disable=not progress,
            leave=False,
        ) as bar:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                sha.update(chunk)
                have += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            raise DownloadError(
                f"cannot write {part} while downloading {url} ({exc.strerror}); free some space "
                f"or choose another folder with --dir, then {_RETRY}"
            ) from None
        raise _network_error(url, part, _size(part), exc) from None
    if total is not None and have < total:
        raise DownloadError(
            f"download of {url} stopped early at {have:,} of {total:,} bytes (kept in {part}); "
            f"{_RETRY}"
        )
    return have


_DISK_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # disk full, over quota


def _size(path: Path) -> int:
    with contextlib.suppress(OSError):
        return path.stat().st_size
    return 0


def _network_error(url: str, part: Path, have: int, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc
    kept = f" ({have:,} bytes kept in {part})" if have else ""
    return DownloadError(f"download of {url} failed: {reason}{kept}; {_RETRY}")
