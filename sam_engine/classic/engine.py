"""ClassicEngine: the default engine behind the Engine contract, needing no model weights.

Box prompts: background statistics from just outside the box, polarity-aware thresholds, a
thin-structure (top-hat) response and a colour distance give candidates scored by box fit and
explained variance, led by their weighted vote (see box_segment). Point prompts: region growing
from each positive click at doubling window sizes, plus line-following candidates when the click
sits on a scratch or crack (point_segment). Negative points cut the part they
sit on by a marker watershed. Positive points given with a box re-rank the box's candidates
towards those that cover them. mask_input is IGNORED: every predict recomputes from the points
and boxes, which already carry the user's refinements.

Everything runs on a window around the prompt (at most 320 px a side), never the whole image.
set_image takes any layout sam_engine.image_io.to_rgb8 converts (grey, RGBA, 16-bit, float).
Constants: params.py; how they were chosen: README.md.
Scores are quality measures in [0, 1] that rank candidates; they are not calibrated IoUs.
low_res_logits are the masks' coverage in SAM's 256x256 frame mapped to [-10, 10].
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from sam_engine.classic.box_segment import box_candidates, box_window
from sam_engine.classic.candidates import Candidate, distinct_best
from sam_engine.classic.logits import low_res_logits
from sam_engine.classic.point_segment import cut_negatives, point_candidates
from sam_engine.classic.window import Window, make_window
from sam_engine.constants import LOW_RES_SIZE
from sam_engine.image_io import image_digest, to_rgb8
from sam_engine.prompts import Prompts, validate_prompts
from sam_engine.results import EngineInfo, ImageHandle, Masks, PreparedImage

N_MULTI = 3


class ClassicEngine:
    """Classical segmentation (OpenCV / scikit-image) with SAM's prompt and result contract."""

    def __init__(self, cache=None) -> None:
        self.cache = cache  # accepted for interface symmetry; nothing worth caching per image
        self.info = EngineInfo(name="classic", model_id="classic-v1", device="cpu",
                               dtype="float32", note="default engine: no SAM checkpoint needed")

    def set_image(self, image: np.ndarray) -> ImageHandle:
        """Accept any layout `to_rgb8` converts (grey, RGBA, 16-bit, float); ImageError else."""
        rgb = to_rgb8(image)
        digest = hashlib.blake2b(rgb.tobytes(), digest_size=16)
        digest.update(repr(rgb.shape).encode())
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        return ImageHandle(key=f"classic-v1:{digest.hexdigest()}", original_size=(h, w),
                           input_size=(h, w), features=(rgb, gray))

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """Conversion only (thread safe); set_prepared does the rest (there is no encoder)."""
        rgb = to_rgb8(image)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        return PreparedImage(rgb, image_digest(rgb), size, size, "classic")

    def set_prepared(self, prepared: PreparedImage) -> ImageHandle:
        return self.set_image(prepared.rgb)

    def set_images(self, images) -> list[ImageHandle]:
        """One handle per image (np.ndarray or PreparedImage), in order."""
        return [self.set_prepared(im) if isinstance(im, PreparedImage) else self.set_image(im)
                for im in images]

    def predict(self, handle: ImageHandle, prompts: Prompts,
                multimask_output: bool = True) -> Masks:
        p = validate_prompts(prompts, handle.original_size)
        rgb, gray = handle.features
        n_out = N_MULTI if multimask_output else 1
        pts = p.points if p.points is not None else np.zeros((0, 2), np.float32)
        lab = p.labels if p.labels is not None else np.zeros(0, np.int64)
        pos, neg = pts[lab == 1], pts[lab == 0]
        rows = []
        if p.boxes is not None:
            for box in p.boxes:
                rows.append(self._box(rgb, gray, box, pos, neg, n_out, handle.original_size))
        else:
            rows.append(self._points(rgb, gray, pos, neg, n_out, handle.original_size))
        nb = len(rows)
        h, w = handle.original_size
        masks = np.zeros((nb, n_out, h, w), dtype=bool)
        scores = np.zeros((nb, n_out), dtype=np.float32)
        logits = np.zeros((nb, n_out, LOW_RES_SIZE, LOW_RES_SIZE), dtype=np.float32)
        for b, row in enumerate(rows):
            if not row:  # every candidate came out empty
                row = [(np.zeros((h, w), dtype=bool), 0.0)]
            for c in range(n_out):
                m, s = row[min(c, len(row) - 1)]
                if c >= len(row):  # fewer distinct candidates than asked: repeat, ranked lower
                    s *= 0.5
                masks[b, c], scores[b, c] = m, s
                logits[b, c] = low_res_logits(m)
        return Masks(masks, scores, logits)

    # ------------------------------------------------------------------ prompt kinds
    def _box(self, rgb, gray, box, pos, neg, n_out, size) -> list[tuple[np.ndarray, float]]:
        win = box_window(rgb, gray, box)
        cands = box_candidates(win, box)
        if len(pos):
            loc = [win.to_local(*xy) for xy in pos]
            for c in cands:
                c.score *= 0.5 + 0.5 * _covered(c.mask, loc)
        if len(neg):
            for c in cands:
                c.mask = cut_negatives(win, c.mask, pos, neg)
        return [(win.paste(c.mask, size), c.score) for c in distinct_best(cands, n_out)]

    def _points(self, rgb, gray, pos, neg, n_out, size) -> list[tuple[np.ndarray, float]]:
        if not len(pos):  # only negative clicks: nothing is selected
            return [(np.zeros(size, dtype=bool), 0.0)]
        # Candidate k of the prompt = union over positive clicks of each click's k-th best.
        per_point = [_pasted_best(point_candidates(rgb, gray, (float(x), float(y))), n_out, size)
                     for x, y in pos]
        k_max = min(len(pp) for pp in per_point)
        cands = []
        for k in range(k_max):
            m = np.logical_or.reduce([pp[k].mask for pp in per_point])
            cands.append(Candidate(m, float(np.mean([pp[k].score for pp in per_point]))))
        if len(neg):
            for c in cands:
                c.mask = _cut_full(rgb, gray, c.mask, pos, neg)
        return [(c.mask, c.score) for c in distinct_best(cands, n_out)]


def _pasted_best(cands: list[tuple[Window, Candidate]], n: int, size) -> list[Candidate]:
    """Up to n distinct candidates, best first, pasted at full size (only those are pasted)."""
    out: list[Candidate] = []
    for win, c in sorted(cands, key=lambda wc: -wc[1].score):
        full = Candidate(win.paste(c.mask, size), c.score, c.how)
        if len(distinct_best(out + [full], n)) > len(out):
            out.append(full)
        if len(out) == n:
            break
    return out


def _covered(mask: np.ndarray, pts: list[tuple[float, float]]) -> float:
    h, w = mask.shape
    hits = [mask[min(int(y), h - 1), min(int(x), w - 1)] for x, y in pts]
    return float(np.mean(hits))


def _cut_full(rgb, gray, mask, pos, neg) -> np.ndarray:
    """cut_negatives for a full-size mask, in a window around the mask and the clicks."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return mask
    allx = np.concatenate([xs, pos[:, 0], neg[:, 0]])
    ally = np.concatenate([ys, pos[:, 1], neg[:, 1]])
    pad = 4
    win = make_window(rgb, gray, allx.min() - pad, ally.min() - pad, allx.max() + pad + 1,
                      ally.max() + pad + 1)
    local = mask[win.y0:win.y1, win.x0:win.x1]
    if local.shape != win.shape:
        local = cv2.resize(local.astype(np.uint8), win.shape[::-1],
                           interpolation=cv2.INTER_NEAREST).astype(bool)
    return win.paste(cut_negatives(win, local, pos, neg), mask.shape)
