"""Point prompts: grow the region around a click at adaptive scales; refine with more points.

Windows around the click double in size (until the region stops reaching the window border);
in each, the click's connected region is taken at three levels between the background (the
window border's median) and the clicked value (like SAM's sub-part / part / whole). Every
region is scored by the geometric mean of SAM's stability score (overlap of the regions at
levels +-0.1 around its own) and its explained variance in its own neighbourhood, less the part
of it cut by the window border; the best distinct ones are returned.
"""

from __future__ import annotations

import cv2
import numpy as np

from .box_segment import robust_stats
from .candidates import Candidate, around, clean, disk, explained_variance, keep_touching
from .window import Window, make_window

# Half-sizes of the windows tried around a click, in image pixels (doubling: no tuned scale).
HALF_SIZES = (12, 24, 48, 96, 192, 384, 768)
# Levels between background (0) and the seed value (1) that make the three candidates.
LEVELS = (0.3, 0.5, 0.7)
# Level offset of the stability score (SAM compares masks at logit thresholds +-1 of 0).
STEP = 0.1


def _seed_mask(shape: tuple[int, int], xy: tuple[float, float], r: int = 1) -> np.ndarray:
    m = np.zeros(shape, dtype=np.uint8)
    x = int(np.clip(xy[0], 0, shape[1] - 1))
    y = int(np.clip(xy[1], 0, shape[0] - 1))
    cv2.circle(m, (x, y), r, 1, -1)
    return m.astype(bool)


def _border(shape: tuple[int, int], width: int = 2) -> np.ndarray:
    b = np.ones(shape, dtype=bool)
    b[width:-width, width:-width] = False
    return b


def _image_edge(win: Window, image_size: tuple[int, int]) -> np.ndarray:
    """Window pixels on the image's own border (a region may touch those and still be whole)."""
    h, w = win.shape
    e = np.zeros((h, w), dtype=bool)
    if win.x0 == 0:
        e[:, :2] = True
    if win.y0 == 0:
        e[:2, :] = True
    if win.x1 == image_size[1]:
        e[:, -2:] = True
    if win.y1 == image_size[0]:
        e[-2:, :] = True
    return e


def _touch(mask: np.ndarray, ring: np.ndarray) -> float:
    """Fraction of the window border ring (true image edge excluded) that the mask covers."""
    return float((mask & ring).sum()) / max(1, int(ring.sum()))


def _region(z: np.ndarray, level: float, open_r: int, seed: np.ndarray) -> np.ndarray:
    """The cleaned connected region above `level` that holds the seed."""
    return keep_touching(clean(z > level, open_r), seed)


def point_candidates(
    rgb: np.ndarray, gray: np.ndarray, xy: tuple[float, float]
) -> list[tuple[Window, Candidate]]:
    """Scored candidates (each in its own window) for one positive click at image xy."""
    out = []
    for half in HALF_SIZES:
        win = make_window(rgb, gray, xy[0] - half, xy[1] - half, xy[0] + half, xy[1] + half)
        g = cv2.GaussianBlur(win.gray, (0, 0), 0.7)
        seed = _seed_mask(win.shape, win.to_local(*xy), 2)
        ring = _border(win.shape) & ~_image_edge(win, gray.shape)
        med, noise = robust_stats(g[ring] if ring.any() else g)
        zs = (float(np.median(g[seed])) - med) / noise
        z = np.sign(zs or 1.0) * (g - med) / noise
        open_r = 1 if min(win.shape) >= 48 else 0
        touches = []

        for f in LEVELS:
            m = _region(z, f * abs(zs), open_r, seed)
            if not m.any():
                continue
            t = _touch(m, ring)
            touches.append(t)
            # SAM's stability score: how little the region changes when the level moves.
            lo = _region(z, (f - STEP) * abs(zs), open_r, seed)
            hi = _region(z, (f + STEP) * abs(zs), open_r, seed)
            stab = np.count_nonzero(lo & hi) / max(1, np.count_nonzero(lo | hi))
            rows, cols = around(m)
            r2 = explained_variance(m[rows, cols], g[rows, cols])
            sc = float(np.sqrt(stab * r2)) * (1.0 - t) ** 2
            out.append((win, Candidate(m, sc, f"grow{f:.1f}@{half}")))
        whole = half >= max(gray.shape)
        if whole or (abs(zs) >= 2.0 and touches and min(touches) < 0.01):
            break
    return out


def cut_negatives(
    win: Window, mask: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> np.ndarray:
    """Remove from `mask` the part a negative click sits on: a marker watershed on the gradient,
    seeded by the positive clicks (or the mask's part farthest from the negatives) and by the
    negative clicks plus everything outside the mask."""
    h, w = mask.shape
    if not len(neg) or not mask.any():
        return mask
    negs = np.zeros((h, w), dtype=bool)
    for xy in neg:
        negs |= _seed_mask((h, w), win.to_local(*xy), 2)
    if not (negs & mask).any():
        return mask
    g = cv2.GaussianBlur(win.gray, (0, 0), 1.0)
    grad = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    fg = np.zeros((h, w), dtype=bool)
    for xy in pos:
        fg |= _seed_mask((h, w), win.to_local(*xy), 2)
    fg &= mask & ~negs
    if not fg.any():  # no positive click: the mask's part farthest from the negatives
        dist = cv2.distanceTransform((~negs).astype(np.uint8), cv2.DIST_L2, 5)
        dm = np.where(mask, dist, 0)
        fg = dm > 0.5 * dm.max()
    markers = np.zeros((h, w), dtype=np.int32)
    outside = ~cv2.dilate(mask.astype(np.uint8), disk(1)).astype(bool)
    markers[outside | negs] = 2
    markers[fg] = 1
    img = cv2.cvtColor(cv2.normalize(grad, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8),
                       cv2.COLOR_GRAY2BGR)
    cv2.watershed(img, markers)
    return mask & (markers == 1)
