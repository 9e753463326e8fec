"""What a finder returns: found defects with a class, a score and a full-size mask."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNKNOWN_CLASS = "unknown"  # golden-sample anomalies: a defect type no finder was taught

SOURCE_FINDER = "finder"      # the trained class-aware network
SOURCE_EXAMPLES = "examples"  # taught by accepted examples (fewshot)
SOURCE_ANOMALY = "anomaly"    # unlike the good parts (golden samples)


@dataclass(frozen=True)
class Found:
    """One defect found without a prompt.

    cls: its class (UNKNOWN_CLASS for an anomaly); score: confidence in 0..1 (mean class
    probability over the mask, or the anomaly score scaled by its threshold); mask: bool, full
    image size; box: x0, y0, x1, y1 (exclusive) of the mask; source: which kind of model found it.
    """

    cls: str
    score: float
    mask: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int]
    source: str = SOURCE_FINDER

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class FindResult:
    """The defects found on one image, the classes looked for and where time went."""

    found: tuple[Found, ...]
    image_size: tuple[int, int]  # height, width
    classes: tuple[str, ...]
    model_id: str
    timings_ms: dict = field(default_factory=dict)

    def of_class(self, cls: str) -> list[Found]:
        return [f for f in self.found if f.cls == cls]
