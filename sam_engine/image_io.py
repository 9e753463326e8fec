"""Image loading and conversion to the RGB uint8 (H, W, 3) layout every engine takes.

Conversions done by `to_rgb8` (documented, never silent rejections):

- grayscale (H, W) or (H, W, 1): the channel is replicated to R, G and B;
- RGBA (H, W, 4): the alpha channel is dropped (not composited over a background);
- uint8: kept as is;
- bool: False -> 0, True -> 255;
- uint16 (16-bit PNG/TIFF, 12-bit camera data stored in 16 bits): linear stretch of the image's
  actual range, [min, max] -> [0, 255], rounded; a constant image maps to 0;
- other integer types: kept (cast) when every value lies in 0..255, else the min-max stretch;
- float: values in [0, 1] are scaled by 255 and rounded; any other range is min-max stretched;
  NaN and +/-inf pixels become 0 (the range is taken over the finite values).

The stretch uses one range for all channels, so colour balance is kept. Rejected with ImageError:
an empty array, ndim other than 2 or 3, a channel count other than 1, 3 or 4, complex, object or
string arrays, and float images without a single finite value.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import cv2
import numpy as np

from sam_engine.errors import ImageError

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

_ACCEPTED = (
    "accepted: (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA arrays of bool, integer or "
    "float type"
)
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"

MAX_PIXELS_ENV = "SAM_INSPECT_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000
"""Images above this many pixels (100 MP; a decoded 100-MP RGB frame needs 300 MB, SAM's
preprocessing several times that) are refused unless SAM_INSPECT_MAX_PIXELS raises the limit."""


def _describe(image: np.ndarray) -> str:
    return f"shape {tuple(image.shape)}, dtype {image.dtype}"


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map [lo, hi] -> [0, 255] as uint8; lo == hi maps everything to 0.

    Hand-written rather than cv2.normalize: OpenCV has no int64/uint32/uint64 support and does
    not skip NaN/inf, which the float rule needs.
    """
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    # float32 is exact for <= 16-bit data and halves the memory of a 12-MP frame's temporaries.
    narrow = values.dtype.itemsize <= 2 or values.dtype == np.float32
    scaled = values.astype(np.float32 if narrow else np.float64)
    scaled -= lo
    scaled *= 255.0 / (hi - lo)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _channels_to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        return image[:, :, :3]  # alpha dropped
    return image


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Convert an image array to C-contiguous RGB uint8 (H, W, 3) (rules in the module doc).

    A C-contiguous uint8 (H, W, 3) input is returned as is (no copy).
    """
    image = np.asarray(image)
    kind = image.dtype.kind
    if kind not in "biuf":
        raise ImageError(
            f"unsupported image {_describe(image)}: {image.dtype} pixels cannot be converted; "
            f"{_ACCEPTED}"
        )
    if image.size == 0:
        raise ImageError(f"empty image ({_describe(image)}); {_ACCEPTED}")
    if image.ndim not in (2, 3):
        raise ImageError(f"unsupported image {_describe(image)}: expected 2 or 3 dimensions; "
                         f"{_ACCEPTED}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageError(
            f"unsupported image {_describe(image)}: {image.shape[2]} channels; {_ACCEPTED}"
        )
    rgb = _channels_to_rgb(image)

    if kind == "b":
        out = rgb.astype(np.uint8) * np.uint8(255)
    elif rgb.dtype == np.uint8:
        out = rgb
    elif kind == "f":
        finite = np.isfinite(rgb)
        if not finite.any():
            raise ImageError(
                f"image {_describe(image)} has no finite pixel value (all NaN/inf); {_ACCEPTED}"
            )
        all_finite = bool(finite.all())
        valid = rgb if all_finite else rgb[finite]
        lo, hi = float(valid.min()), float(valid.max())
        clean = rgb if all_finite else np.where(finite, rgb, 0)
        if lo >= 0.0 and hi <= 1.0:
            out = np.rint(clean.astype(np.float64) * 255.0).astype(np.uint8)
        else:
            out = _stretch(clean, lo, hi)
            if not all_finite:
                out[~finite] = 0
    else:  # integers
        lo, hi = int(rgb.min()), int(rgb.max())
        if rgb.dtype != np.uint16 and lo >= 0 and hi <= 255:
            out = rgb.astype(np.uint8)
        else:
            out = _stretch(rgb, lo, hi)
    return np.ascontiguousarray(out)


def image_digest(image: np.ndarray) -> str:
    """blake2b (16-byte) hex digest of an array's shape, dtype and pixel bytes."""
    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(arr.shape), arr.dtype.str)).encode())
    h.update(arr.reshape(-1).view(np.uint8))  # raw bytes, no copy
    return h.hexdigest()


def _is_truncated(data: bytes) -> bool:
    """True for a JPEG without its end-of-image marker or a PNG without its IEND chunk.

    OpenCV decodes such files partially (grey/black filled) with only a stderr warning, so the
    structure is checked here. Trailing bytes after the marker (some cameras add them) are allowed.
    """
    if data.startswith(_JPEG_SOI):
        return _JPEG_EOI not in data[-4096:]
    if data.startswith(_PNG_SIGNATURE):
        return _PNG_IEND not in data[-4096:]
    return False


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of PNG, JPEG, TIFF or BMP bytes, else None.

    Hand-written because OpenCV has no header-only read (imdecode allocates the full frame
    first) and Pillow is not in the desktop bundle; these four layouts are fixed by their specs.
    None (unknown format, damaged header) means "decode and check afterwards".
    """
    try:
        if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data.startswith(_JPEG_SOI):
            return _jpeg_size(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit dims
                return struct.unpack("<HH", data[18:22])
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)  # a negative height means a top-down bitmap
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG markers to the first start-of-frame (SOF0..SOF15 except DHT/JPG/DAC)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # stand-alone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first IFD."""
    e = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(e + "I", data[4:8])
    (n,) = struct.unpack(e + "H", data[ifd:ifd + 2])
    dims: dict[int, int] = {}
    for k in range(n):
        tag, typ, _count, raw = struct.unpack(e + "HHI4s", data[ifd + 2 + 12 * k:ifd + 14 + 12 * k])
        if tag in (256, 257):
            dims[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), raw[:2 if typ == 3 else 4])[0]
    return (dims[256], dims[257]) if len(dims) == 2 else None


def pixel_limit() -> int:
    """The pixel limit: SAM_INSPECT_MAX_PIXELS when set, else DEFAULT_MAX_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is None or not text.strip():
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ImageError(f"{MAX_PIXELS_ENV}={text!r} is not a positive number of pixels "
                         f"(e.g. {MAX_PIXELS_ENV}=200000000 for 200 MP)")
    return value


def _check_pixels(path: Path, w: int, h: int, limit: int) -> None:
    if w * h > limit:
        raise ImageError(
            f"image file {path} is {w}x{h} pixels ({w * h / 1e6:.1f} MP), above the limit of "
            f"{limit / 1e6:g} MP; downscale or crop it, or raise the limit with "
            f"{MAX_PIXELS_ENV}=<pixels>"
        )


def load_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), converted with `to_rgb8`.

    16-bit PNG/TIFF keep their depth until `to_rgb8` stretches them; JPEG EXIF orientation is
    applied; alpha is dropped. Raises ImageError naming the file when it is missing, a directory,
    empty, truncated, corrupt, in a format OpenCV cannot decode, or larger than `max_pixels`
    (default: `pixel_limit()`, 100 MP or SAM_INSPECT_MAX_PIXELS); the size is read from the
    header of PNG, JPEG, TIFF and BMP files, so those are refused before they are decoded.
    """
    path = Path(path)
    limit = pixel_limit() if max_pixels is None else max_pixels
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageError(f"image file {path} is empty (0 bytes); re-export or re-copy it")
    if _is_truncated(data):
        raise ImageError(
            f"image file {path} is truncated (incomplete transfer or copy?); re-copy it"
        )
    size = header_size(data)
    if size is not None:
        _check_pixels(path, *size, limit)
    # imdecode on the bytes instead of cv2.imread(path): imread cannot open non-ASCII paths on
    # Windows. ANYDEPTH|ANYCOLOR keeps 16-bit data and grayscale like IMREAD_UNCHANGED, but unlike
    # it still applies the JPEG EXIF orientation; the alpha channel it drops is dropped anyway.
    buf = np.frombuffer(data, np.uint8)
    decoded = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if decoded is None:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ImageError(
                f"cannot decode {path}: unsupported image format {path.suffix or '(no suffix)'}; "
                f"use one of {suffixes}"
            )
        raise ImageError(f"cannot decode image file {path}: it is corrupt or not a "
                         f"{path.suffix.lower().lstrip('.').upper()} image")
    _check_pixels(path, decoded.shape[1], decoded.shape[0], limit)  # formats without a header read
    if decoded.ndim == 3 and decoded.shape[2] == 3:  # ANYCOLOR: gray or BGR, alpha dropped
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return to_rgb8(decoded)
