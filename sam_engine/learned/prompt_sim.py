"""Prompts simulated the way inspectors give them, for training (both model families).

SAM's interactive training recipe: a box from the true mask with each side moved by noise
(10% of the side, at most 20 px), a click inside the defect (mostly near its middle), sometimes
a negative click just outside it, and corrective clicks on the largest error region of the
previous prediction (positive where it missed, negative where it spilled over), given with the
previous low-res mask. All randomness comes from the numpy Generator passed in.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_NOISE = 0.1  # share of the box side
BOX_NOISE_MAX_PX = 20.0


def jittered_box(mask: np.ndarray, rng: np.random.Generator, noise: float = BOX_NOISE,
                 max_px: float = BOX_NOISE_MAX_PX) -> np.ndarray:
    """xyxy (continuous, exclusive) of the mask's bbox with each side moved by noise."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
    bw, bh = x1 - x0, y1 - y0
    d = rng.normal(0.0, 1.0, 4) * noise * np.array([bw, bh, bw, bh])
    d = np.clip(d, -max_px, max_px)
    box = np.array([x0, y0, x1, y1]) + d
    box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
    if box[2] - box[0] < 1:
        box[[0, 2]] = [x0, x1]
    if box[3] - box[1] < 1:
        box[[1, 3]] = [y0, y1]
    return box


def inside_click(mask: np.ndarray, rng: np.random.Generator,
                 centre_bias: float = 0.6) -> np.ndarray:
    """(x, y) continuous of a click inside the mask: with probability centre_bias drawn
    in proportion to the squared distance to the background (near the middle), else anywhere
    inside."""
    m = np.pad(np.asarray(mask, np.uint8), 1)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)[1:-1, 1:-1]
    ys, xs = np.nonzero(dist > 0)
    if rng.random() < centre_bias:
        wgt = dist[ys, xs].astype(np.float64) ** 2
        i = int(rng.choice(len(xs), p=wgt / wgt.sum()))
    else:
        i = int(rng.integers(len(xs)))
    return np.array([xs[i] + rng.uniform(0.2, 0.8), ys[i] + rng.uniform(0.2, 0.8)])


def outside_click(mask: np.ndarray, rng: np.random.Generator, reach: int = 12) -> np.ndarray | None:
    """(x, y) of a negative click on the background within `reach` px of the mask, or None."""
    m = np.asarray(mask, np.uint8)
    ring = cv2.dilate(m, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)) > m
    ys, xs = np.nonzero(ring)
    if not len(xs):
        return None
    i = int(rng.integers(len(xs)))
    return np.array([xs[i] + 0.5, ys[i] + 0.5])


def corrective_click(pred: np.ndarray, truth: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    """The click an inspector gives next: inside the largest error region (missed -> label 1,
    spilled -> label 0), near its middle. None when the prediction is already exact."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    best = None
    for region, label in ((truth & ~pred, 1), (pred & ~truth, 0)):
        n, lab, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), 8)
        if n <= 1:
            continue
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, lab == k, label)
    if best is None:
        return None
    return inside_click(best[1], rng, centre_bias=0.8), best[2]
