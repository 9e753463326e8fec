"""Random fields the synthetic generators build surfaces and defect shapes from.

Every function draws only from the `numpy.random.Generator` it is given, so callers stay
deterministic per seed. Fields are float32 and, where noted, zero-mean with unit std.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

Rng = np.random.Generator


def smooth_noise(rng: Rng, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field with features about `scale` pixels across."""
    h, w = shape
    scale = max(scale, 1.0)
    sh, sw = max(2, int(h / scale) + 3), max(2, int(w / scale) + 3)
    small = rng.standard_normal((sh, sw)).astype(np.float32)
    # Smoothing on the coarse grid, then cubic upsampling: same look as a large Gaussian on the
    # full frame at a small fraction of the cost.
    small = cv2.GaussianBlur(small, (0, 0), 0.6)
    field = cv2.resize(small, (int(sw * scale), int(sh * scale)), interpolation=cv2.INTER_CUBIC)
    return standardise(field[:h, :w])


def standardise(field: np.ndarray) -> np.ndarray:
    """The field shifted to zero mean and scaled to unit std (a flat field stays flat)."""
    field = field - field.mean()
    sd = float(field.std())
    return (field / sd if sd > 1e-8 else field).astype(np.float32)


def fractal(rng: Rng, shape: tuple[int, int], scale: float, octaves: int = 3) -> np.ndarray:
    """Unit-std sum of `octaves` smooth fields, each half the scale and amplitude of the last."""
    out = np.zeros(shape, np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += amp * smooth_noise(rng, shape, scale)
        scale /= 2.0
        amp *= 0.5
    return standardise(out)


def _smear(noise: np.ndarray, k: int, width: float, angle_deg: float,
           shape: tuple[int, int]) -> np.ndarray:
    """Noise drawn on a d x d canvas (d: the image diagonal + 4) smeared k px along x (two box
    blurs approximate a long Gaussian at a cost independent of its length), widened across by
    `width`, rotated by angle_deg about the canvas centre and cut to `shape`, unit std."""
    h, w = shape
    d = noise.shape[0]
    noise = cv2.blur(cv2.blur(noise, (k, 1)), (k, 1))
    if width > 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=0.5, sigmaY=width)
    m = cv2.getRotationMatrix2D((d / 2, d / 2), angle_deg, 1.0)
    m[:, 2] += (w / 2 - d / 2, h / 2 - d / 2)
    out = cv2.warpAffine(noise, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return standardise(out)


def streaks(rng: Rng, shape: tuple[int, int], angle_deg: float, length: int,
            width: float) -> np.ndarray:
    """Unit-std noise smeared along angle_deg: rolling/brushing marks."""
    h, w = shape
    d = int(math.hypot(h, w)) + 4
    noise = rng.standard_normal((d, d)).astype(np.float32)
    return _smear(noise, max(3, int(length)), width, angle_deg, shape)


def grain(rng: Rng, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-std white noise blurred by `sigma` pixels: film or sensor-like grain."""
    g = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0.2:
        g = cv2.GaussianBlur(g, (0, 0), sigma)
    return standardise(g)


def loguniform(rng: Rng, lo: float, hi: float) -> float:
    """A draw spread evenly in log between lo and hi."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinate arrays (float32) of `shape`."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy




# Faster variants for the hard generator: white noise cut from a fixed bank, fields resized
# straight to their shape. The functions above stay as they are: make_part's outputs (and the
# digests pinned in the tests) depend on them.

_BANK_SIDE = 1024
_bank: list[np.ndarray] = []


def normal(rng: Rng, shape: tuple[int, int]) -> np.ndarray:
    """Standard normal float32 noise of a 2-D `shape`.

    A random crop, flip or transpose of one fixed 1024x1024 bank of noise (made once from a
    fixed seed) when it fits: about a hundred times faster than drawing, and just as white.
    Larger shapes get fresh draws.
    """
    h, w = shape
    if max(h, w) > _BANK_SIDE:
        return rng.standard_normal(shape, dtype=np.float32)
    if not _bank:  # a race here only makes the same bank twice
        _bank.append(np.random.default_rng(0x5EED).standard_normal(
            (_BANK_SIDE, _BANK_SIDE), dtype=np.float32))
    k = int(rng.integers(8))
    bank = _bank[0].T if k & 4 else _bank[0]
    y, x = int(rng.integers(_BANK_SIDE - h + 1)), int(rng.integers(_BANK_SIDE - w + 1))
    crop = bank[y:y + h, x:x + w]
    crop = crop[::-1] if k & 1 else crop
    return np.ascontiguousarray(crop[:, ::-1] if k & 2 else crop)


def field(rng: Rng, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field with features about `scale` pixels across."""
    h, w = shape
    scale = max(scale, 1.0)
    sh, sw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
    small = cv2.GaussianBlur(rng.standard_normal((sh, sw), dtype=np.float32), (0, 0), 0.6)
    return standardise(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def fractal_field(rng: Rng, shape: tuple[int, int], scale: float,
                  octaves: int = 3) -> np.ndarray:
    """Unit-std sum of `octaves` fields, each half the scale and amplitude of the last."""
    out = np.zeros(shape, np.float32)
    amp = 1.0
    for _ in range(octaves):
        out += np.float32(amp) * field(rng, shape, scale)
        scale /= 2.0
        amp *= 0.5
    return standardise(out)


def white(rng: Rng, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Unit-std white noise blurred by `sigma` pixels (grain)."""
    g = normal(rng, shape)
    if sigma > 0.2:
        g = cv2.GaussianBlur(g, (0, 0), sigma)
    return standardise(g)


def streak_field(rng: Rng, shape: tuple[int, int], angle_deg: float, length: int,
                 width: float) -> np.ndarray:
    """Unit-std noise smeared `length` px along angle_deg (rolling/brushing marks).

    Drawn at a quarter of the resolution along the streaks, which the smear hides anyway.
    """
    h, w = shape
    d = int(math.hypot(h, w)) + 4
    k = max(3, int(length))
    step = 4 if k >= 16 else 1
    noise = normal(rng, (d, d // step + 2))
    if step > 1:
        noise = cv2.resize(noise, (noise.shape[1] * step, d), interpolation=cv2.INTER_LINEAR)
    return _smear(noise, k, width, angle_deg, shape)
