"""Low-res SAM logits (256x256) to boolean masks at the original image size, only where needed.

SamPredictor upsamples every candidate twice over the full frame (bilinear to 1024x1024, crop the
unpadded part, bilinear to the original size). Both steps are separable linear maps, so their
composite is one (H x 256) matrix per axis; we build it once per image size by pushing unit
impulses through the same torch interpolation (so the weights are PyTorch's own), and then
evaluate only the window of output pixels that can be foreground: bilinear weights are
non-negative, so an output pixel can exceed the threshold only if one of its source pixels does.
Written by hand because no library offers "resize twice, crop between, evaluate a window".
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .constants import IMG_SIZE, LOW_RES_SIZE, MASK_THRESHOLD

# Above this many multiply-adds a window is done by two full-frame resizes (OpenCV).
_DENSE_WINDOW_LIMIT = 24_000_000


@lru_cache(maxsize=16)
def _axis_matrix(low: int, padded: int, valid: int, out: int) -> torch.Tensor:
    """(out x low) weights of: linear resize low->padded, keep the first `valid`, resize ->out."""
    eye = torch.eye(low, dtype=torch.float32).unsqueeze(0)  # 1, low(channels), low(length)
    up = F.interpolate(eye, size=padded, mode="linear", align_corners=False)[..., :valid]
    comp = F.interpolate(up, size=out, mode="linear", align_corners=False)  # 1, low, out
    return comp[0].t().contiguous()


class MaskUpsampler:
    """Turns (N, 256, 256) low-res logits into bool (N, H, W) masks for one image geometry."""

    def __init__(self, input_size: tuple[int, int], original_size: tuple[int, int]) -> None:
        self.input_size = input_size
        self.original_size = original_size
        h, w = original_size
        self.ay = _axis_matrix(LOW_RES_SIZE, IMG_SIZE, input_size[0], h)  # H x 256
        self.ax = _axis_matrix(LOW_RES_SIZE, IMG_SIZE, input_size[1], w)  # W x 256
        # Source columns each output row/column touches (first, last), for windowing.
        self._ry = _support(self.ay)
        self._rx = _support(self.ax)

    def __call__(self, logits: torch.Tensor) -> np.ndarray:
        logits = logits.detach().float().cpu()
        n = logits.shape[0]
        h, w = self.original_size
        out = np.zeros((n, h, w), dtype=bool)
        for i in range(n):
            self._one(logits[i], out[i])
        return out

    def logits(self, low: torch.Tensor) -> torch.Tensor:
        """Full-frame float logits (N, H, W), exactly SamPredictor's postprocessing."""
        x = F.interpolate(low[:, None].float(), (IMG_SIZE, IMG_SIZE), mode="bilinear",
                          align_corners=False)
        x = x[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)[:, 0]

    def _full_frame(self, low: np.ndarray) -> np.ndarray:
        """SamPredictor's two bilinear resizes with OpenCV's (same half-pixel convention, about
        3x faster than torch here; logits agree to ~1e-4, so only pixels within that of the
        threshold can differ)."""
        x = cv2.resize(low, (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_LINEAR)
        x = x[: self.input_size[0], : self.input_size[1]]
        h, w = self.original_size
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)

    def _one(self, low: torch.Tensor, out: np.ndarray) -> None:
        pos = low > MASK_THRESHOLD
        rows = torch.nonzero(pos.any(1)).flatten()
        if len(rows) == 0:
            return
        cols = torch.nonzero(pos.any(0)).flatten()
        r0, r1 = int(rows[0]), int(rows[-1])
        c0, c1 = int(cols[0]), int(cols[-1])
        # Output rows whose support overlaps source rows r0..r1 (supports are monotone).
        y0, y1 = _window(self._ry, r0, r1)
        x0, x1 = _window(self._rx, c0, c1)
        if y1 <= y0 or x1 <= x0:
            return
        k0, k1 = int(self._ry[0][y0]), int(self._ry[1][y1 - 1]) + 1
        l0, l1 = int(self._rx[0][x0]), int(self._rx[1][x1 - 1]) + 1
        ny, nx, nk, nl = y1 - y0, x1 - x0, k1 - k0, l1 - l0
        if ny * nk * nl + ny * nl * nx > _DENSE_WINDOW_LIMIT:
            out[:] = self._full_frame(low.numpy()) > MASK_THRESHOLD
            return
        win = self.ay[y0:y1, k0:k1] @ low[k0:k1, l0:l1] @ self.ax[x0:x1, l0:l1].t()
        out[y0:y1, x0:x1] = (win > MASK_THRESHOLD).numpy()


def _support(a: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """First and last non-zero column of each row of a (rows x low) weight matrix."""
    nz = (a != 0).numpy()
    first = nz.argmax(1)
    last = nz.shape[1] - 1 - nz[:, ::-1].argmax(1)
    return first, last


def _window(support: tuple[np.ndarray, np.ndarray], s0: int, s1: int) -> tuple[int, int]:
    """Output index range [o0, o1) of rows whose source support meets [s0, s1]."""
    first, last = support
    o0 = int(np.searchsorted(last, s0, side="left"))
    o1 = int(np.searchsorted(first, s1, side="right"))
    return o0, o1
