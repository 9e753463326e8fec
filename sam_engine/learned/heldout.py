"""Held-out evaluation on TrainImage lists: mean IoU per class for box and click prompts.

The same protocol as `sam-inspect eval`: each instance is prompted with its exact box
(exclusive xyxy) or one click at its most interior pixel, the best-scoring candidate is
compared with the instance's mask, and box-fill (the whole box as the mask) is scored on the
same instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from sam_engine.engine import Engine
from sam_engine.learned.data import TrainImage
from sam_engine.prompts import Prompts

PROMPTS = ("box", "point")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the mask's most interior pixel (its centre), as the eval command clicks."""
    padded = np.pad(np.asarray(mask, bool), 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


@dataclass
class HeldOut:
    """IoUs per prompt kind, with the class of each instance and box-fill beside them."""

    classes: list[str] = field(default_factory=list)
    ious: dict[str, list[float]] = field(default_factory=dict)
    box_fill: list[float] = field(default_factory=list)

    def mean(self, kind: str, cls: str | None = None) -> float:
        vals = [v for v, c in zip(self.ious[kind], self.classes, strict=True)
                if cls is None or c == cls]
        return float(np.mean(vals)) if vals else float("nan")

    def box_fill_mean(self, cls: str | None = None) -> float:
        vals = [v for v, c in zip(self.box_fill, self.classes, strict=True)
                if cls is None or c == cls]
        return float(np.mean(vals)) if vals else float("nan")

    def table(self) -> dict:
        """{class or 'all': {n, box, point, box_fill}} (JSON friendly)."""
        out = {}
        for cls in [*sorted(set(self.classes)), None]:
            n = sum(1 for c in self.classes if cls is None or c == cls)
            row = {"n": n, "box_fill": round(self.box_fill_mean(cls), 4)}
            for kind in self.ious:
                row[kind] = round(self.mean(kind, cls), 4)
            out[cls or "all"] = row
        return out


def evaluate(engine: Engine, images: list[TrainImage], kinds=PROMPTS,
             progress: bool = False, desc: str = "held-out") -> HeldOut:
    from tqdm import tqdm

    out = HeldOut(ious={k: [] for k in kinds})
    total = sum(len(im.instances) for im in images)
    bar = tqdm(total=total, disable=not progress, desc=desc, unit="inst")
    for im in images:
        handle = engine.set_image(im.rgb)
        for inst in im.instances:
            x0, y0, x1, y1 = inst.bbox
            fill = np.zeros(inst.mask.shape, bool)
            fill[y0:y1, x0:x1] = True
            out.classes.append(inst.cls)
            out.box_fill.append(iou(fill, inst.mask))
            for kind in kinds:
                if kind == "box":
                    p = Prompts.from_boxes([[x0, y0, x1, y1]])
                else:
                    p = Prompts.from_points([interior_point(inst.mask)], [1])
                pred = engine.predict(handle, p, multimask_output=True).best(0)
                out.ious[kind].append(iou(pred, inst.mask))
            bar.update(1)
    bar.close()
    return out
