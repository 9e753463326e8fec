"""What the canvas draws for a mask, computed off the UI thread: the mask cropped to its box and
its outline (no Qt). Cropping keeps a small defect on an 8000x6000 image small.

The outline is a few vector polygons (crisp at any zoom) when it has at most MAX_OUTLINE_POINTS
points; a ragged mask with thousands of pieces gets its boundary pixels instead, drawn into the
overlay image, because building and stroking a path of 50 000 points takes the UI thread
hundreds of milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MAX_OUTLINE_POINTS = 2000
# A boundary of more than this many pixels is drawn as edge pixels without tracing it first: even
# if CHAIN_APPROX_SIMPLE merged its straight runs, polygons this long are slow to stroke.
MAX_EDGE_PIXELS = 25 * MAX_OUTLINE_POINTS
_KERNEL = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class MaskShape:
    """x0, y0: top-left pixel of the crop; crop: uint8 (h, w) 0/1, C-contiguous; outlines: one
    float (N, 2) xy polygon per boundary (outer and holes), in image pixels; edge: None, or
    (when the outline has too many points) uint8 (h, w) 0/1 boundary pixels of the crop;
    area_px: the mask's pixel count."""

    x0: int
    y0: int
    crop: np.ndarray = field(repr=False)
    outlines: tuple[np.ndarray, ...] = field(repr=False)
    area_px: int
    edge: np.ndarray | None = field(default=None, repr=False)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        h, w = self.crop.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h


def mask_shape(mask: np.ndarray) -> MaskShape | None:
    """The MaskShape of a bool (H, W) mask; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8)
    area = cv2.countNonZero(crop)
    edge = cv2.subtract(crop, cv2.erode(crop, _KERNEL, borderValue=0))
    if cv2.countNonZero(edge) > MAX_EDGE_PIXELS:
        # tracing a boundary this long takes ~7 ms per megapixel and ends in edge pixels anyway
        return MaskShape(x0, y0, crop, (), area, edge)
    contours, _ = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if sum(len(c) for c in contours) > MAX_OUTLINE_POINTS:
        return MaskShape(x0, y0, crop, (), area, edge)
    # contours run through boundary pixel centres: +0.5 puts them on the pixel grid's middle,
    # which reads as the mask's edge at any zoom
    outlines = tuple(c.reshape(-1, 2).astype(np.float64) + (x0 + 0.5, y0 + 0.5) for c in contours)
    return MaskShape(x0, y0, crop, outlines, area)
