"""Prompts for one decoder call and their validation against an image size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_engine.constants import LOW_RES_SIZE
from sam_engine.errors import PromptError


@dataclass(frozen=True)
class Prompts:
    """What the user gave for one image.

    points: (N, 2) float xy in original image pixels; labels: (N,) 1 = positive, 0 = negative.
    boxes: (B, 4) float xyxy in original image pixels. B boxes are decoded as one batch; points,
    when given with boxes, apply to every box.
    mask_input: (1, 256, 256) low-res logits from a previous prediction, to refine it.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask_input: np.ndarray | None = None

    @classmethod
    def from_points(cls, points, labels=None, **kw) -> Prompts:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.ones(len(pts), dtype=np.int64) if labels is None else labels
        return cls(points=pts, labels=np.asarray(lab), **kw)

    @classmethod
    def from_boxes(cls, boxes, **kw) -> Prompts:
        return cls(boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4), **kw)

    @property
    def n_boxes(self) -> int:
        return 0 if self.boxes is None else len(self.boxes)

    @property
    def n_points(self) -> int:
        return 0 if self.points is None else len(self.points)


def validate_prompts(prompts: Prompts, image_size: tuple[int, int]) -> Prompts:
    """Check prompts against an image of size (H, W); return them as float32/int64 arrays.

    Raises PromptError with a sentence a person understands. Coordinates may lie on the image
    border (x == W is the right edge of the last pixel) but not outside it.
    """
    h, w = image_size
    points = labels = boxes = mask = None
    if prompts.points is not None and len(prompts.points):
        points = np.asarray(prompts.points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise PromptError(f"points must have shape (N, 2) as x, y; got {points.shape}")
        if prompts.labels is None:
            raise PromptError("points need labels (1 = positive, 0 = negative), one per point")
        labels = np.asarray(prompts.labels).reshape(-1)
        if len(labels) != len(points):
            raise PromptError(f"{len(points)} points but {len(labels)} labels; give one per point")
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(f"point labels must be 1 (positive) or 0 (negative); got {labels}")
        if not np.isfinite(points).all():
            raise PromptError("a point has a NaN or infinite coordinate")
        bad = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
        if bad.any():
            x, y = points[np.argmax(bad)]
            raise PromptError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} image")
        points = points.astype(np.float32)
        labels = labels.astype(np.int64)
    if prompts.boxes is not None and len(prompts.boxes):
        boxes = np.asarray(prompts.boxes, dtype=np.float64)
        if boxes.ndim == 1:
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise PromptError(f"boxes must have shape (B, 4) as x0, y0, x1, y1; got {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise PromptError("a box has a NaN or infinite coordinate")
        for x0, y0, x1, y1 in boxes:
            if x1 <= x0 or y1 <= y0:
                raise PromptError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty or inverted: "
                    "it needs x1 > x0 and y1 > y0"
                )
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                raise PromptError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) reaches outside the {w}x{h} image"
                )
        boxes = boxes.astype(np.float32)
    if prompts.mask_input is not None:
        mask = np.asarray(prompts.mask_input, dtype=np.float32)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != (1, LOW_RES_SIZE, LOW_RES_SIZE):
            raise PromptError(
                f"mask_input must be the (1, {LOW_RES_SIZE}, {LOW_RES_SIZE}) low-res logits of a "
                f"previous prediction; got {mask.shape}"
            )
        if not np.isfinite(mask).all():
            raise PromptError("mask_input holds NaN or infinite values")
    if points is None and boxes is None:
        raise PromptError("empty prompt: give at least one point or one box")
    return Prompts(points=points, labels=labels, boxes=boxes, mask_input=mask)
