"""Low-res logits to full-size masks without torch, windowed (used by the torch engine through
mask_upsample and by the ONNX runtime directly).

The composite of SamPredictor's two bilinear resizes (256 -> IMG_SIZE, crop to the resized
image, -> original size) is one (H x 256) matrix per axis, built analytically with PyTorch's
align_corners=False rule (source = (dst + 0.5) * in / out - 0.5, clamped at 0; a test checks it
against torch's own interpolation). Only the window of output pixels that can exceed the
threshold is evaluated (bilinear weights are non-negative, so an output pixel can be foreground
only if one of its source pixels is); a window too large for that is done by two OpenCV resizes
(same half-pixel convention, logits within ~1e-4). Written by hand because no library offers
"resize twice, crop between, evaluate one window".
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from sam_engine.constants import IMG_SIZE, LOW_RES_SIZE, MASK_THRESHOLD

_DENSE_WINDOW_LIMIT = 24_000_000  # multiply-adds; above this, two full-frame OpenCV resizes


def linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out x n_in) weights of a 1-D linear resize with align_corners=False (PyTorch's rule)."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = src - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - l1)
    np.add.at(m, (rows, i1), l1)
    return m


@lru_cache(maxsize=16)
def axis_matrix(low: int, padded: int, valid: int, out: int) -> np.ndarray:
    """(out x low) float32: resize low->padded, keep the first `valid`, resize ->out."""
    up = linear_matrix(low, padded)[:valid]  # valid x low
    return (linear_matrix(valid, out) @ up).astype(np.float32)


def _support(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz = a != 0
    first = nz.argmax(1)
    last = nz.shape[1] - 1 - nz[:, ::-1].argmax(1)
    return first, last


def _window(support: tuple[np.ndarray, np.ndarray], s0: int, s1: int) -> tuple[int, int]:
    first, last = support
    return (int(np.searchsorted(last, s0, side="left")),
            int(np.searchsorted(first, s1, side="right")))


class NumpyMaskUpsampler:
    """(N, 256, 256) float logits -> bool (N, H, W) masks for one image geometry."""

    def __init__(self, input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
        self.input_size = tuple(input_size)
        self.original_size = tuple(original_size)
        h, w = original_size
        self.ay = axis_matrix(LOW_RES_SIZE, IMG_SIZE, input_size[0], h)
        self.ax = axis_matrix(LOW_RES_SIZE, IMG_SIZE, input_size[1], w)
        self._ry = _support(self.ay)
        self._rx = _support(self.ax)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=np.float32)
        out = np.zeros((logits.shape[0], *self.original_size), dtype=bool)
        for i in range(logits.shape[0]):
            self._one(logits[i], out[i])
        return out

    def logits(self, low: np.ndarray) -> np.ndarray:
        """Full-frame float logits (N, H, W) (for tests and debugging)."""
        low = np.asarray(low, dtype=np.float32)
        return np.einsum("hk,nkl,wl->nhw", self.ay, low, self.ax)

    def _one(self, low: np.ndarray, out: np.ndarray) -> None:
        pos = low > MASK_THRESHOLD
        rows = np.flatnonzero(pos.any(1))
        if len(rows) == 0:
            return
        cols = np.flatnonzero(pos.any(0))
        y0, y1 = _window(self._ry, int(rows[0]), int(rows[-1]))
        x0, x1 = _window(self._rx, int(cols[0]), int(cols[-1]))
        if y1 <= y0 or x1 <= x0:
            return
        k0, k1 = int(self._ry[0][y0]), int(self._ry[1][y1 - 1]) + 1
        l0, l1 = int(self._rx[0][x0]), int(self._rx[1][x1 - 1]) + 1
        ny, nx, nk, nl = y1 - y0, x1 - x0, k1 - k0, l1 - l0
        if ny * nk * nl + ny * nl * nx > _DENSE_WINDOW_LIMIT:
            x = cv2.resize(low, (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_LINEAR)
            x = x[: self.input_size[0], : self.input_size[1]]
            h, w = self.original_size
            out[:] = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR) > MASK_THRESHOLD
            return
        win = self.ay[y0:y1, k0:k1] @ low[k0:k1, l0:l1] @ self.ax[x0:x1, l0:l1].T
        out[y0:y1, x0:x1] = win > MASK_THRESHOLD
