"""How well found defects match ground truth: pixel IoU per class, defect-level recall and
precision at mask IoU >= 0.5, and image-level class accuracy.

Ground truth is grouped into defects exactly as found masks are (preprocess.group_components
with the same radius), so a NEU-Seg inclusion drawn as a cluster of fragments counts as one
defect on both sides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sam_engine.finder.preprocess import group_components, radius_px
from sam_engine.finder.types import Found


@dataclass(frozen=True)
class Truth:
    """Ground truth of one image: per class, the bool mask of its defect pixels."""

    masks: dict[str, np.ndarray]
    image_size: tuple[int, int]

    @property
    def classes(self) -> list[str]:
        return [c for c, m in self.masks.items() if m.any()]


def truth_from_instances(instances: Iterable, image_size: tuple[int, int]) -> Truth:
    """Truth from objects with .cls and .mask (learned.data.Instance, synthetic instances)."""
    masks: dict[str, np.ndarray] = {}
    for inst in instances:
        cls = getattr(inst, "cls", None) or inst.kind
        m = masks.setdefault(cls, np.zeros(image_size, bool))
        m |= np.asarray(inst.mask, bool)
    return Truth(masks, image_size)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


@dataclass
class ClassTally:
    inter: int = 0
    union: int = 0
    true_defects: int = 0
    found_defects: int = 0
    matched_truth: int = 0
    matched_found: int = 0

    @property
    def pixel_iou(self) -> float | None:
        return self.inter / self.union if self.union else None

    @property
    def recall(self) -> float | None:
        return self.matched_truth / self.true_defects if self.true_defects else None

    @property
    def precision(self) -> float | None:
        return self.matched_found / self.found_defects if self.found_defects else None


@dataclass
class Tally:
    """Counts over many images; the figures are properties."""

    match_iou: float = 0.5
    group_radius: float = 0.02
    per_class: dict[str, ClassTally] = field(default_factory=lambda: defaultdict(ClassTally))
    images: int = 0
    images_with_truth: int = 0
    class_correct: int = 0
    clean_images: int = 0
    clean_alarms: int = 0

    def add(self, found: Sequence[Found], truth: Truth, classes: Sequence[str]) -> None:
        """One image: found defects against its truth, over the classes looked for."""
        self.images += 1
        size = truth.image_size
        r = radius_px(size, self.group_radius)
        true_classes = [c for c in truth.classes if c in classes]
        if not true_classes:
            self.clean_images += 1
            self.clean_alarms += bool(found)
        else:
            self.images_with_truth += 1
            mass: dict[str, int] = defaultdict(int)
            for f in found:
                mass[f.cls] += f.area
            top = max(mass, key=mass.get) if mass else None
            truth_area = {c: int(truth.masks[c].sum()) for c in true_classes}
            self.class_correct += top == max(truth_area, key=truth_area.get)
        for c in classes:
            t = self.per_class[c]
            gt = truth.masks.get(c, np.zeros(size, bool))
            mine = [f.mask for f in found if f.cls == c]
            pred = np.logical_or.reduce(mine) if mine else np.zeros(size, bool)
            if gt.any() or pred.any():
                t.inter += int(np.count_nonzero(gt & pred))
                t.union += int(np.count_nonzero(gt | pred))
            gts = group_components(gt, r) if gt.any() else []
            t.true_defects += len(gts)
            t.found_defects += len(mine)
            if gts and mine:
                ious = np.array([[mask_iou(g, m) for m in mine] for g in gts])
                t.matched_truth += int((ious.max(axis=1) >= self.match_iou).sum())
                t.matched_found += int((ious.max(axis=0) >= self.match_iou).sum())

    @property
    def class_accuracy(self) -> float | None:
        return self.class_correct / self.images_with_truth if self.images_with_truth else None

    @property
    def false_alarm_rate(self) -> float | None:
        return self.clean_alarms / self.clean_images if self.clean_images else None

    def summary(self) -> dict:
        def r(v):
            return None if v is None else round(float(v), 4)

        return {
            "per_class": {c: {"pixel_iou": r(t.pixel_iou), "recall": r(t.recall),
                              "precision": r(t.precision), "true_defects": t.true_defects,
                              "found_defects": t.found_defects}
                          for c, t in sorted(self.per_class.items())},
            "images": self.images, "class_accuracy": r(self.class_accuracy),
            "clean_images": self.clean_images, "false_alarm_rate": r(self.false_alarm_rate),
            "match_iou": self.match_iou, "group_radius": self.group_radius,
        }
