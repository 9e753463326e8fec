"""Box prompt: candidate masks of the object that a (roughly tight) box frames.

The pixels just outside the box give the background statistics (median, robust spread); the
object is what inside the box differs from them, of either polarity. Candidates come from
thresholds of that normalised difference (a fixed noise level, params.LEVELS of the
object's contrast, Otsu), from a thin-structure (top-hat) response and, on colour
images, from the distance to the background's colour. Each is scored by how well its bounding box
fills the prompt box (squared box IoU) times the variance of the window it explains (two-region
R^2; for thin candidates the geometric mean of that on the grey values and on the top-hat
response). The first candidate is the score-weighted vote of all of them.

The few constants live in params.py (noise units, levels relative to the object's contrast,
sizes relative to the box or the processing window); README.md says how they were chosen.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import apply_hysteresis_threshold, threshold_otsu

from sam_engine.classic.candidates import (
    Candidate,
    bbox_fit,
    clean,
    explained_variance,
    keep_largest,
)
from sam_engine.classic.params import BOX_MARGIN, FIT_EXP, LEVELS, NOISE_Z, SIGMA, THIN_Z
from sam_engine.classic.thin import tophat
from sam_engine.classic.window import MAX_SIDE, Window, make_window


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation (floored at 1 grey level)."""
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med)))
    return med, max(1.4826 * mad, 1.0)


def chroma_distance(rgb: np.ndarray, bg: np.ndarray, sigma: float) -> np.ndarray | None:
    """Distance in the Lab a*b* plane from the background's median colour, or None for a grey
    image (chroma spread under 2 Lab units)."""
    lab = cv2.cvtColor(rgb / 255.0, cv2.COLOR_RGB2Lab)
    ab = cv2.GaussianBlur(lab[..., 1:], (0, 0), sigma)
    if float(np.ptp(ab)) < 2.0:
        return None
    ref = np.median(ab[bg] if bg.any() else ab.reshape(-1, 2), axis=0)
    return np.sqrt(((ab - ref) ** 2).sum(axis=-1)).astype(np.float32)


def box_window(rgb: np.ndarray, gray: np.ndarray, box: np.ndarray) -> Window:
    """The box plus a margin of BOX_MARGIN times its half-perimeter (at least 4 px): the
    background sample."""
    bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
    m = max(4.0, BOX_MARGIN * (bw + bh))
    return make_window(rgb, gray, box[0] - m, box[1] - m, box[2] + m, box[3] + m)


def box_candidates(win: Window, box: np.ndarray) -> list[Candidate]:
    """Scored candidate masks (window coordinates) for one box."""
    h, w = win.shape
    bx0, by0, bx1, by1 = lb = win.box_slice(box)
    bw, bh = bx1 - bx0, by1 - by0
    inbox = np.zeros((h, w), dtype=bool)
    inbox[by0:by1, bx0:bx1] = True
    g = cv2.GaussianBlur(win.gray, (0, 0), SIGMA)
    bg = g[~inbox]
    if bg.size < 0.2 * inbox.sum():  # box at the image edge: add its own border band
        border = inbox.copy()
        border[by0 + 1:by1 - 1, bx0 + 1:bx1 - 1] = False
        bg = np.concatenate([bg, g[border]])
    med, noise = robust_stats(bg)
    open_r = 1 if min(bw, bh) >= 8 else 0

    def score(mask: np.ndarray, feat: np.ndarray = g) -> float:
        return bbox_fit(mask, lb) ** FIT_EXP * explained_variance(mask, feat)

    def thresholds(z: np.ndarray, how: str, feat: np.ndarray = g) -> list[Candidate]:
        """Candidates where z (object-ness in background noise units) exceeds: a fixed noise
        level, fractions of the contrast between background (z = 0) and the object's core (the
        box's 90th percentile), and Otsu's split of the box."""
        zin = z[inbox]
        core = float(np.percentile(zin, 90))
        ts = [NOISE_Z] + [f * core for f in LEVELS if f * core > 1.0]
        if np.ptp(zin) > 0 and threshold_otsu(zin) > 0.0:
            ts.append(float(threshold_otsu(zin)))
        out = []
        for t in ts:
            m = keep_largest(clean((z > t) & inbox, open_r))
            out.append(Candidate(m, score(m, feat), f"{how}>{t:.1f}"))
        return out

    cands = [Candidate(inbox, score(inbox), "box")]
    for pol in (1, -1):
        cands += thresholds(pol * (g - med) / noise, f"z{pol:+d}")
        # Thin = at most half the box's short side and at most 5% of the processing window's
        # side (16 px of 320); the cap also bounds the top-hat's cost.
        width = int(np.clip(round(0.5 * min(bw, bh)), 3, MAX_SIDE // 20))
        th = tophat(g, pol, width)
        tmed, tnoise = robust_stats(th[~inbox] if (~inbox).sum() > 50 else th)
        zt = (th - tmed) / tnoise
        m = apply_hysteresis_threshold(zt, *THIN_Z) & inbox
        m = keep_largest(clean(m, 0, 1), 0.2)
        cands.append(Candidate(m, float(np.sqrt(score(m) * score(m, th))), f"thin{pol:+d}"))
    chroma = chroma_distance(win.rgb, ~inbox, SIGMA)
    if chroma is not None:  # colour images: a defect may differ in hue more than in brightness
        cmed, cnoise = robust_stats(chroma[~inbox] if (~inbox).any() else chroma)
        cands += thresholds((chroma - cmed) / cnoise, "chroma", chroma)
    return [consensus(cands, inbox)] + cands


def consensus(cands: list[Candidate], allowed: np.ndarray) -> Candidate:
    """The score-weighted (score squared) pixel vote of the candidates, ranked first: an
    ensemble is steadier than any one threshold."""
    w = np.array([max(c.score, 0.0) ** 2 for c in cands])
    if w.sum() <= 0:
        return Candidate(allowed.copy(), 0.0, "consensus")
    vote = sum(wi * c.mask for wi, c in zip(w, cands, strict=True) if wi > 0) / w.sum()
    m = keep_largest(vote >= 0.5)
    return Candidate(m, max(c.score for c in cands), "consensus")
