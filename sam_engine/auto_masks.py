"""Automatic mask generation over the Engine contract: "segment everything", tuned for defects.

A grid of single positive clicks is decoded against one image handle; candidates are filtered by
predicted IoU and stability score, cleaned of small islands and holes, filtered by size (defects
are small: masks covering a large share of the image are the part or the background), and
de-duplicated by box non-maximum suppression. The point grid, stability score and small-region
cleanup are segment-anything's helpers (segment_anything.utils.amg; the stability score is
re-written in numpy, see stability_scores); NMS is torchvision's.

Differences from SamAutomaticMaskGenerator: it works with any engine (SAM, the default engine,
ONNX) through predict(); there are no crop layers; the stability score is computed on the 256x256
low-res logits every engine returns (SAM computes it on logits upsampled to the image), so only
the masks that pass it are ever upsampled. Works with engines whose logits threshold at 0.
torch/torchvision are imported on first use, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam_engine.prompts import Prompts
from sam_engine.results import ImageHandle


@dataclass(frozen=True)
class AutoMaskSettings:
    """Knobs of automatic mask generation (SAM's defaults in brackets where they differ)."""

    points_per_side: int = 16  # [32]; a 16x16 grid = 256 decoder calls per image
    pred_iou_thresh: float = 0.80  # [0.88]
    stability_score_thresh: float = 0.90  # [0.95]
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_area_px: int = 20  # smaller masks are noise
    max_area_fraction: float = 0.05  # larger masks are the part or the background, not a defect
    min_region_px: int = 10  # islands and holes smaller than this are removed (0: keep)

    def __post_init__(self) -> None:
        if self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1; got {self.points_per_side}")
        if not 0 < self.max_area_fraction <= 1:
            raise ValueError(f"max_area_fraction must be in (0, 1]; got {self.max_area_fraction}")


@dataclass
class AutoMask:
    """One kept mask: bool (H, W), predicted IoU, stability, box xyxy (exclusive), click xy."""

    mask: np.ndarray
    score: float
    stability: float
    box: tuple[int, int, int, int]
    point: tuple[float, float]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def stability_scores(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """IoU of the masks thresholded at threshold + offset and threshold - offset, per candidate
    (C, H, W) -> (C,); 0 where both are empty.

    segment-anything's calculate_stability_score computes the same, but its int16 torch
    reduction took ~100 ms per (3, 256, 256) call on a CPU here; count_nonzero takes < 1 ms.
    """
    inter = np.count_nonzero(logits > threshold + offset, axis=(-2, -1))
    union = np.count_nonzero(logits > threshold - offset, axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class AutoMaskGenerator:
    """Automatic masks for images already set on `engine` (see module doc)."""

    def __init__(self, engine, settings: AutoMaskSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or AutoMaskSettings()

    def point_grid(self, image_size: tuple[int, int]) -> np.ndarray:
        """(N, 2) xy click positions in image pixels."""
        from segment_anything.utils.amg import build_point_grid

        h, w = image_size
        return build_point_grid(self.settings.points_per_side) * np.array([w, h], np.float64)

    def generate(self, handle: ImageHandle) -> list[AutoMask]:
        """Masks kept after every filter, best predicted IoU first."""
        import torch
        from segment_anything.utils.amg import remove_small_regions
        from torchvision.ops import nms

        s = self.settings
        h, w = handle.original_size
        max_area = s.max_area_fraction * h * w
        kept: list[AutoMask] = []
        for x, y in self.point_grid(handle.original_size):
            res = self.engine.predict(handle, Prompts.from_points([[x, y]]), multimask_output=True)
            scores = res.scores[0]
            stability = stability_scores(res.low_res_logits[0], 0.0, s.stability_score_offset)
            for c in range(len(scores)):
                if scores[c] < s.pred_iou_thresh or stability[c] < s.stability_score_thresh:
                    continue
                mask = res.mask(0, c)
                if s.min_region_px > 0:
                    mask, _ = remove_small_regions(mask, s.min_region_px, "holes")
                    mask, _ = remove_small_regions(mask, s.min_region_px, "islands")
                area = int(np.count_nonzero(mask))
                box = _box(mask)
                if box is None or area < s.min_area_px or area > max_area:
                    continue
                kept.append(AutoMask(mask, float(scores[c]), float(stability[c]), box,
                                     (float(x), float(y))))
        if not kept:
            return []
        boxes = torch.tensor([m.box for m in kept], dtype=torch.float32)
        order = nms(boxes, torch.tensor([m.score for m in kept]), s.box_nms_thresh)
        return [kept[i] for i in order.tolist()]
