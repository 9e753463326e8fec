"""The working window of one prompt: a crop of the image, downscaled to a bounded size.

Every classical step runs on this window, never the whole image, so a prompt costs the same
on a 1-MP photo as on a thumbnail.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Longest side of the processing window; larger crops are downscaled to it (speed bound).
MAX_SIDE = 320


@dataclass(frozen=True)
class Window:
    """A crop [y0:y1, x0:x1] of the image, processed at `scale` (<= 1)."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float
    gray: np.ndarray  # float32 (h, w) luminance 0..255 at processing scale
    rgb: np.ndarray | None  # float32 (h, w, 3) at processing scale; None if not asked for

    @property
    def shape(self) -> tuple[int, int]:
        return self.gray.shape

    def to_local(self, x: float, y: float) -> tuple[float, float]:
        """Image xy (pixel-edge coordinates) to window xy at processing scale."""
        return (x - self.x0) * self.scale, (y - self.y0) * self.scale

    def box_slice(self, box: np.ndarray) -> tuple[int, int, int, int]:
        """An image xyxy box as integer window bounds (lx0, ly0, lx1, ly1), at least 1 px."""
        h, w = self.shape
        lx0, ly0 = self.to_local(box[0], box[1])
        lx1, ly1 = self.to_local(box[2], box[3])
        ix0 = int(np.clip(np.floor(lx0 + 1e-6), 0, w - 1))
        iy0 = int(np.clip(np.floor(ly0 + 1e-6), 0, h - 1))
        ix1 = int(np.clip(np.ceil(lx1 - 1e-6), ix0 + 1, w))
        iy1 = int(np.clip(np.ceil(ly1 - 1e-6), iy0 + 1, h))
        return ix0, iy0, ix1, iy1

    def paste(self, mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """A window mask back at full resolution in an image-size bool array."""
        out = np.zeros(image_size, dtype=bool)
        cw, ch = self.x1 - self.x0, self.y1 - self.y0
        if mask.shape != (ch, cw):
            # Linear resize of the 0/1 mask then 0.5 threshold: smooth edges, no staircase.
            m = cv2.resize(mask.astype(np.float32), (cw, ch), interpolation=cv2.INTER_LINEAR)
            mask = m >= 0.5
        out[self.y0:self.y1, self.x0:self.x1] = mask
        return out


def make_window(rgb: np.ndarray | None, gray: np.ndarray, x0: float, y0: float, x1: float,
                y1: float) -> Window:
    """The window covering image xyxy (x0, y0, x1, y1), clipped to the image (rgb None: a
    grey-only window, which saves the colour resize)."""
    h, w = gray.shape
    ix0, iy0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    ix1, iy1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    ix1, iy1 = max(ix1, ix0 + 1), max(iy1, iy0 + 1)
    side = max(ix1 - ix0, iy1 - iy0)
    scale = min(1.0, MAX_SIDE / side)
    g = gray[iy0:iy1, ix0:ix1]
    c = None if rgb is None else rgb[iy0:iy1, ix0:ix1]
    if scale < 1.0:
        size = (max(1, round((ix1 - ix0) * scale)), max(1, round((iy1 - iy0) * scale)))
        g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        c = None if c is None else cv2.resize(c, size, interpolation=cv2.INTER_AREA)
        scale = size[0] / (ix1 - ix0)
    return Window(ix0, iy0, ix1, iy1, scale, g.astype(np.float32),
                  None if c is None else c.astype(np.float32))
