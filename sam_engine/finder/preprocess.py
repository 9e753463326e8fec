"""The finder's one preprocessing and post-processing, in numpy (PyTorch and ONNX share it).

Input: the image resized so its long side is `long_side` (area resampling when shrinking),
standardised by its own mean and spread (so exposure and gain differ between sites without
moving the network's input), and padded with zeros to a multiple of `multiple`.
Output: per-pixel softmax over background + classes at input resolution; `postprocess` takes
the foreground of the classes asked for, brings it to full image size, thresholds it and groups
its components into defects.

Grouping: one defect is the set of components whose pixels lie within `group_radius` of each
other (a fraction of the image's long side; NEU-Seg's inclusions and patches are drawn as
clusters of fragments). metrics.py groups ground truth the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from sam_engine.finder.types import SOURCE_FINDER, Found

VERSION = "finder-v1"  # recorded in every finder; a change here needs retraining


@dataclass(frozen=True)
class FinderGeometry:
    """How an image becomes the network's input."""

    long_side: int = 256
    multiple: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FinderGeometry:
        return cls(int(d["long_side"]), int(d["multiple"]))


@dataclass(frozen=True)
class InputInfo:
    """Where the image sits in the network input: resized (h, w) inside padded (h, w)."""

    image_size: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]


@dataclass(frozen=True)
class PostSettings:
    """Thresholds of post-processing. min_area: pixels at full size; group_radius: fraction of
    the long side."""

    threshold: float = 0.5
    min_area: int = 20
    min_score: float = 0.75  # site protocol, NEU-Seg halves: fewer fragments and false alarms
    group_radius: float = 0.02

    def to_dict(self) -> dict:
        return asdict(self)


def resized_size(image_size: tuple[int, int], geometry: FinderGeometry) -> tuple[int, int]:
    h, w = image_size
    s = geometry.long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def standardise(rgb: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3): the image minus its mean, over its spread (floored for flat images)."""
    x = rgb.astype(np.float32)
    mean = float(x.mean())
    std = max(float(x.std()), 20.0)  # a smooth part keeps its faint texture faint
    return (x - mean) / std


def finder_input(rgb: np.ndarray, geometry: FinderGeometry) -> tuple[np.ndarray, InputInfo]:
    """(1, 3, H, W) float32 network input and where the image is in it."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    size = (int(rgb.shape[0]), int(rgb.shape[1]))
    rh, rw = resized_size(size, geometry)
    interp = cv2.INTER_AREA if rh < size[0] else cv2.INTER_LINEAR
    small = cv2.resize(rgb, (rw, rh), interpolation=interp) if (rh, rw) != size else rgb
    x = standardise(small)
    m = geometry.multiple
    ph, pw = -(-rh // m) * m, -(-rw // m) * m
    out = np.zeros((1, 3, ph, pw), np.float32)
    out[0, :, :rh, :rw] = x.transpose(2, 0, 1)
    return out, InputInfo(size, (rh, rw), (ph, pw))


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def group_components(mask: np.ndarray, radius_px: int) -> list[np.ndarray]:
    """Bool masks of the defects in mask: components within radius_px of each other join."""
    m = np.asarray(mask, np.uint8)
    if radius_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
        joined = cv2.dilate(m, k)
    else:
        joined = m
    n, lab, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i, :4])
        win = (slice(y, y + h), slice(x, x + w))
        part = (lab[win] == i) & (m[win] > 0)
        if part.any():
            g = np.zeros(m.shape, bool)
            g[win] = part
            out.append(g)
    return out


def radius_px(image_size: tuple[int, int], group_radius: float) -> int:
    return int(round(group_radius * max(image_size)))


def _upsample_window(fg: np.ndarray, full: tuple[int, int], y0: int, y1: int, x0: int,
                     x1: int) -> np.ndarray:
    """fg (low resolution) resampled bilinearly to full size, only over rows y0:y1, columns
    x0:x1: the values cv2.resize gives there (same half-pixel alignment)."""
    h, w = full
    lh, lw = fg.shape
    mx = ((np.arange(x0, x1, dtype=np.float32) + 0.5) * (lw / w) - 0.5).clip(0, lw - 1)
    my = ((np.arange(y0, y1, dtype=np.float32) + 0.5) * (lh / h) - 0.5).clip(0, lh - 1)
    map_x = np.broadcast_to(mx[None, :], (y1 - y0, x1 - x0))
    map_y = np.broadcast_to(my[:, None], (y1 - y0, x1 - x0))
    return cv2.remap(fg, np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def postprocess(probs: np.ndarray, info: InputInfo, classes: Sequence[str],
                wanted: Sequence[str] | None = None,
                settings: PostSettings = PostSettings()) -> list[Found]:
    """Found defects from softmax probabilities (1 + len(classes), H, W) at input resolution.

    wanted: the classes to look for (default all); the foreground is their summed probability,
    and each defect takes the wanted class with the most probability over its pixels.
    The full-size foreground is computed only in windows around low-resolution pixels above the
    threshold (a bilinear value above it needs a neighbour above it), so the cost follows the
    defects' area, not the image's.
    """
    wanted = list(classes) if wanted is None else list(wanted)
    missing = [c for c in wanted if c not in classes]
    if missing:
        raise ValueError(f"classes {missing} are not known to this finder ({', '.join(classes)})")
    idx = [1 + list(classes).index(c) for c in wanted]
    rh, rw = info.resized
    h, w = info.image_size
    p = np.ascontiguousarray(probs[idx, :rh, :rw], dtype=np.float32)
    fg_low = p.sum(axis=0)
    seed = (fg_low > settings.threshold).astype(np.uint8)
    if not seed.any():
        return []
    r = radius_px((h, w), settings.group_radius)
    sy, sx = rh / h, rw / w
    # windows: low-res groups joined over more than the grouping radius, so no full-size
    # group spans two windows
    r_low = int(np.ceil(r * max(sy, sx))) + 2
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_low + 1, 2 * r_low + 1))
    n, _, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(seed, k), connectivity=8)
    out: list[Found] = []
    for i in range(1, n):
        lx, ly, lw_, lh_ = (int(v) for v in stats[i, :4])
        x0 = max(0, int(np.floor(lx / sx)) - 1)
        y0 = max(0, int(np.floor(ly / sy)) - 1)
        x1 = min(w, int(np.ceil((lx + lw_) / sx)) + 1)
        y1 = min(h, int(np.ceil((ly + lh_) / sy)) + 1)
        fg = _upsample_window(fg_low, (h, w), y0, y1, x0, x1) if (rh, rw) != (h, w) \
            else fg_low[y0:y1, x0:x1]
        for part in group_components(fg > settings.threshold, r):
            area = int(np.count_nonzero(part))
            if area < settings.min_area:
                continue
            score = float(fg[part].mean())
            if score < settings.min_score:
                continue
            ys, xs = np.nonzero(part)
            ys, xs = ys + y0, xs + x0
            g = np.zeros((h, w), bool)
            g[ys, xs] = True
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            # class: the wanted class with the most probability over the defect (input scale)
            ly_ = np.clip((ys * sy).astype(np.int64), 0, rh - 1)
            lx_ = np.clip((xs * sx).astype(np.int64), 0, rw - 1)
            mass = p[:, ly_, lx_].sum(axis=1)
            out.append(Found(wanted[int(np.argmax(mass))], score, g, box, SOURCE_FINDER))
    out.sort(key=lambda f: -f.score)
    return out
