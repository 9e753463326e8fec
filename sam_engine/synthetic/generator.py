"""Synthetic photos of industrial parts with defects of known shape, for tuning and testing.

Metal (rolled steel, brushed steel, turned aluminium) and ceramic (smooth, speckled, matte,
granular) surfaces carry scratches, pits, cracks, stains, inclusions and patches. Every instance's
ground-truth mask is exactly the set of pixels whose value the defect changed visibly (judged after
the optical blur, before sensor noise and JPEG), and instances never overlap.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives byte-identical
images and masks (pinned by digest in the tests: the demo samples and tuning sets depend on them).
Run ``python -m sam_engine.synthetic.generator --help`` to write a data set or demo set. Harder,
more varied parts for training the learned engine come from ``hard.py`` (``training_part``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sam_engine.synthetic.noise import fractal, grain, grid, loguniform, standardise, streaks

KINDS: tuple[str, ...] = ("scratch", "pit", "crack", "stain", "inclusion", "patch")
MATERIALS: tuple[str, ...] = ("metal", "ceramic")

# Columns of ../shared/data/defects manifests (bbox columns are inclusive pixel indices).
MANIFEST_COLUMNS = ("dataset", "image_path", "mask_path", "class", "width", "height",
                    "mask_area_px", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "n_components")
COMPONENT_COLUMNS = ("dataset", "image_path", "mask_path", "class", "component_id", "area_px",
                     "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")

MIN_AREA = 20          # smallest instance kept, pixels
VIS_FRACTION = 0.35    # a pixel is part of a defect where its change is >= this share of the peak
_PLACE_TRIES = 40
_MIN_SNR = 1.5         # edge contrast of a kept defect, in units of the surface clutter
_MIN_CONTRAST = 0.035   # intensity units (~9 grey levels): nothing fainter is drawn

Rng = np.random.Generator


@dataclass(frozen=True)
class DefectInstance:
    """One defect: its kind and the boolean mask of the pixels it visibly changed."""

    kind: str
    mask: np.ndarray

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 with x1/y1 exclusive (last foreground column/row + 1)."""
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return (0, 0, 0, 0)
        return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def point(self) -> tuple[int, int]:
        """x, y of the most interior pixel (largest distance to the background)."""
        return interior_point(self.mask)


@dataclass(frozen=True)
class SyntheticPart:
    """A rendered part: RGB image, its defect instances, material and the seed that made it."""

    image: np.ndarray
    instances: tuple[DefectInstance, ...]
    material: str
    seed: int

    def label_map(self) -> np.ndarray:
        """uint16 (H, W): 0 background, i + 1 on the pixels of instances[i]."""
        out = np.zeros(self.image.shape[:2], np.uint16)
        for i, inst in enumerate(self.instances):
            out[inst.mask] = i + 1
        return out


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """x, y of the mask pixel farthest from the background (first in raster order on ties)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def _lighting(rng: Rng, base: np.ndarray, grad: float, vignette: float) -> np.ndarray:
    """Illumination gradient and vignetting (both multiplicative)."""
    h, w = base.shape
    xx, yy = grid((h, w))
    a = rng.uniform(0, 2 * math.pi)
    plane = ((xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a)).astype(np.float32)
    cx, cy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7)
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / float((w / 2) ** 2 + (h / 2) ** 2)
    return base * (1.0 + grad * 2 * plane) * (1.0 - vignette * r2)


# --------------------------------------------------------------------------- backgrounds


@dataclass(frozen=True)
class _Surface:
    image: np.ndarray        # float32 (H, W), ~[0, 1]
    direction: float         # main texture direction, degrees (defects like scratches follow it)
    clutter: float           # std of the fine texture (high-pass), intensity units
    mottle: float            # std of the texture up to ~40 px features (what large defects face)


def _metal(rng: Rng, shape: tuple[int, int]) -> _Surface:
    h, w = shape
    style = rng.choice(["rolled", "brushed", "turned"], p=[0.45, 0.35, 0.2])
    direction = float(rng.choice([0.0, 90.0]) + rng.normal(0, 1.5))
    if rng.random() < 0.15:
        direction = float(rng.uniform(0, 180))
    if style == "rolled":  # hot-rolled steel: dark, grainy, coarse streaks (NEU-like)
        base = rng.uniform(0.3, 0.6)
        tex = (rng.uniform(0.015, 0.04) * streaks(rng, shape, direction, rng.integers(40, 200),
                                                  rng.uniform(1, 4))
               + rng.uniform(0.015, 0.045) * grain(rng, shape, rng.uniform(0.5, 1.2))
               + rng.uniform(0.01, 0.04) * fractal(rng, shape, rng.uniform(40, 120)))
    elif style == "brushed":  # brushed steel: fine long streaks dominate
        base = rng.uniform(0.45, 0.75)
        tex = (rng.uniform(0.025, 0.06) * streaks(rng, shape, direction, rng.integers(80, 400),
                                                  rng.uniform(0.3, 1.0))
               + rng.uniform(0.005, 0.02) * grain(rng, shape, 0.6)
               + rng.uniform(0.005, 0.025) * fractal(rng, shape, 150))
    else:  # turned aluminium: tool marks are arcs around a far-away centre
        base = rng.uniform(0.5, 0.8)
        xx, yy = grid(shape)
        r = float(max(h, w)) * rng.uniform(1.2, 4.0)
        a = math.radians(direction + 90)
        cx, cy = w / 2 + r * math.cos(a), h / 2 + r * math.sin(a)
        rad = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        lo = int(rad.min()) - 2
        profile = rng.standard_normal(int(rad.max()) - lo + 3).astype(np.float32)
        profile = cv2.GaussianBlur(profile[None, :], (0, 0), rng.uniform(0.4, 1.5))[0]
        marks = standardise(np.interp(rad - lo, np.arange(profile.size), profile))
        tex = (rng.uniform(0.02, 0.05) * marks
               + rng.uniform(0.005, 0.015) * grain(rng, shape, 0.6)
               + rng.uniform(0.005, 0.02) * fractal(rng, shape, 120))
    img = np.float32(base) + tex.astype(np.float32)
    # Specular bands across the texture direction.
    xx, yy = grid(shape)
    a = math.radians(direction)
    u = -xx * math.sin(a) + yy * math.cos(a)
    u_min, u_max = float(u.min()), float(u.max())
    for _ in range(rng.integers(0, 3)):
        u0 = rng.uniform(u_min, u_max)
        bw = rng.uniform(0.03, 0.25) * (u_max - u_min)
        img += np.float32(rng.uniform(0.04, 0.2)) * np.exp(-(((u - u0) / bw) ** 2))
    img = _lighting(rng, img, rng.uniform(0.0, 0.15), rng.uniform(0.0, 0.35))
    return _Surface(img.astype(np.float32), direction, *_clutter(tex))


def _ceramic(rng: Rng, shape: tuple[int, int]) -> _Surface:
    h, w = shape
    style = rng.choice(["smooth", "speckled", "matte", "granular"], p=[0.25, 0.3, 0.25, 0.2])
    if style == "granular":  # rough, asphalt-like aggregate (close to CrackForest backgrounds)
        base = rng.uniform(0.35, 0.6)
        tex = (rng.uniform(0.04, 0.08) * grain(rng, shape, rng.uniform(0.8, 1.6))
               + rng.uniform(0.02, 0.04) * grain(rng, shape, 0.5)
               + rng.uniform(0.01, 0.03) * fractal(rng, shape, 80))
        density, speck_amp = rng.uniform(0.002, 0.006), rng.uniform(0.08, 0.2)
    else:
        base = rng.uniform(0.55, 0.85)
        grain_amp = {"smooth": (0.003, 0.01), "speckled": (0.006, 0.015), "matte": (0.015, 0.03)}
        tex = (rng.uniform(*grain_amp[style]) * grain(rng, shape, rng.uniform(0.6, 1.2))
               + rng.uniform(0.008, 0.025) * fractal(rng, shape, rng.uniform(40, 150)))
        density = {"smooth": 0.0, "speckled": rng.uniform(0.0005, 0.003),
                   "matte": rng.uniform(0.0, 0.0008)}[style]
        speck_amp = rng.uniform(0.06, 0.2)
    n = int(density * h * w)
    if n:
        specks = np.zeros(shape, np.float32)
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        specks[ys, xs] = rng.choice([-1.0, 1.0], n, p=[0.7, 0.3]) * rng.uniform(0.5, 1.0, n)
        sig = rng.uniform(0.6, 1.2)
        specks = cv2.GaussianBlur(specks, (0, 0), sig) * np.float32(2 * math.pi * sig * sig)
        tex = tex + np.float32(speck_amp) * specks
    img = np.float32(base) + tex.astype(np.float32)
    img = _lighting(rng, img, rng.uniform(0.0, 0.1), rng.uniform(0.0, 0.25))
    return _Surface(img.astype(np.float32), float(rng.uniform(0, 180)), *_clutter(tex))


def _clutter(tex: np.ndarray) -> tuple[float, float]:
    fine = float((tex - cv2.GaussianBlur(tex, (0, 0), 4)).std())
    coarse = float((tex - cv2.GaussianBlur(tex, (0, 0), 40)).std())
    return fine, coarse


# --------------------------------------------------------------------------- defect shapes
# Each returns a float32 (H, W) signed change of intensity, zero away from the defect.


@dataclass(frozen=True)
class _Ctx:
    rng: Rng
    shape: tuple[int, int]
    surface: _Surface
    contrast: float  # typical visible change for this defect, intensity units


def _draw_path(shape: tuple[int, int], pts: np.ndarray, widths: np.ndarray,
               values: np.ndarray) -> np.ndarray:
    """Anti-aliased polyline whose width and strength vary along its points."""
    canvas = np.zeros(shape, np.uint8)
    strength = np.zeros(shape, np.float32)
    p = np.round(pts * 16).astype(np.int32)  # 4 fractional bits for sub-pixel placement
    for i in range(len(pts) - 1):
        t = max(1, int(round(widths[i])))
        a, b = tuple(int(v) for v in p[i]), tuple(int(v) for v in p[i + 1])
        cv2.line(canvas, a, b, 255, t, cv2.LINE_AA, shift=4)
        cv2.line(strength, a, b, float(values[i]), t + 2, cv2.LINE_8, shift=4)
    return canvas.astype(np.float32) / 255.0 * strength


def _scratch(c: _Ctx) -> np.ndarray:
    rng, (h, w) = c.rng, c.shape
    length = loguniform(rng, 25, 0.8 * max(h, w))
    if rng.random() < 0.6:
        ang = math.radians(c.surface.direction + rng.normal(0, 4))
    else:
        ang = rng.uniform(0, math.pi)
    p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    d = np.array([math.cos(ang), math.sin(ang)])
    nrm = np.array([-d[1], d[0]])
    bend = rng.normal(0, 0.06) * length
    t = np.linspace(0, 1, max(8, int(length / 4)))[:, None]
    pts = p0 + t * length * d + (4 * t * (1 - t)) * bend * nrm
    width = float(rng.choice([1, 1, 2, 2, 3, 4, 5, 6]))
    n = len(pts)
    taper = np.clip(np.minimum(t[:, 0], 1 - t[:, 0]) / rng.uniform(0.05, 0.25), 0, 1)
    wobble = 1 + 0.3 * np.interp(np.arange(n), np.linspace(0, n - 1, 6), rng.uniform(-1, 1, 6))
    values = taper * wobble
    widths = np.maximum(1, width * (0.6 + 0.4 * taper))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    out = _draw_path(c.shape, pts, widths, values)
    return (sign * c.contrast) * cv2.GaussianBlur(out, (0, 0), 0.5)


def _pit(c: _Ctx) -> np.ndarray:
    rng, (h, w) = c.rng, c.shape
    r = loguniform(rng, 2.0, 8.0)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    ry = r * rng.uniform(0.7, 1.0)
    core = np.zeros(c.shape, np.float32)
    center = (int(round(cx * 16)), int(round(cy * 16)))
    axes = (int(round(r * 16)), int(round(ry * 16)))
    ang = float(rng.uniform(0, 180))
    cv2.ellipse(core, center, axes, ang, 0, 360, 1.0, -1, cv2.LINE_AA, shift=4)
    core = cv2.GaussianBlur(core, (0, 0), max(0.6, r / 4))
    rim = np.zeros(c.shape, np.float32)
    axes_rim = (axes[0] + 24, axes[1] + 24)
    cv2.ellipse(rim, center, axes_rim, ang, 0, 360, 1.0, int(rng.integers(1, 3)),
                cv2.LINE_AA, shift=4)
    rim = cv2.GaussianBlur(rim, (0, 0), 0.7)
    return c.contrast * (-1.3 * core + rng.uniform(0.2, 0.5) * rim)


def _walk(rng: Rng, start: np.ndarray, heading: float, length: float,
          wiggle: float) -> np.ndarray:
    steps = max(4, int(length / 3))
    turn = rng.normal(0, wiggle, steps)
    # Jagged locally, but the heading drifts back towards the original one (no loops).
    heads = np.empty(steps)
    h = heading
    for i in range(steps):
        h += turn[i] - 0.15 * (h - heading)
        heads[i] = h
    moves = 3 * np.stack([np.cos(heads), np.sin(heads)], axis=1)
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _crack(c: _Ctx) -> np.ndarray:
    rng, (h, w) = c.rng, c.shape
    length = loguniform(rng, 60, 0.9 * max(h, w))
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    main = _walk(rng, start, rng.uniform(0, 2 * math.pi), length, rng.uniform(0.08, 0.2))
    w0 = rng.uniform(1.0, 5.0)
    n = len(main)
    s = np.linspace(0, 1, n)
    taper = np.clip(np.minimum(s, 1 - s) / 0.15, 0.3, 1)
    strength = 0.7 + 0.3 * np.interp(np.arange(n), np.linspace(0, n - 1, 8), rng.random(8))
    out = _draw_path(c.shape, main, w0 * taper, strength * np.clip(taper * 1.5, 0, 1))
    for _ in range(rng.integers(0, 4)):
        i = int(rng.integers(n // 5, max(n // 5 + 1, 4 * n // 5)))
        head = math.atan2(*(main[min(i + 1, n - 1)] - main[i])[::-1])
        head += rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
        br = _walk(rng, main[i], head, length * rng.uniform(0.15, 0.5), 0.2)
        m = len(br)
        bt = np.linspace(1, 0.2, m)
        br_out = _draw_path(c.shape, br, np.maximum(1, w0 * 0.7 * bt), np.clip(bt * 1.3, 0, 1))
        out = np.maximum(out, br_out)
    return -c.contrast * cv2.GaussianBlur(out, (0, 0), 0.5)


def _blob(rng: Rng, shape: tuple[int, int], cx: float, cy: float, a: float, b: float,
          ang: float, rough: float, soft: float) -> np.ndarray:
    """Irregular soft blob: an ellipse whose edge is pushed around by smooth noise."""
    h, w = shape
    pad = int(3 * soft + 0.6 * max(a, b) * rough + 4)
    rad = int(max(a, b) * (1 + rough)) + pad
    x0, x1 = max(0, int(cx) - rad), min(w, int(cx) + rad + 1)
    y0, y1 = max(0, int(cy) - rad), min(h, int(cy) + rad + 1)
    out = np.zeros(shape, np.float32)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    xx, yy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) - cx,
                         np.arange(y0, y1, dtype=np.float32) - cy)
    ca, sa = math.cos(ang), math.sin(ang)
    u, v = (xx * ca + yy * sa) / a, (-xx * sa + yy * ca) / b
    field = 1 - np.sqrt(u * u + v * v)
    if rough > 0:
        field += rough * fractal(rng, field.shape, max(3.0, min(a, b) * 0.8), 2)
    inside = (field > 0).astype(np.float32)
    if soft > 0.2:
        inside = cv2.GaussianBlur(inside, (0, 0), soft)
    out[y0:y1, x0:x1] = inside
    return out


def _stain(c: _Ctx) -> np.ndarray:
    rng, (h, w) = c.rng, c.shape
    a = loguniform(rng, 8, 0.25 * min(h, w))
    b = a * rng.uniform(0.5, 1.0)
    blob = _blob(rng, c.shape, rng.uniform(0, w), rng.uniform(0, h), a, b,
                 rng.uniform(0, math.pi), rng.uniform(0.15, 0.4),
                 min(rng.uniform(0.15, 0.35) * b, 8) + 1)
    sign = 1.0 if rng.random() < 0.35 else -1.0
    return sign * c.contrast * blob


def _inclusion(c: _Ctx, near: tuple[float, float] | None = None) -> np.ndarray:
    rng, (h, w) = c.rng, c.shape
    ang = math.radians(c.surface.direction + rng.normal(0, 6))
    if near is None:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    else:
        step = rng.uniform(12, 45) * rng.choice([-1, 1])
        side = rng.normal(0, 6)
        cx = near[0] + step * math.cos(ang) - side * math.sin(ang)
        cy = near[1] + step * math.sin(ang) + side * math.cos(ang)
    a = loguniform(rng, 4, 16)
    b = max(1.6, a * rng.uniform(0.2, 0.5))
    blob = _blob(rng, c.shape, cx, cy, a, b, ang, rng.uniform(0.05, 0.2), 0.8)
    return -c.contrast * blob


def _patch(c: _Ctx) -> np.ndarray:
    rng, (h, w) = c.rng, c.shape
    a = rng.uniform(0.12, 0.35) * min(h, w) * rng.uniform(1.0, 1.6)
    b = a * rng.uniform(0.5, 1.0)
    blob = _blob(rng, c.shape, rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, a, b,
                 rng.uniform(0, math.pi), rng.uniform(0.3, 0.6), rng.uniform(2, 6))
    # A different texture inside: mottling and grain that never flip the sign of the change.
    sign = 1.0 if rng.random() < 0.25 else -1.0
    ys, xs = np.nonzero(blob)
    if xs.size == 0:
        return blob
    win = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]  # texture only where it shows
    shape = (int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    mottle = np.clip(fractal(rng, shape, rng.uniform(10, 30)), -2, 2) * 0.2
    fine = np.clip(grain(rng, shape, 0.8), -2, 2) * 0.12
    blob[win] *= 1 + mottle + fine
    return sign * c.contrast * blob


_DRAW: dict[str, Callable[[_Ctx], np.ndarray]] = {
    "scratch": _scratch, "pit": _pit, "crack": _crack, "stain": _stain,
    "inclusion": _inclusion, "patch": _patch,
}
# Contrast as a multiple of the surface clutter (median of a log-uniform range), per kind.
_CONTRAST = {"scratch": (2.5, 9.0), "pit": (3.0, 10.0), "crack": (4.0, 12.0),
             "stain": (2.2, 6.0), "inclusion": (3.0, 10.0), "patch": (2.0, 6.0)}
_PLACE_ORDER = {"patch": 0, "stain": 1, "crack": 2, "scratch": 3, "inclusion": 4, "pit": 5}


# --------------------------------------------------------------------------- composition


def _check_args(size: tuple[int, int], material: str | None, kinds: Sequence[str] | None,
                n_defects: int | None) -> None:
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f"size must be (height, width) of at least 32 px each, got {size!r}")
    if material is not None and material not in MATERIALS:
        raise ValueError(f"unknown material {material!r}; choose one of {MATERIALS}")
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown or no defect kinds {bad or kinds!r}; choose from {KINDS}")
    if n_defects is not None and n_defects < 0:
        raise ValueError(f"n_defects must be >= 0, got {n_defects}")


def make_part(seed: int, size: tuple[int, int] = (480, 640), material: str | None = None,
              kinds: Sequence[str] | None = None, n_defects: int | None = None) -> SyntheticPart:
    """Render one part of `size` (height, width) with `n_defects` defects (default 1-4).

    Fewer defects come back only when the surface is too crowded to place them apart.
    """
    _check_args(size, material, kinds, n_defects)
    rng = np.random.default_rng(seed)
    shape = (int(size[0]), int(size[1]))
    material = material or str(rng.choice(MATERIALS))
    kinds = tuple(kinds) if kinds else KINDS
    n = int(rng.integers(1, 5)) if n_defects is None else int(n_defects)
    surface = _metal(rng, shape) if material == "metal" else _ceramic(rng, shape)
    base = surface.image

    # Capture: optical blur, sensor noise, compression (drawn first so masks can use them).
    blur = float(rng.choice([0.0, rng.uniform(0.4, 1.3)], p=[0.35, 0.65]))
    noise = loguniform(rng, 0.004, 0.025)
    clutter = math.hypot(surface.clutter, noise)
    mottle = math.hypot(surface.mottle, noise)
    vis_abs = max(0.015, 1.2 * noise)
    blur_base = cv2.GaussianBlur(base, (0, 0), blur) if blur > 0 else base

    wanted = sorted((str(rng.choice(kinds)) for _ in range(n)), key=_PLACE_ORDER.__getitem__)
    claimed = np.zeros(shape, bool)
    changes: list[np.ndarray] = []
    found: list[DefectInstance] = []
    margin = np.ones((7, 7), np.uint8)
    last_inclusion: tuple[float, float] | None = None
    for kind in wanted:
        for _ in range(_PLACE_TRIES // 4 if kind in ("patch", "stain") else _PLACE_TRIES):
            k_lo, k_hi = _CONTRAST[kind]
            if rng.random() < 0.2:  # hard, low-contrast case
                k_hi = k_lo * 1.3
                k_lo = max(1.2, k_lo * 0.7)
            ref = mottle if kind in ("stain", "patch") else clutter
            contrast = max(_MIN_CONTRAST, ref * loguniform(rng, k_lo, k_hi))
            ctx = _Ctx(rng, shape, surface, contrast)
            if kind == "inclusion" and last_inclusion is not None and rng.random() < 0.75:
                delta = _inclusion(ctx, near=last_inclusion)
            else:
                delta = _DRAW[kind](ctx)
            foot = np.abs(delta) > 1e-3
            if not foot.any() or (claimed & cv2.dilate(foot.view(np.uint8), margin) > 0).any():
                continue
            mask, strength = _visible(blur_base, delta, blur, vis_abs)
            mask &= ~claimed
            if np.count_nonzero(mask) < MIN_AREA or strength < _MIN_SNR * ref:
                continue
            claimed |= cv2.dilate(foot.view(np.uint8), margin).astype(bool) | mask
            changes.append(delta)
            found.append(DefectInstance(kind, mask))
            if kind == "inclusion":
                ys, xs = np.nonzero(mask)
                last_inclusion = (float(xs.mean()), float(ys.mean()))
            break

    img = base + (np.sum(changes, axis=0) if changes else 0)
    if blur > 0:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), blur)
    image = _capture(rng, np.clip(img, 0, 1).astype(np.float32), noise)
    return SyntheticPart(image, tuple(found), material, int(seed))


def _visible(blur_base: np.ndarray, delta: np.ndarray, blur: float,
             vis_abs: float) -> tuple[np.ndarray, float]:
    """Pixels whose blurred, clipped value the change moved visibly, and the edge contrast.

    The edge contrast is the mean change in a band just inside the mask minus that in a ring just
    outside it: what a viewer (or a segmenter) sees at the defect's boundary.
    """
    d = cv2.GaussianBlur(delta, (0, 0), blur) if blur > 0 else delta
    signed = np.clip(blur_base + d, 0, 1) - np.clip(blur_base, 0, 1)
    vis = np.abs(signed)
    nz = vis[vis > 1e-3]
    if nz.size == 0:
        return np.zeros(delta.shape, bool), 0.0
    peak = float(np.percentile(nz, 99))
    mask = vis >= max(vis_abs, VIS_FRACTION * peak)
    if not mask.any():
        return mask, 0.0
    m = mask.view(np.uint8)
    band = mask & (cv2.erode(m, _DISK[6]) == 0)
    ring = (cv2.dilate(m, _DISK[8]) > 0) & (cv2.dilate(m, _DISK[2]) == 0)
    # Signed means: a pit's bright rim must not pass for contrast that its dark core cancels.
    inside = float(signed[band].mean()) if band.any() else float(signed[mask].mean())
    return mask, abs(inside - (float(signed[ring].mean()) if ring.any() else 0.0))


_DISK = {r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) for r in (2, 6, 8)}


def _capture(rng: Rng, grey: np.ndarray, noise: float) -> np.ndarray:
    """Tint to RGB, add sensor noise, quantise and maybe JPEG-compress."""
    h, w = grey.shape
    tint = np.ones(3, np.float32) if rng.random() < 0.5 else \
        (1 + rng.normal(0, 0.02, 3)).astype(np.float32)
    rgb = grey[..., None] * tint
    shot = np.sqrt(np.clip(grey, 0, 1))[..., None]  # brighter pixels get more noise
    lum = rng.standard_normal((h, w, 1)).astype(np.float32)
    chroma = rng.standard_normal((h, w, 3)).astype(np.float32)
    rgb = rgb + noise * shot * (0.9 * lum + 0.3 * chroma)
    out = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        q = int(rng.integers(55, 96))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- writers


def _write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace, so readers never see half a file.

    (sam_engine may not import app.outputs.atomic_write, hence this small copy.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_png(path: Path, image: np.ndarray) -> None:
    img = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    _write_bytes(path, buf.tobytes())


def _csv_text(header: Sequence[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _part_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint32)[0])


def write_dataset(out_dir: Path, n: int, seed: int = 0, size: tuple[int, int] = (480, 640),
                  kinds: Sequence[str] | None = None, material: str | None = None) -> Path:
    """Write n parts in the layout of the shared real-defect folder; return manifest_components.csv.

    images/<stem>.png, masks/<stem>.png (0/255 union), masks/<stem>_<k>.png (instance k only),
    manifest.csv (one row per image, class = its kinds joined by '+', n_components = instances)
    and manifest_components.csv (one row per instance). bbox columns are inclusive indices.
    """
    out_dir = Path(out_dir)
    rows, comp_rows = [], []
    for i in range(n):
        part = make_part(_part_seed(seed, i), size, material, kinds)
        stem = f"synth_{seed}_{i:05d}"
        img_rel, mask_rel = f"images/{stem}.png", f"masks/{stem}.png"
        _write_png(out_dir / img_rel, part.image)
        union = part.label_map() > 0
        _write_png(out_dir / mask_rel, union.astype(np.uint8) * 255)
        h, w = union.shape
        ub = DefectInstance("union", union).bbox
        kinds_here = "+".join(sorted({d.kind for d in part.instances})) or "none"
        rows.append(["synthetic", img_rel, mask_rel, kinds_here, w, h, int(union.sum()),
                     ub[0], ub[1], max(ub[2] - 1, 0), max(ub[3] - 1, 0), len(part.instances)])
        for k, inst in enumerate(part.instances, start=1):
            comp_rel = f"masks/{stem}_{k}.png"
            _write_png(out_dir / comp_rel, inst.mask.astype(np.uint8) * 255)
            x0, y0, x1, y1 = inst.bbox
            comp_rows.append(["synthetic", img_rel, comp_rel, inst.kind, k, inst.area,
                              x0, y0, x1 - 1, y1 - 1])
    _write_bytes(out_dir / "manifest.csv", _csv_text(MANIFEST_COLUMNS, rows).encode())
    comp_path = out_dir / "manifest_components.csv"
    _write_bytes(comp_path, _csv_text(COMPONENT_COLUMNS, comp_rows).encode())
    return comp_path


def sample_specs(n: int) -> list[tuple[str, tuple[str, ...], int]]:
    """(material, kinds, n_defects) of demo sample i: both materials, every kind, 2-4 defects."""
    plan = [("metal", ("scratch", "inclusion"), 3), ("ceramic", ("crack", "pit"), 3),
            ("metal", ("patch", "pit"), 2), ("ceramic", ("stain", "scratch"), 3),
            ("metal", ("inclusion",), 4), ("ceramic", ("crack", "stain", "pit"), 4)]
    return [plan[i % len(plan)] for i in range(n)]


def write_samples(out_dir: Path, n: int = 6, seed: int = 7) -> None:
    """The demo set: <stem>.png, <stem>.json (defect list) and gt/<stem>.png (uint16 labels).

    The JSON is {"image", "width", "height", "material", "seed", "defects": [{"kind", "box"
    [x0, y0, x1, y1] exclusive, "point" [x, y] most interior pixel, "area_px"}]}; label i + 1 in
    the ground truth is defects[i].
    """
    out_dir = Path(out_dir)
    for i, (material, kinds, n_def) in enumerate(sample_specs(n)):
        part = make_part(_part_seed(seed, i), (480, 640), material, kinds, n_def)
        stem = f"part_{i + 1:02d}_{material}"
        _write_png(out_dir / f"{stem}.png", part.image)
        _write_png(out_dir / "gt" / f"{stem}.png", part.label_map())
        defects = [{"kind": d.kind, "box": list(d.bbox), "point": list(d.point),
                    "area_px": d.area} for d in part.instances]
        meta = {"image": f"{stem}.png", "width": part.image.shape[1],
                "height": part.image.shape[0], "material": material, "seed": part.seed,
                "defects": defects}
        _write_bytes(out_dir / f"{stem}.json", (json.dumps(meta, indent=2) + "\n").encode())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sam_engine.synthetic.generator",
                                 description="Write synthetic defect images with ground truth.")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--n", type=int, default=6, help="number of images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", action="store_true",
                    help="write the demo set (<stem>.png + .json + gt/) instead of a data set")
    ap.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of data-set images")
    ap.add_argument("--kinds", help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--material", choices=MATERIALS)
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    if args.samples:
        write_samples(args.out, args.n, args.seed)
        print(f"wrote {args.n} demo samples to {args.out}")
        return 0
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
        kinds = args.kinds.split(",") if args.kinds else None
        path = write_dataset(args.out, args.n, args.seed, (h, w), kinds, args.material)
    except ValueError as exc:
        ap.error(str(exc))
    print(f"wrote {args.n} images; components: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
