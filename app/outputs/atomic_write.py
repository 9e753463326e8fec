"""Write files so that a crash or a full disk never leaves a half-written result behind.

Files get the permissions of any file the process creates (0666 minus the umask, so 0644 under
the usual umask 022): a line service or a share running as another user can read the results.
Temp files are named `.<name>.<random>.tmp` in the target's folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

import cv2
import numpy as np


def _create_temp(path: Path) -> tuple[int, str]:
    """Open a new temp file beside path. Unlike tempfile.mkstemp (always 0600), the mode is
    0666 and the kernel applies the umask (and default ACLs) as for any new file; O_EXCL makes
    the name ours alone."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name beside {path}")


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write data to path via a temp file in the same folder, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Encode a uint8/uint16 grey, RGB (converted to OpenCV's BGR) or bool image as PNG."""
    img = np.asarray(image)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    return write_bytes(path, buf.tobytes())


def is_temporary(name: str) -> bool:
    """Whether a file name is one of write_bytes' temporaries (".<name>.<random>.tmp"), which a
    process killed mid-write leaves behind."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3
