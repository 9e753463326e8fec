"""Point prompts: grow the region around a click at adaptive scales; refine with more points.

Windows around the click double in size; in each, the click's connected region is cut at the
levels of params.LEVELS between the background (the window border's median) and the clicked
value (SAM's sub-part / part / whole), and, when the click sits on a line (a strong top-hat
response), the click's connected ridge of the top-hat response (scratches and cracks: the region
follows the line). The doubling stops one octave after some region first closes inside its
window. Every region is scored by the geometric mean of SAM's stability score (overlap of the
regions at levels +-STABILITY_STEP around its own) and its explained variance against a band
around it as thick as BAND times the region itself, less the part of it cut by the window
border; the best distinct ones are returned.
"""

from __future__ import annotations

import cv2
import numpy as np

from sam_engine.classic.box_segment import robust_stats
from sam_engine.classic.candidates import Candidate, disk, explained_variance, fill_holes
from sam_engine.classic.params import (
    BAND,
    EXTRA_OCTAVES,
    LEVELS,
    NOISE_Z,
    SIGMA,
    STABILITY_STEP,
    THIN_ASPECT,
    THIN_SEED_Z,
)
from sam_engine.classic.thin import tophat
from sam_engine.classic.window import MAX_SIDE, Window, make_window

# Half-sizes of the windows tried around a click, in image pixels (doubling: no tuned scale).
HALF_SIZES = (12, 24, 48, 96, 192, 384, 768)


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
    """The cleaned (opened, holes filled) 8-connected region above `level` that holds the seed.

    Same result as keep_touching(clean(z > level, open_r), seed), but OpenCV's flood fill from
    the seed pixels visits only the region (no labelling of the whole window): several times
    faster, and points run this a dozen times per window.
    """
    m = (z > level).astype(np.uint8)
    if open_r > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, disk(open_r))
    ff = np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8)
    flags = 8 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (1 << 8)
    for y, x in zip(*np.nonzero(seed & (m > 0)), strict=True):
        if not ff[y + 1, x + 1]:
            cv2.floodFill(m, ff, (int(x), int(y)), 0, 0, 0, flags)
    return fill_holes(ff[1:-1, 1:-1] > 0)


def point_candidates(
    rgb: np.ndarray, gray: np.ndarray, xy: tuple[float, float]
) -> list[tuple[Window, Candidate]]:
    """Scored candidates (each in its own window) for one positive click at image xy."""
    out = []
    extra = 0
    for half in HALF_SIZES:
        win = make_window(None, gray, xy[0] - half, xy[1] - half, xy[0] + half, xy[1] + half)
        if out and (win.x0, win.y0, win.x1, win.y1) == _bounds(out[-1][0]):
            break  # the window already covers the whole image: nothing new to see
        g = cv2.GaussianBlur(win.gray, (0, 0), SIGMA)
        seed = _seed_mask(win.shape, win.to_local(*xy), 2)
        ring = _border(win.shape) & ~_image_edge(win, gray.shape)
        med, noise = robust_stats(g[ring] if ring.any() else g)
        zs = (float(np.median(g[seed])) - med) / noise
        z = np.sign(zs or 1.0) * (g - med) / noise
        open_r = 1 if min(win.shape) >= 48 else 0
        grown = _level_candidates(z, abs(zs), open_r, seed, ring, g, f"grow@{half}")
        thin = _thin_candidates(win, g, seed, ring, zs, half)
        out += [(win, c) for c, _ in grown + thin]
        closed = abs(zs) >= NOISE_Z and any(t < 0.01 for _, t in grown + thin)
        extra += bool(closed or extra)
        if half >= max(gray.shape) or extra > EXTRA_OCTAVES:
            break
    return out


def _bounds(win: Window) -> tuple[int, int, int, int]:
    return win.x0, win.y0, win.x1, win.y1


def _level_candidates(z: np.ndarray, top: float, open_r: int, seed: np.ndarray,
                      ring: np.ndarray, feat: np.ndarray, how: str,
                      levels: tuple[float, ...] = LEVELS, min_aspect: float = 0.0,
                      ) -> list[tuple[Candidate, float]]:
    """The seed's connected region where z > f * top for each level f, scored; with the
    fraction of the window border ring that each touches."""
    region = {}  # level -> region; neighbouring levels share their stability regions

    def at(f: float) -> np.ndarray:
        key = round(f, 6)
        if key not in region:
            region[key] = _region(z, f * top, open_r, seed)
        return region[key]

    out = []
    for f in levels:
        m = at(f)
        if not m.any() or (min_aspect and elongation(m) < min_aspect):
            continue
        t = _touch(m, ring)
        # SAM's stability score: how little the region changes when the level moves.
        lo, hi = at(f - STABILITY_STEP), at(f + STABILITY_STEP)
        stab = np.count_nonzero(lo & hi) / max(1, np.count_nonzero(lo | hi))
        sc = float(np.sqrt(stab * local_r2(m, feat))) * (1.0 - t) ** 2
        out.append((Candidate(m, sc, f"{how}>{f:.1f}"), t))
    return out


def _thin_candidates(win: Window, g: np.ndarray, seed: np.ndarray, ring: np.ndarray,
                     zs: float, half: int) -> list[tuple[Candidate, float]]:
    """Line-following candidates: the click's connected ridge of the top-hat response (a
    scratch or crack is narrower than the disk: half the window's half-size, at most 5% of the
    processing window), at the lower two levels relative to the clicked response; kept only
    when clearly elongated."""
    pol = 1 if zs >= 0 else -1
    width = int(min(MAX_SIDE // 20, max(3, half * win.scale / 2)))
    th = tophat(g, pol, width)
    med, noise = robust_stats(th)
    z = (th - med) / noise
    zt = float(z[cv2.dilate(seed.astype(np.uint8), disk(1)) > 0].max())
    if zt < THIN_SEED_Z:
        return []
    return _level_candidates(z, zt, 0, seed, ring, th, f"thin@{half}", LEVELS[:2], THIN_ASPECT)


def elongation(mask: np.ndarray) -> float:
    """Squared perimeter over 4 * area: L / W for a line of length L and width W, pi for a
    disk."""
    m8 = mask.astype(np.uint8)
    perim = float(np.count_nonzero(m8 - cv2.erode(m8, disk(1))))
    return perim * perim / (4.0 * max(1.0, float(m8.sum())))


def local_r2(mask: np.ndarray, feat: np.ndarray) -> float:
    """Explained variance of the region against a band around it BAND times as thick as the
    region itself (mean thickness = 2 * area / perimeter): a scale-free local contrast."""
    m8 = mask.astype(np.uint8)
    area = float(m8.sum())
    perim = max(1.0, float(np.count_nonzero(m8 - cv2.erode(m8, disk(1)))))
    r = int(np.clip(round(BAND * 2 * area / perim), 2, 64))
    # Distance transform rather than a dilation by a disk: cost independent of r.
    nb = cv2.distanceTransform(1 - m8, cv2.DIST_L2, 3) <= r
    return explained_variance(mask[nb], feat[nb])


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
