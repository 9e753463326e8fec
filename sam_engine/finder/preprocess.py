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
    min_score: float = 0.0
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
    std = max(float(x.std()), 4.0)  # a flat image stays flat, not amplified noise
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
    n, lab = cv2.connectedComponents(joined, connectivity=8)
    if n <= 1:
        return []
    lab = np.where(m > 0, lab, 0)
    return [lab == i for i in range(1, n) if (lab == i).any()]


def radius_px(image_size: tuple[int, int], group_radius: float) -> int:
    return int(round(group_radius * max(image_size)))


def postprocess(probs: np.ndarray, info: InputInfo, classes: Sequence[str],
                wanted: Sequence[str] | None = None,
                settings: PostSettings = PostSettings()) -> list[Found]:
    """Found defects from softmax probabilities (1 + len(classes), H, W) at input resolution.

    wanted: the classes to look for (default all); the foreground is their summed probability,
    and each defect takes the wanted class with the most probability over its pixels.
    """
    wanted = list(classes) if wanted is None else list(wanted)
    missing = [c for c in wanted if c not in classes]
    if missing:
        raise ValueError(f"classes {missing} are not known to this finder ({', '.join(classes)})")
    idx = [1 + list(classes).index(c) for c in wanted]
    rh, rw = info.resized
    h, w = info.image_size
    p = probs[idx, :rh, :rw].astype(np.float32)
    fg = p.sum(axis=0)
    if (rh, rw) != (h, w):
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR)
    mask = fg > settings.threshold
    if not mask.any():
        return []
    out: list[Found] = []
    sy, sx = rh / h, rw / w
    for g in group_components(mask, radius_px((h, w), settings.group_radius)):
        area = int(np.count_nonzero(g))
        if area < settings.min_area:
            continue
        score = float(fg[g].mean())
        if score < settings.min_score:
            continue
        ys, xs = np.nonzero(g)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        # class: the wanted class with the most probability over the defect (at input scale)
        ly = np.clip((ys * sy).astype(np.int64), 0, rh - 1)
        lx = np.clip((xs * sx).astype(np.int64), 0, rw - 1)
        mass = p[:, ly, lx].sum(axis=1)
        out.append(Found(wanted[int(np.argmax(mass))], score, g, box, SOURCE_FINDER))
    out.sort(key=lambda f: -f.score)
    return out
