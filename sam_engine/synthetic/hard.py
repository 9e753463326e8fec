"""Hard synthetic parts: the training diet of the learned engine's base model.

`make_part` (generator.py) draws clean demo parts; this module draws what a model must survive to
transfer to real sites (steel strip like NEU-Seg, concrete and asphalt like CrackForest):

- surfaces (`HARD_TEXTURES`): rolled-steel streaks at any angle, brushed, grainy, speckled,
  concrete aggregate, asphalt, smooth, mottled; grey or colour;
- lighting: gradients, vignetting, uneven illumination, specular bands, under/over exposure
  (highlights roll off into saturation) and gamma;
- defects (`HARD_KINDS`): thin (1-5 px) tortuous branching cracks, scratches 1-16 px wide,
  patches that fill most of their box, large diffuse regions, clusters of dark specks (one
  instance of several components), inclusions, pits and stains; all often faint, and free to run
  off the image;
- capture: optical blur, rendering at another scale and resampling (linear, cubic, area or
  nearest), sensor noise and JPEG at quality 30-95; sizes 160..640 px per side unless given.

Ground truth follows generator.py: an instance's mask is exactly the output pixels whose value
the defect changed by at least max(noise floor, 35% of its peak change), judged after lighting,
blur, resampling and tone curve but before sensor noise and JPEG. Instances never overlap, none
is under `MIN_AREA` pixels, and a defect too faint against the surface is not drawn at all.

Everything comes from ``numpy.random.default_rng([seed, ...])``: one seed, identical bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from sam_engine.synthetic.generator import (
    MIN_AREA,
    VIS_FRACTION,
    DefectInstance,
    SyntheticPart,
    make_part,
)
from sam_engine.synthetic.noise import (
    Rng,
    field,
    fractal_field,
    grid,
    loguniform,
    normal,
    streak_field,
    white,
)

HARD_KINDS: tuple[str, ...] = ("crack", "scratch", "patch", "region", "blob", "inclusion", "pit",
                               "stain")
HARD_TEXTURES: tuple[str, ...] = ("rolled", "brushed", "grainy", "speckled", "concrete", "asphalt",
                                  "smooth", "mottled")
SIZE_RANGE = (160, 640)  # random output sides, pixels (inclusive)

_STREAM = 0x4A5D          # seeds the hard stream apart from make_part's default_rng(seed)
_MIN_SNR = 1.2            # edge contrast of a kept defect, in units of the surface clutter
_MIN_CONTRAST = 0.015     # reflectance units: nothing fainter is drawn
_MARGIN = np.ones((7, 7), np.uint8)  # keeps instances' footprints >= 3 px apart
_KIND_WEIGHT = {"crack": 2.0, "scratch": 1.5, "patch": 1.5, "region": 1.0, "blob": 1.0,
                "inclusion": 1.2, "pit": 0.8, "stain": 1.0}
# Contrast as a multiple of the surface clutter (log-uniform), per kind: lower than make_part's.
_CONTRAST = {"crack": (1.5, 10.0), "scratch": (1.5, 8.0), "patch": (1.5, 6.0),
             "region": (1.8, 5.0), "blob": (2.0, 10.0), "inclusion": (2.0, 8.0),
             "pit": (2.5, 10.0), "stain": (1.5, 5.0)}
_LARGE = ("region", "patch", "stain")  # faced with the coarse texture (mottle), placed first
_ORDER = {k: i for i, k in enumerate(("region", "patch", "stain", "crack", "scratch", "blob",
                                      "inclusion", "pit"))}
_PALETTE = np.array([[1.08, 1.0, 0.9], [0.94, 1.0, 1.08], [1.22, 0.96, 0.78],
                     [0.92, 1.07, 0.95], [1.0, 1.0, 1.0]], np.float32)


# --------------------------------------------------------------------------- surface


def _specks(rng: Rng, shape: tuple[int, int], density: float, amp: float,
            dark_share: float) -> np.ndarray:
    """Scattered small dots (pores, aggregate, dust): part of the surface, never a defect."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    n = int(density * h * w)
    if n:
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        sign = rng.choice([-1.0, 1.0], n, p=[dark_share, 1 - dark_share])
        out[ys, xs] = sign * rng.uniform(0.5, 1.0, n)
        sig = rng.uniform(0.6, 1.3)
        out = cv2.GaussianBlur(out, (0, 0), sig) * np.float32(2 * math.pi * sig * sig * amp)
    return out


def _texture(rng: Rng, name: str, shape: tuple[int, int], direction: float) -> np.ndarray:
    """Zero-mean-ish reflectance texture of one of HARD_TEXTURES."""
    u = rng.uniform
    if name == "rolled":  # hot-rolled strip: coarse streaks, grain, mottling (NEU-like)
        return (u(0.015, 0.05) * streak_field(rng, shape, direction,
                                              int(rng.integers(20, 200)), u(0.5, 4.0))
                + u(0.01, 0.05) * white(rng, shape, u(0.5, 1.2))
                + u(0.01, 0.05) * fractal_field(rng, shape, u(30, 120)))
    if name == "brushed":
        return (u(0.02, 0.06) * streak_field(rng, shape, direction,
                                             int(rng.integers(80, 400)), u(0.3, 1.0))
                + u(0.004, 0.015) * white(rng, shape, 0.6)
                + u(0.005, 0.025) * fractal_field(rng, shape, 150))
    if name == "grainy":  # heavy fine grain (NEU patches' bright, noisy backgrounds)
        return (u(0.04, 0.12) * white(rng, shape, u(0.4, 1.0))
                + u(0.01, 0.05) * fractal_field(rng, shape, u(20, 100)))
    if name == "speckled":
        return (u(0.004, 0.015) * white(rng, shape, u(0.6, 1.2))
                + u(0.008, 0.025) * fractal_field(rng, shape, u(40, 150))
                + _specks(rng, shape, u(0.0005, 0.004), u(0.06, 0.2), 0.7))
    if name == "concrete":  # aggregate stones with sharp-ish edges, grain and dark pores
        stones = np.tanh(field(rng, shape, u(3, 10)) * np.float32(u(1.5, 4.0)))
        return (u(0.03, 0.07) * stones + u(0.02, 0.05) * white(rng, shape, u(0.6, 1.4))
                + u(0.01, 0.04) * fractal_field(rng, shape, u(40, 150))
                + _specks(rng, shape, u(0.0005, 0.003), u(0.1, 0.25), 0.9))
    if name == "asphalt":  # coarse salt-and-pepper aggregate (CrackForest-like)
        return (u(0.04, 0.09) * white(rng, shape, u(0.8, 1.8))
                + u(0.02, 0.04) * white(rng, shape, 0.5)
                + u(0.01, 0.03) * fractal_field(rng, shape, 80)
                + _specks(rng, shape, u(0.002, 0.008), u(0.08, 0.2), 0.5))
    if name == "smooth":
        return (u(0.002, 0.008) * white(rng, shape, u(0.5, 1.0))
                + u(0.005, 0.02) * fractal_field(rng, shape, u(60, 200)))
    # mottled: cast or blasted metal, matte paint
    return (u(0.02, 0.06) * fractal_field(rng, shape, u(6, 25))
            + u(0.01, 0.03) * white(rng, shape, u(0.5, 1.0)))


def _light(rng: Rng, shape: tuple[int, int], direction: float, metallic: bool) -> np.ndarray:
    """Multiplicative illumination: gradient, vignetting, uneven light, specular bands."""
    h, w = shape
    xx, yy = grid(shape)
    a = rng.uniform(0, 2 * math.pi)
    plane = (xx / w - 0.5) * math.cos(a) + (yy / h - 0.5) * math.sin(a)
    light = 1.0 + np.float32(2 * rng.uniform(0, 0.35)) * plane
    if rng.random() < 0.6:
        cx, cy = w * rng.uniform(0.2, 0.8), h * rng.uniform(0.2, 0.8)
        r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32((w / 2) ** 2 + (h / 2) ** 2)
        light *= 1.0 - np.float32(rng.uniform(0, 0.5)) * r2
    if rng.random() < 0.5:
        uneven = field(rng, shape, max(h, w) * rng.uniform(0.2, 0.8))
        light *= 1.0 + np.float32(rng.uniform(0, 0.25)) * uneven
    if metallic:
        t = math.radians(direction)
        v = -xx * math.sin(t) + yy * math.cos(t)
        lo, hi = float(v.min()), float(v.max())
        for _ in range(int(rng.integers(0, 3))):
            v0, bw = rng.uniform(lo, hi), rng.uniform(0.03, 0.25) * (hi - lo)
            light += np.float32(rng.uniform(0.05, 0.4)) * np.exp(-(((v - v0) / bw) ** 2))
    return np.maximum(light, 0.15).astype(np.float32)


# --------------------------------------------------------------------------- camera


@dataclass(frozen=True)
class _Camera:
    """What happens between the lit surface and the stored pixels."""

    blur: float                                 # optical blur sigma, render pixels
    steps: tuple[tuple[int, int, int], ...]     # resamples: (height, width, cv2 interpolation)
    gain: float                                 # exposure
    knee: float                                 # highlights roll off above this level
    gamma: float
    noise: float                                # sensor noise std at full scale
    vis_abs: float                              # smallest change that counts as visible

    def tone(self, x: np.ndarray) -> np.ndarray:
        """Exposure, a highlight shoulder (saturates smoothly, as sensors' tone curves do) and
        gamma: lit surface -> stored intensity in [0, 1]."""
        k = np.float32(self.knee)
        y = x * np.float32(self.gain)
        over = np.maximum(y - k, 0) / (1 - k)
        y = np.minimum(y, k) + (1 - k) * over / (1 + over)
        y = np.maximum(y, 0)
        return np.power(y, np.float32(self.gamma)) if self.gamma != 1.0 else y

    def blurred(self, x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), self.blur) if self.blur > 0 else x

    def resampled(self, x: np.ndarray) -> np.ndarray:
        for h, w, interp in self.steps:
            x = cv2.resize(x, (w, h), interpolation=interp)
        return x


def _camera(rng: Rng, lit: np.ndarray, render: tuple[int, int],
            out: tuple[int, int]) -> _Camera:
    """A random camera: blur, resampling from the render size, exposure, tone, noise."""
    steps: list[tuple[int, int, int]] = []
    up = cv2.INTER_NEAREST if rng.random() < 0.1 else int(
        rng.choice([cv2.INTER_LINEAR, cv2.INTER_CUBIC]))
    if render != out:
        down = render[0] > out[0]
        interp = int(rng.choice([cv2.INTER_AREA, cv2.INTER_LINEAR])) if down else up
        steps.append((out[0], out[1], interp))
    elif rng.random() < 0.2:  # an earlier downscale in the pipeline, then back up
        f = rng.uniform(0.5, 0.85)
        small = (max(16, round(out[0] * f)), max(16, round(out[1] * f)))
        steps += [(*small, cv2.INTER_AREA), (*out, up)]
    level = float(rng.choice([rng.uniform(0.35, 0.7), rng.uniform(0.12, 0.3),
                              rng.uniform(0.7, 0.85)], p=[0.7, 0.15, 0.15]))
    noise = loguniform(rng, 0.003, 0.03)
    return _Camera(blur=float(rng.choice([0.0, rng.uniform(0.4, 1.4)], p=[0.3, 0.7])),
                   steps=tuple(steps), gain=level / max(float(lit.mean()), 1e-3),
                   knee=rng.uniform(0.7, 0.95),
                   gamma=float(rng.choice([1.0, rng.uniform(0.7, 1.4)], p=[0.5, 0.5])),
                   noise=noise, vis_abs=max(0.012, 1.0 * noise))


def _capture(rng: Rng, grey: np.ndarray, noise: float, colour: bool) -> np.ndarray:
    """Colour or grey RGB with shot-scaled sensor noise, quantised, maybe JPEG-compressed."""
    h, w = grey.shape
    shot = np.sqrt(grey) * np.float32(noise)  # brighter pixels get more noise
    lum = normal(rng, (h, w)) * shot
    if colour:
        tint = _PALETTE[int(rng.integers(len(_PALETTE)))] * (1 + rng.normal(0, 0.04, 3))
        tint = (tint / tint.mean()).astype(np.float32)
        drift = rng.random() < 0.5  # slow colour drift across the part
        amp = np.float32(rng.uniform(0.01, 0.05))
        chans = []
        for c in range(3):
            ch = grey * tint[c]
            if drift:
                ch *= 1 + amp * field(rng, (h, w), max(h, w) * 0.5)
            chans.append(ch + 0.9 * lum + np.float32(0.3) * normal(rng, (h, w)) * shot)
        rgb = cv2.merge(chans)
    else:
        rgb = grey + lum
    out = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        q = int(rng.integers(30, 96))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR) if colour else out,
                               [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
            out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB) if colour else out
    return out if colour else cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)


# --------------------------------------------------------------------------- defect shapes
# Each returns a _Stamp: a local signed change of reflectance placed at (y0, x0), or None.


@dataclass(frozen=True)
class _Stamp:
    y0: int
    x0: int
    delta: np.ndarray

    @property
    def win(self) -> tuple[slice, slice]:
        h, w = self.delta.shape
        return np.s_[self.y0:self.y0 + h, self.x0:self.x0 + w]


@dataclass(frozen=True)
class _Ctx:
    rng: Rng
    shape: tuple[int, int]   # render size
    direction: float         # texture direction, degrees
    contrast: float          # typical change, reflectance units
    scale: float             # render pixels per output pixel


def _box(shape: tuple[int, int], pts: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
    """y0, x0, y1, x1 of points +- pad, clipped to the image; None when nothing is inside."""
    h, w = shape
    x0, y0 = (np.floor(pts.min(axis=0) - pad)).astype(int)
    x1, y1 = (np.ceil(pts.max(axis=0) + pad)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (int(y0), int(x0), int(y1), int(x1)) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def _paths(shape: tuple[int, int],
           paths: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> _Stamp | None:
    """Anti-aliased polylines (points, widths, strengths per point), max-combined, in a window."""
    pad = max(float(p[1].max()) for p in paths) + 3
    box = _box(shape, np.vstack([p[0] for p in paths]), pad)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    for pts, widths, values in paths:
        canvas = np.zeros(out.shape, np.uint8)
        strength = np.zeros(out.shape, np.float32)
        p = np.round((pts - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits
        for i in range(len(p) - 1):
            t = max(1, int(round(widths[i])))
            a, b = (int(p[i, 0]), int(p[i, 1])), (int(p[i + 1, 0]), int(p[i + 1, 1]))
            cv2.line(canvas, a, b, 255, t, cv2.LINE_AA, shift=4)
            cv2.line(strength, a, b, float(values[i]), t + 2, cv2.LINE_8, shift=4)
        np.maximum(out, canvas.astype(np.float32) * np.float32(1 / 255) * strength, out=out)
    return _Stamp(y0, x0, out)


def _along(rng: Rng, n: int, knots: int, lo: float, hi: float) -> np.ndarray:
    """A smooth random profile of n values between lo and hi."""
    return np.interp(np.arange(n), np.linspace(0, n - 1, knots), rng.uniform(lo, hi, knots))


def _tortuous(rng: Rng, start: np.ndarray, heading: float, length: float, step: float,
              wiggle: float, pull: float) -> np.ndarray:
    """A random walk that kinks and meanders but keeps drifting back to its heading."""
    n = max(4, int(length / step))
    turns = rng.normal(0, wiggle, n)
    kinks = rng.random(n) < 0.04
    turns[kinks] += rng.choice([-1, 1], int(kinks.sum())) * rng.uniform(0.4, 0.9, int(kinks.sum()))
    heads = np.empty(n)
    h = heading
    for i in range(n):
        h += turns[i] - pull * (h - heading)
        heads[i] = h
    moves = step * np.stack([np.cos(heads), np.sin(heads)], axis=1)
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _crack(c: _Ctx) -> _Stamp | None:
    """Thin (1-5 output px), tortuous, branching, dark; often crossing the whole image."""
    rng, (h, w) = c.rng, c.shape
    length = loguniform(rng, 0.3, 1.6) * max(h, w)
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    heading = rng.uniform(0, 2 * math.pi)
    if rng.random() < 0.4:  # enters from outside the frame
        start = start - 0.3 * length * np.array([math.cos(heading), math.sin(heading)])
    step = 2.0 * c.scale
    main = _tortuous(rng, start, heading, length, step, rng.uniform(0.1, 0.45),
                     rng.uniform(0.03, 0.15))
    w0 = loguniform(rng, 0.8, 3.0)  # output pixels

    def path(pts: np.ndarray, width: float, fade: bool) -> tuple[np.ndarray, ...]:
        n = len(pts)
        wid = np.clip(width * _along(rng, n, 6, 0.6, 1.3), 0.8, 5.0)
        val = _along(rng, n, 8, 0.55, 1.0)
        if fade:
            val = val * np.linspace(1.0, 0.4, n)
            wid = np.maximum(0.8, wid * np.linspace(1.0, 0.6, n))
        # Lines under one render pixel are drawn one pixel wide and proportionally fainter.
        wr = wid * c.scale
        return pts, np.maximum(wr, 1.0), val * np.minimum(wr, 1.0)

    paths = [path(main, w0, False)]
    for _ in range(int(rng.choice([0, 1, 2, 3, 5], p=[0.3, 0.25, 0.2, 0.15, 0.1]))):
        src = paths[int(rng.integers(len(paths)))][0]
        i = int(rng.integers(len(src) // 6, max(len(src) // 6 + 1, 5 * len(src) // 6)))
        d = src[min(i + 1, len(src) - 1)] - src[max(i - 1, 0)]
        head = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.3)
        br = _tortuous(rng, src[i], head, length * rng.uniform(0.1, 0.45), step,
                       rng.uniform(0.15, 0.45), 0.08)
        paths.append(path(br, w0 * rng.uniform(0.5, 0.9), True))
    stamp = _paths(c.shape, paths)
    if stamp is None:
        return None
    out = cv2.GaussianBlur(stamp.delta, (0, 0), 0.5)
    return _Stamp(stamp.y0, stamp.x0, -c.contrast * out)


def _scratch(c: _Ctx) -> _Stamp | None:
    """Straight or gently curved line 1-16 output px wide, bright or dark, often with gaps."""
    rng, (h, w) = c.rng, c.shape
    length = loguniform(rng, 0.15, 1.5) * max(h, w)
    if rng.random() < 0.6:
        ang = math.radians(c.direction + rng.normal(0, 3))
    else:
        ang = rng.uniform(0, math.pi)
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    d = np.array([math.cos(ang), math.sin(ang)])
    nrm = np.array([-d[1], d[0]])
    t = np.linspace(-0.5, 0.5, max(8, int(length / (4 * c.scale))))[:, None]
    bend = rng.normal(0, 0.04) * length
    pts = centre + t * length * d + (1 - 4 * t * t) * bend * nrm
    n = len(pts)
    width = loguniform(rng, 1.0, 16.0) * c.scale
    tt = t[:, 0] + 0.5
    taper = np.clip(np.minimum(tt, 1 - tt) / rng.uniform(0.03, 0.25), 0.15, 1)
    val = taper * _along(rng, n, 7, 0.5, 1.0)
    if rng.random() < 0.25:  # interrupted
        val *= _along(rng, n, 12, -1.5, 1.5) > 0
    wid = np.maximum(1.0, width * (0.7 + 0.3 * taper) * _along(rng, n, 5, 0.8, 1.2))
    stamp = _paths(c.shape, [(pts, wid, val * min(1.0, width))])
    if stamp is None:
        return None
    out = cv2.GaussianBlur(stamp.delta, (0, 0), 0.4 + 0.12 * width)
    sign = 1.0 if rng.random() < 0.6 else -1.0
    return _Stamp(stamp.y0, stamp.x0, sign * c.contrast * out)


def _shape(rng: Rng, shape: tuple[int, int], cx: float, cy: float, a: float, b: float,
           ang: float, power: float = 2.0, rough: float = 0.0,
           soft: float = 0.7) -> _Stamp | None:
    """Superellipse (power 2: ellipse, larger: rounded rectangle) with a noisy, soft edge.

    The edge is a tanh of the approximate signed distance in pixels (no large blur needed);
    very soft shapes are worked out on a coarser grid and interpolated.
    """
    rad = max(a, b) * (1 + rough) + 3 * soft + 3
    box = _box(shape, np.array([[cx, cy]]), rad)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    k = max(1, int(soft / 1.5))
    xx, yy = np.meshgrid(np.arange(x0, x1 + k, k, dtype=np.float32) - np.float32(cx),
                         np.arange(y0, y1 + k, k, dtype=np.float32) - np.float32(cy))
    ca, sa = np.float32(math.cos(ang)), np.float32(math.sin(ang))
    u = np.abs(xx * ca + yy * sa) / np.float32(a)
    v = np.abs(-xx * sa + yy * ca) / np.float32(b)
    if power == 2.0:
        r = np.sqrt(u * u + v * v)
    else:
        r = (u ** power + v ** power) ** np.float32(1 / power)
    small = min(a, b)
    dist = (1 - r) * np.float32(small)
    if rough > 0:
        dist += np.float32(rough * small) * fractal_field(rng, dist.shape,
                                                          max(3.0, small * 0.8) / k, 2)
    inside = 0.5 + 0.5 * np.tanh(dist / np.float32(max(soft, 0.3)))
    if k > 1:  # grid point i sits at x0 + i * k: stretch by k
        inside = cv2.resize(inside, (inside.shape[1] * k, inside.shape[0] * k),
                            interpolation=cv2.INTER_LINEAR)
    o = (k - 1) // 2  # INTER_LINEAR maps pixel centres: output j ~ input (j - o) / k
    inside = inside[o:o + y1 - y0, o:o + x1 - x0]
    inside = np.where(inside < 0.01, np.float32(0), inside)
    return _Stamp(y0, x0, np.ascontiguousarray(inside, dtype=np.float32))


def _textured(rng: Rng, s: _Stamp, mottle: float, fine: float) -> _Stamp:
    """The stamp with a texture of its own inside, mottle + fine <= 0.2 (the inside varies by
    at most +-40%, so it never drops below the visibility threshold and punches holes)."""
    m = np.clip(fractal_field(rng, s.delta.shape, rng.uniform(6, 25)), -2, 2) * np.float32(mottle)
    g = np.clip(white(rng, s.delta.shape, 0.8), -2, 2) * np.float32(fine)
    return _Stamp(s.y0, s.x0, s.delta * (1 + m + g))


def _patch(c: _Ctx) -> _Stamp | None:
    """A solid area that fills most of its box: rounded rectangle, or NEU-like irregular blob."""
    rng, (h, w) = c.rng, c.shape
    a = rng.uniform(0.05, 0.3) * min(h, w)
    b = a * rng.uniform(0.35, 1.0)
    if rng.random() < 0.65:
        ang = math.radians(c.direction + rng.normal(0, 3)) if rng.random() < 0.8 \
            else rng.uniform(0, math.pi)
        s = _shape(rng, c.shape, rng.uniform(0, w), rng.uniform(0, h), a, b, ang,
                   rng.uniform(3.0, 8.0), rng.uniform(0.0, 0.1), rng.uniform(0.5, 2.0))
    else:
        s = _shape(rng, c.shape, rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h, a, b,
                   rng.uniform(0, math.pi), 2.0, rng.uniform(0.15, 0.45), rng.uniform(0.7, 3.0))
    if s is None:
        return None
    s = _textured(rng, s, rng.uniform(0, 0.12), rng.uniform(0, 0.08))
    sign = 1.0 if rng.random() < 0.25 else -1.0
    return _Stamp(s.y0, s.x0, sign * c.contrast * s.delta)


def _region(c: _Ctx) -> _Stamp | None:
    """A large, faint area with a wide soft edge (discolouration, oxide, damp)."""
    rng, (h, w) = c.rng, c.shape
    a = rng.uniform(0.2, 0.55) * min(h, w)
    b = a * rng.uniform(0.5, 1.0)
    s = _shape(rng, c.shape, rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h, a, b,
               rng.uniform(0, math.pi), 2.0, rng.uniform(0.1, 0.4), b * rng.uniform(0.08, 0.3))
    if s is None:
        return None
    s = _textured(rng, s, rng.uniform(0, 0.15), 0.0)
    sign = 1.0 if rng.random() < 0.4 else -1.0
    return _Stamp(s.y0, s.x0, sign * c.contrast * s.delta)


def _spots(rng: Rng, shape: tuple[int, int], centres: np.ndarray, axes: np.ndarray,
           angles: np.ndarray, values: np.ndarray, soft: float) -> _Stamp | None:
    """Small filled anti-aliased ellipses (one window), blurred by `soft`."""
    box = _box(shape, centres, float(axes.max()) + 3 * soft + 2)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    out = np.zeros((y1 - y0, x1 - x0), np.float32)
    for (cx, cy), (ax, ay), ang, val in zip(centres, axes, angles, values, strict=True):
        centre = (int(round((cx - x0) * 16)), int(round((cy - y0) * 16)))
        size = (max(1, int(round(ax * 16))), max(1, int(round(ay * 16))))
        cv2.ellipse(out, centre, size, float(ang), 0, 360, float(val), -1, cv2.LINE_AA, shift=4)
    if soft > 0.2:
        out = cv2.GaussianBlur(out, (0, 0), soft)
    return _Stamp(y0, x0, out)


def _blob(c: _Ctx) -> _Stamp | None:
    """A cluster of 3-15 small dark specks: one instance of several components."""
    rng, (h, w) = c.rng, c.shape
    n = int(rng.integers(3, 16))
    spread = rng.uniform(6, 35) * c.scale
    stretch = 1.0 if rng.random() < 0.5 else rng.uniform(1.5, 4.0)  # lined up along the rolling
    t = math.radians(c.direction)
    off = rng.normal(0, 1, (n, 2)) * (spread * stretch, spread)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    centres = np.array([rng.uniform(0, w), rng.uniform(0, h)]) + off @ rot.T
    r = np.array([loguniform(rng, 1.3, 4.5) for _ in range(n)]) * c.scale
    axes = np.stack([r, r * rng.uniform(0.5, 1.0, n)], 1)
    s = _spots(rng, c.shape, centres, axes, rng.uniform(0, 180, n), rng.uniform(0.7, 1.0, n),
               rng.uniform(0.3, 0.8))
    if s is None:
        return None
    sign = -1.0 if rng.random() < 0.9 else 1.0
    return _Stamp(s.y0, s.x0, sign * c.contrast * s.delta)


def _inclusion(c: _Ctx) -> _Stamp | None:
    """Dark slivers stretched along the rolling direction, alone or in a short chain."""
    rng, (h, w) = c.rng, c.shape
    t = math.radians(c.direction + rng.normal(0, 4))
    n = int(rng.choice([1, 1, 2, 3, 4]))
    a = np.array([loguniform(rng, 4, 25) for _ in range(n)]) * c.scale
    b = np.maximum(1.2 * c.scale, a * rng.uniform(0.12, 0.45, n))
    gaps = np.cumsum(np.concatenate([[0.0], a[:-1] + a[1:] + rng.uniform(2, 20, n - 1)]))
    side = rng.normal(0, 2 * c.scale, n)
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    d, nrm = np.array([math.cos(t), math.sin(t)]), np.array([-math.sin(t), math.cos(t)])
    centres = centre + gaps[:, None] * d + side[:, None] * nrm
    angles = np.full(n, math.degrees(t)) + rng.normal(0, 3, n)
    s = _spots(rng, c.shape, centres, np.stack([a, b], 1), angles, rng.uniform(0.7, 1.0, n),
               rng.uniform(0.5, 1.2))
    if s is None:
        return None
    return _Stamp(s.y0, s.x0, -c.contrast * s.delta)


def _pit(c: _Ctx) -> _Stamp | None:
    """A small round dark hole with a faint bright rim."""
    rng, (h, w) = c.rng, c.shape
    r = loguniform(rng, 2.0, 8.0) * c.scale
    squash = rng.uniform(0.7, 1.0)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    box = _box(c.shape, np.array([[cx, cy]]), r / squash + 6)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    xx, yy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) - np.float32(cx),
                         np.arange(y0, y1, dtype=np.float32) - np.float32(cy))
    rr = np.sqrt(xx * xx + (yy / np.float32(squash)) ** 2)
    soft = np.float32(max(0.5, r / 5))
    core = 0.5 + 0.5 * np.tanh((np.float32(r) - rr) / soft)
    rim = np.exp(-(((rr - np.float32(r + 1.5)) / np.float32(1.0)) ** 2))
    out = -1.3 * core + np.float32(rng.uniform(0.1, 0.4)) * rim * (1 - core)
    out[np.abs(out) < 0.01] = 0
    return _Stamp(y0, x0, np.float32(c.contrast) * out.astype(np.float32))


def _stain(c: _Ctx) -> _Stamp | None:
    """A medium irregular blot, darker or lighter, with a soft edge."""
    rng, (h, w) = c.rng, c.shape
    a = loguniform(rng, 6 * c.scale, 0.22 * min(h, w))
    b = a * rng.uniform(0.5, 1.0)
    s = _shape(rng, c.shape, rng.uniform(0, w), rng.uniform(0, h), a, b,
               rng.uniform(0, math.pi), 2.0, rng.uniform(0.15, 0.4),
               min(rng.uniform(0.1, 0.3) * b, 6) + 0.5)
    if s is None:
        return None
    sign = 1.0 if rng.random() < 0.35 else -1.0
    return _Stamp(s.y0, s.x0, sign * c.contrast * s.delta)


_DRAW: dict[str, Callable[[_Ctx], _Stamp | None]] = {
    "crack": _crack, "scratch": _scratch, "patch": _patch, "region": _region, "blob": _blob,
    "inclusion": _inclusion, "pit": _pit, "stain": _stain,
}


# --------------------------------------------------------------------------- visibility


def _visible(signed: np.ndarray, vis_abs: float) -> np.ndarray:
    """Pixels whose change is visible: >= vis_abs and >= VIS_FRACTION of the change's peak."""
    vis = np.abs(signed)
    nz = vis[vis > 1e-3]
    if nz.size == 0:
        return np.zeros(signed.shape, bool)
    return vis >= max(vis_abs, VIS_FRACTION * float(np.percentile(nz, 99)))


def _edge_contrast(mask: np.ndarray, signed: np.ndarray, after: np.ndarray) -> float:
    """How much a defect stands out at its edge (band just inside vs ring just outside).

    The smaller of the change's own step and the final image's step in the same direction: a
    dark sliver on a bright streak changes the surface but may not stand out from it.
    """
    m = mask.view(np.uint8)
    band = mask & (cv2.erode(m, _DISK[6]) == 0)
    ring = (cv2.dilate(m, _DISK[8]) > 0) & (cv2.dilate(m, _DISK[2]) == 0)
    if not band.any() or not ring.any():
        return 0.0
    step = float(signed[band].mean()) - float(signed[ring].mean())
    seen = float(after[band].mean()) - float(after[ring].mean())
    return min(abs(step), math.copysign(1.0, step) * seen)


_DISK = {r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)) for r in (2, 6, 8)}


def _local_check(cam: _Camera, lit: np.ndarray, light: np.ndarray,
                 s: _Stamp) -> tuple[np.ndarray, tuple[slice, slice], float]:
    """Visible mask (in a padded window, render pixels) and edge contrast of one stamp."""
    h, w = lit.shape
    dh, dw = s.delta.shape
    pad = int(math.ceil(3 * cam.blur)) + 10
    y0, x0 = max(0, s.y0 - pad), max(0, s.x0 - pad)
    y1, x1 = min(h, s.y0 + dh + pad), min(w, s.x0 + dw + pad)
    win = np.s_[y0:y1, x0:x1]
    d = np.zeros((y1 - y0, x1 - x0), np.float32)
    d[s.y0 - y0:s.y0 - y0 + dh, s.x0 - x0:s.x0 - x0 + dw] = s.delta * light[s.win]
    base = cam.blurred(lit[win])
    after = cam.tone(base + cam.blurred(d))
    signed = after - cam.tone(base)
    mask = _visible(signed, cam.vis_abs)
    return mask, win, _edge_contrast(mask, signed, after) if mask.any() else 0.0


def _full_change(cam: _Camera, light: np.ndarray, s: _Stamp) -> np.ndarray:
    """A stamp's change of the lit surface through blur and resampling: output pixels."""
    h, w = light.shape
    full = np.zeros((h, w), np.float32)
    full[s.win] = s.delta * light[s.win]
    if cam.blur > 0:
        pad = int(math.ceil(4 * cam.blur)) + 1
        dh, dw = s.delta.shape
        y0, x0 = max(0, s.y0 - pad), max(0, s.x0 - pad)
        y1, x1 = min(h, s.y0 + dh + pad), min(w, s.x0 + dw + pad)
        full[y0:y1, x0:x1] = cam.blurred(full[y0:y1, x0:x1])
    return cam.resampled(full)


# --------------------------------------------------------------------------- composition


def _random_size(rng: Rng) -> tuple[int, int]:
    r = rng.random()
    if r < 0.12:
        return (200, 200)       # NEU-Seg
    if r < 0.2:
        return (320, 480)       # CrackForest
    lo, hi = SIZE_RANGE
    return (int(round(loguniform(rng, lo, hi))), int(round(loguniform(rng, lo, hi))))


def _check_args(size: tuple[int, int] | None, kinds: Sequence[str] | None,
                n_defects: int | None, texture: str | None) -> None:
    if size is not None and (len(size) != 2 or min(size) < 32):
        raise ValueError(f"size must be (height, width) of at least 32 px each, got {size!r}")
    if kinds is not None:
        bad = [k for k in kinds if k not in HARD_KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown or no defect kinds {bad or kinds!r}; "
                             f"choose from {HARD_KINDS}")
    if n_defects is not None and n_defects < 0:
        raise ValueError(f"n_defects must be >= 0, got {n_defects}")
    if texture is not None and texture not in HARD_TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose one of {HARD_TEXTURES}")


def make_hard_part(seed: int, size: tuple[int, int] | None = None,
                   kinds: Sequence[str] | None = None, n_defects: int | None = None,
                   texture: str | None = None, colour: bool | None = None) -> SyntheticPart:
    """Render one hard part; `material` of the result names its texture (one of HARD_TEXTURES).

    size: (height, width); random in SIZE_RANGE (sometimes NEU's or CrackForest's) when None.
    n_defects: how many to try (default: 0 in 8% of parts, else 1-5); fewer come back when a
    defect lands too faint, too small or too close to another one. colour: grey when False.
    """
    _check_args(size, kinds, n_defects, texture)
    rng = np.random.default_rng([int(seed), _STREAM])
    out = (int(size[0]), int(size[1])) if size is not None else _random_size(rng)
    texture = texture or str(rng.choice(HARD_TEXTURES))
    colour = bool(rng.random() < 0.5) if colour is None else colour
    pool = tuple(kinds) if kinds else HARD_KINDS
    if n_defects is None:
        n_defects = 0 if rng.random() < 0.08 else int(rng.choice([1, 2, 3, 4, 5],
                                                                 p=[0.3, 0.28, 0.2, 0.14, 0.08]))

    # Render, possibly at another scale (the resampling to `out` is part of the capture).
    scale = 1.0 if rng.random() < 0.55 else loguniform(rng, 0.6, 1.5)
    shape = (max(32, round(out[0] * scale)), max(32, round(out[1] * scale)))
    scale = shape[0] / out[0]
    direction = float(rng.choice([0.0, 90.0]) + rng.normal(0, 2)) if rng.random() < 0.6 \
        else float(rng.uniform(0, 180))
    tex = _texture(rng, texture, shape, direction)
    refl = np.maximum(np.float32(0.5) + tex, np.float32(0.02))
    fine = float((tex - cv2.GaussianBlur(tex, (0, 0), 4)).std())
    coarse = float((tex - cv2.blur(tex, (41, 41))).std())
    light = _light(rng, shape, direction, texture in ("rolled", "brushed", "smooth"))
    lit = refl * light
    cam = _camera(rng, lit, shape, out)
    seen = cam.tone(cam.blurred(lit))  # what the surface clutter looks like after the camera
    seen_fine = math.hypot(float((seen - cv2.GaussianBlur(seen, (0, 0), 4)).std()), cam.noise)
    seen_coarse = math.hypot(float((seen - cv2.blur(seen, (41, 41))).std()), cam.noise)

    weights = np.array([_KIND_WEIGHT[k] * (3.0 if k == "crack" and texture in
                                            ("concrete", "asphalt") else 1.0) for k in pool])
    wanted = sorted((str(k) for k in rng.choice(pool, n_defects, p=weights / weights.sum())),
                    key=_ORDER.__getitem__)
    claimed = np.zeros(shape, bool)
    placed: list[tuple[str, _Stamp]] = []
    for kind in wanted:
        large = kind in _LARGE
        ref, seen_ref = (coarse, seen_coarse) if large else (fine, seen_fine)
        for _ in range(6 if large else 12):
            lo, hi = _CONTRAST[kind]
            contrast = max(_MIN_CONTRAST, math.hypot(ref, cam.noise / cam.gain)
                           * loguniform(rng, lo, hi))
            s = _DRAW[kind](_Ctx(rng, shape, direction, contrast, scale))
            if s is None:
                continue
            foot = cv2.dilate((np.abs(s.delta) > 1e-3).view(np.uint8), _MARGIN).astype(bool)
            if not foot.any() or (claimed[s.win] & foot).any():
                continue
            mask, win, strength = _local_check(cam, lit, light, s)
            if (np.count_nonzero(mask) < MIN_AREA or strength < _MIN_SNR * seen_ref
                    or (claimed[win] & mask).any()):
                continue
            claimed[s.win] |= foot
            claimed[win] |= mask
            placed.append((kind, s))
            break

    # Ground truth in output pixels: each change alone through the whole camera.
    base = cam.resampled(cam.blurred(lit))
    base_tone = cam.tone(base)
    total = base.copy()
    taken = np.zeros(out, bool)
    found: list[DefectInstance] = []
    for kind, s in placed:
        change = _full_change(cam, light, s)
        mask = _visible(cam.tone(base + change) - base_tone, cam.vis_abs)
        if np.count_nonzero(mask) < MIN_AREA or (mask & taken).any():
            continue  # lost in resampling, or grew into a neighbour: not drawn at all
        taken |= mask
        total += change
        found.append(DefectInstance(kind, mask))
    image = _capture(rng, cam.tone(total), cam.noise, colour)
    return SyntheticPart(image, tuple(found), texture, int(seed))


def training_part(seed: int, hard: bool = True,
                  size: tuple[int, int] | None = None) -> SyntheticPart:
    """One training example in memory: hard (make_hard_part) or classic (make_part).

    Deterministic per seed. size None: a random size in SIZE_RANGE drawn from the seed.
    """
    if hard:
        return make_hard_part(seed, size)
    if size is None:
        size = _random_size(np.random.default_rng([int(seed), _STREAM + 1]))
    return make_part(seed, size)
