"""segment-anything's ResizeLongestSide in numpy only (for the torch-free line runtime).

Same geometry as segment_anything.utils.transforms.ResizeLongestSide: the longest side becomes
IMG_SIZE (rounded half up), coordinates scale by new/old per axis. The image resize reproduces
what ResizeLongestSide.apply_image does (PIL's antialiased bilinear resample of a uint8 image,
horizontal pass then vertical, 8-bit between passes, 22-bit fixed-point weights), so the line
runtime feeds the encoder the same pixels as the torch engine. Written by hand because OpenCV
has no antialiased bilinear resize matching PIL's (INTER_LINEAR does not antialias, INTER_AREA
uses a box filter), and Pillow is not a line-controller dependency.
"""

from __future__ import annotations

import numpy as np

from sam_engine.constants import IMG_SIZE

_PRECISION_BITS = 32 - 8 - 2  # PIL's ImagingResample fixed-point precision


def preprocess_shape(h: int, w: int, long_side: int = IMG_SIZE) -> tuple[int, int]:
    """(h, w) with the longest side scaled to long_side (as ResizeLongestSide)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def apply_coords(coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(..., 2) xy in original pixels -> the resized frame, float32."""
    h, w = original_size
    nh, nw = preprocess_shape(h, w)
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= nw / w
    out[..., 1] *= nh / h
    return out.astype(np.float32)


def apply_boxes(boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(B, 4) xyxy in original pixels -> the resized frame, float32."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 2, 2)
    return apply_coords(b, original_size).reshape(-1, 4)


def _coeffs(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """PIL's bilinear (triangle) filter taps: source indices (n_out, K) and fixed-point weights."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = fscale  # bilinear filter support 1.0, widened when downscaling (antialias)
    centers = (np.arange(n_out) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    k = int((xmax - xmin).max())
    idx = xmin[:, None] + np.arange(k)[None]
    valid = idx < xmax[:, None]
    w = np.clip(1.0 - np.abs((idx - centers[:, None] + 0.5) / fscale), 0.0, None) * valid
    w = w / w.sum(1, keepdims=True)
    fixed = np.floor(w * (1 << _PRECISION_BITS) + 0.5).astype(np.int64)  # weights are >= 0
    return np.minimum(idx, n_in - 1), fixed


def _resample(img: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    idx, fixed = _coeffs(img.shape[axis], n_out)
    acc = np.full(
        img.shape[:axis] + (n_out,) + img.shape[axis + 1 :], 1 << (_PRECISION_BITS - 1), np.int64
    )
    shape = [1] * img.ndim
    shape[axis] = n_out
    for t in range(idx.shape[1]):  # a few taps; each a vectorised gather over the whole image
        acc += np.take(img, idx[:, t], axis=axis).astype(np.int64) * fixed[:, t].reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_longest(rgb: np.ndarray, long_side: int = IMG_SIZE) -> np.ndarray:
    """RGB uint8 (H, W, 3) resized so its longest side is long_side, like apply_image."""
    h, w = rgb.shape[:2]
    nh, nw = preprocess_shape(h, w, long_side)
    out = rgb
    if nw != w:
        out = _resample(out, nw, axis=1)
    if nh != h:
        out = _resample(out, nh, axis=0)
    return np.ascontiguousarray(out)


def pad_to_square(resized: np.ndarray, side: int = IMG_SIZE) -> np.ndarray:
    """Zero-pad a resized (h, w, 3) uint8 image at the bottom/right to (side, side, 3)."""
    h, w = resized.shape[:2]
    out = np.zeros((side, side, resized.shape[2]), dtype=resized.dtype)
    out[:h, :w] = resized
    return out
