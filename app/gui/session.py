"""The prompts on the current image, as immutable snapshots (one per undo step), no Qt.

A snapshot is a tuple of Regions; each Region is one object being segmented (an optional box and
its clicks). The last region is the active one: clicks refine it, a new box starts a new one,
Enter accepts every region's chosen mask as a defect. Every change makes a new Region with a new
uid whose `parent` is the region it refines, so undo just goes back to an older snapshot, whose
decoded masks are still in PromptSession.results. The parent's chosen low-res mask is fed back as
mask_input, so a click refines the mask rather than starting over.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from sam_engine.prompts import Prompts
from sam_engine.results import Masks

_uids = itertools.count(1)

Box = tuple[float, float, float, float]
Point = tuple[float, float, int]  # x, y, label (1 positive, 0 negative)


@dataclass(frozen=True)
class Region:
    """One object being segmented. parent: the region this one refines (None for the first)."""

    box: Box | None = None
    points: tuple[Point, ...] = ()
    parent: Region | None = field(default=None, repr=False, compare=False)
    uid: int = field(default_factory=lambda: next(_uids))


Snapshot = tuple[Region, ...]


def add_point(snapshot: Snapshot, x: float, y: float, label: int) -> Snapshot:
    """A click: refines the active region, or starts one when there is none."""
    if not snapshot:
        return (Region(points=((float(x), float(y), int(label)),)),)
    last = snapshot[-1]
    refined = Region(box=last.box, points=(*last.points, (float(x), float(y), int(label))),
                     parent=last)
    return (*snapshot[:-1], refined)


def add_box(snapshot: Snapshot, box: Box) -> Snapshot:
    """A dragged box starts a new region (several boxes: several defects at once)."""
    return (*snapshot, Region(box=tuple(float(v) for v in box)))


@dataclass
class RegionResult:
    """The decoder's answer for one region."""

    masks: Masks
    decode_ms: float


class PromptSession:
    """Decoded results and chosen candidates for the regions of one image."""

    def __init__(self) -> None:
        self.results: dict[int, RegionResult] = {}
        self.choice: dict[int, int] = {}

    def candidate(self, region: Region) -> int | None:
        """The candidate shown for a region (the best one unless the user cycled)."""
        res = self.results.get(region.uid)
        if res is None:
            return None
        return self.choice.get(region.uid, res.masks.best_index(0))

    def n_candidates(self, region: Region) -> int:
        res = self.results.get(region.uid)
        return 0 if res is None else int(res.masks.shape[1])

    def cycle(self, region: Region, step: int = 1) -> int | None:
        n = self.n_candidates(region)
        if n == 0:
            return None
        self.choice[region.uid] = (self.candidate(region) + step) % n
        return self.choice[region.uid]

    def choose(self, region: Region, c: int) -> bool:
        if not 0 <= c < self.n_candidates(region):
            return False
        self.choice[region.uid] = c
        return True

    def mask(self, region: Region) -> np.ndarray | None:
        """The chosen candidate's full-resolution bool mask, or None before decoding."""
        c = self.candidate(region)
        return None if c is None else self.results[region.uid].masks.mask(0, c)

    def score(self, region: Region) -> float | None:
        c = self.candidate(region)
        return None if c is None else float(self.results[region.uid].masks.scores[0, c])

    def feedback(self, region: Region) -> np.ndarray | None:
        """(1, 256, 256) low-res logits of the nearest decoded ancestor's chosen candidate."""
        parent = region.parent
        while parent is not None:
            c = self.candidate(parent)
            if c is not None:
                logits = self.results[parent.uid].masks.low_res_logits[0, c]
                return np.asarray(logits, dtype=np.float32)[None]
            parent = parent.parent
        return None

    def prompts(self, region: Region) -> Prompts:
        """The engine prompts of a region, with the previous mask fed back."""
        pts = np.array([p[:2] for p in region.points], dtype=np.float64).reshape(-1, 2)
        labels = np.array([p[2] for p in region.points], dtype=np.int64)
        return Prompts(
            points=pts if len(pts) else None,
            labels=labels if len(pts) else None,
            boxes=None if region.box is None else np.array([region.box], dtype=np.float64),
            mask_input=self.feedback(region),
        )

    def forget_except(self, keep: set[int]) -> None:
        """Drop results of regions no snapshot refers to any more (bounded memory)."""
        for uid in [u for u in self.results if u not in keep]:
            del self.results[uid]
            self.choice.pop(uid, None)
