"""Per-pixel features for learning from examples (fewshot) and from good parts (anomaly).

This is the feature source of the default engines: the classic and learned engines have no
image embedding, so teach-by-example and golden samples describe each pixel with a small
multi-scale filter bank on log luminance instead (on a log scale lighting multiplies nothing:
a defect in a shadow keeps its contrast). At each scale sigma (pixels of the working image):
Gaussian-smoothed intensity less a wide background (2 x the largest sigma: lighting gradients
and vignetting drop out), gradient magnitude, the two Hessian eigenvalues (the ridge / line
response of cracks and scratches; their sum is the Laplacian, a difference of Gaussians) and
the local standard deviation (texture energy); plus two colour opponents (log red - green,
log yellow - blue). Every channel is normalised against the image's own background,
(x - median) / (1.4826 MAD), then compressed (sign * log1p |z|), so an example taught on one
exposure transfers to another.

Geometry: the image is shrunk so its long side is at most `max_side` (never enlarged), the
filters run there, and the result is averaged down to a grid whose long side is at most
`grid_side`. A FeatureMap's grid always covers the whole image, so any other per-cell feature
source can stand in: `embedding_features` wraps SAM's image embedding (64x64x256 over the
padded square) the same way, and the models record which source they were taught on.

numpy + OpenCV only (the line controller runs this without torch). Also here: the numpy
model folder both models are stored in (safetensors.numpy + manifest.json, the schema of
sam_engine.learned.weights.ModelManifest, sha256 checked at load).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from sam_engine.errors import CheckpointError
from sam_engine.learned.weights import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    ModelManifest,
    verified_weights,
    write_atomic,
)

FEATURES_VERSION = "filters-v1"  # recorded in every model; a change here needs teaching again
MAD_FLOOR = 0.01  # spread floor, log-luminance units (1 %): a flat image stays flat, not noise
Z_CLIP = 30.0  # uncompressed features: robust deviations kept
STATS_CELLS = 8192  # cells sampled for the median / MAD of each channel
LOG_EPS = 1 / 64  # log(luminance + LOG_EPS): relative contrast, bounded in the blacks


@dataclass(frozen=True)
class FeatureSettings:
    """Where and at which scales the filter bank runs. scales: Gaussian sigmas, working-image
    pixels; max_side / grid_side: long side of the working image / of the feature grid;
    compress: log-compress the normalised features (else clip them; robust_normalise)."""

    scales: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    max_side: int = 512
    grid_side: int = 256
    colour: bool = True
    compress: bool = True

    def to_dict(self) -> dict:
        return {**asdict(self), "scales": list(self.scales), "version": FEATURES_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSettings:
        if d.get("version", FEATURES_VERSION) != FEATURES_VERSION:
            raise CheckpointError(f"the model was taught on features {d.get('version')!r}; this "
                                  f"version computes {FEATURES_VERSION}: teach it again")
        return cls(tuple(float(s) for s in d["scales"]), int(d["max_side"]),
                   int(d["grid_side"]), bool(d["colour"]), bool(d.get("compress", True)))


@dataclass(frozen=True)
class FeatureMap:
    """Feature vectors on a grid that covers the whole image.

    values: float32 (h, w, C); image_size: (H, W) of the image described; source: what made
    them (FEATURES_VERSION, or e.g. "sam-vit_b"); models refuse maps from another source.
    """

    values: np.ndarray
    image_size: tuple[int, int]
    names: tuple[str, ...]
    source: str = FEATURES_VERSION

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.values.shape[0]), int(self.values.shape[1])

    @property
    def channels(self) -> int:
        return int(self.values.shape[2])

    def to_image(self, grid_map: np.ndarray) -> np.ndarray:
        """A (h, w) per-cell map brought to image size (bilinear, cell centres aligned)."""
        h, w = self.image_size
        m = np.asarray(grid_map, np.float32)
        return m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)

    def coverage(self, mask: np.ndarray) -> np.ndarray:
        """The share of each grid cell a full-size bool mask covers, float32 (h, w)."""
        h, w = self.grid
        m = np.asarray(mask, np.float32)
        if m.shape != self.image_size:
            raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]} but the image is "
                             f"{self.image_size[1]}x{self.image_size[0]}")
        return m if m.shape == (h, w) else cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)


def feature_names(settings: FeatureSettings) -> tuple[str, ...]:
    names = [f"{n}@{s:g}" for s in settings.scales
             for n in ("intensity", "gradient", "ridge_max", "ridge_min", "local_std")]
    return tuple(names + (["red_green", "yellow_blue"] if settings.colour else []))


def robust_normalise(values: np.ndarray, floor: float = MAD_FLOOR,
                     compress: bool = True) -> np.ndarray:
    """Each channel of (h, w, C) against the image's own background: z = (x - median) /
    spread, spread = max(1.4826 MAD, floor); then compressed, sign * log1p |z| (large
    responses stay ordered but one bright pixel cannot dominate a linear model), or only
    clipped to +-Z_CLIP (distances keep a strong anomaly far from everything). The median and
    MAD come from at most STATS_CELLS evenly spread cells."""
    flat = values.reshape(-1, values.shape[-1])
    step = max(1, len(flat) // STATS_CELLS)
    sample = np.ascontiguousarray(flat[::step].T)  # (C, n): each channel contiguous
    med = np.median(sample, axis=1)
    mad = np.median(np.abs(sample - med[:, None]), axis=1) * 1.4826
    z = (values - med.astype(np.float32)) / np.maximum(mad, floor).astype(np.float32)
    if not compress:
        return np.clip(z, -Z_CLIP, Z_CLIP).astype(np.float32, copy=False)
    return np.copysign(np.log1p(np.abs(z)), z).astype(np.float32, copy=False)


def grid_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """(h, w) of a grid over size whose long side is at most `side` (aspect kept)."""
    h, w = size
    s = min(1.0, side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def _filters(lum: np.ndarray, scales: Sequence[float]) -> list[np.ndarray]:
    """The filter bank on float32 log luminance, scale-normalised (so in contrast units).

    Intensity is taken against a wide background (sigma 2 * the largest scale), which removes
    lighting gradients and vignetting; on log luminance a shadow scales nothing."""
    out = []
    background = cv2.GaussianBlur(lum, (0, 0), 2 * max(scales))
    centred = lum - np.float32(lum.mean())  # variance without cancellation on flat images
    sq = centred * centred
    for s in scales:
        g = cv2.GaussianBlur(lum, (0, 0), s)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        gxx = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3) / 4.0
        gyy = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3) / 4.0
        gxy = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3) / 4.0
        half_tr = (gxx + gyy) / 2
        root = np.sqrt(((gxx - gyy) / 2) ** 2 + gxy * gxy)
        s2 = np.float32(s * s)
        mean2 = cv2.GaussianBlur(centred, (0, 0), 2 * s)
        var = cv2.GaussianBlur(sq, (0, 0), 2 * s) - mean2 * mean2
        out += [g - background, np.hypot(gx, gy) * np.float32(s), (half_tr + root) * s2,
                (half_tr - root) * s2, np.sqrt(np.maximum(var, 0))]
    return out


def pixel_features(rgb: np.ndarray, settings: FeatureSettings = FeatureSettings()) -> FeatureMap:
    """The filter-bank FeatureMap of an RGB (or grey) uint8 image, normalised per image."""
    img = np.asarray(rgb)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    size = (int(img.shape[0]), int(img.shape[1]))
    wh, ww = grid_size(size, settings.max_side)
    x = img.astype(np.float32) / np.float32(255.0)
    if (wh, ww) != size:
        x = cv2.resize(x, (ww, wh), interpolation=cv2.INTER_AREA)
    lum = np.log(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) + np.float32(LOG_EPS))
    chans = _filters(lum, settings.scales)
    if settings.colour:
        logs = np.log(x + np.float32(LOG_EPS))
        r, g, b = (cv2.GaussianBlur(logs[..., i], (0, 0), 2.0) for i in range(3))
        chans += [r - g, (r + g) / 2 - b]
    stack = np.stack(chans, axis=-1)
    gh, gw = grid_size(size, min(settings.grid_side, settings.max_side))
    if (gh, gw) != (wh, ww):  # OpenCV's area resampling takes at most 4 channels at once
        stack = np.concatenate([
            cv2.resize(stack[..., i:i + 4], (gw, gh), interpolation=cv2.INTER_AREA)
            .reshape(gh, gw, -1) for i in range(0, stack.shape[2], 4)], axis=-1)
    return FeatureMap(robust_normalise(stack, compress=settings.compress), size,
                      feature_names(settings), FEATURES_VERSION)


def embedding_features(embedding: np.ndarray, image_size: tuple[int, int],
                       source: str) -> FeatureMap:
    """A FeatureMap from SAM's image embedding ((C, 64, 64) or (64, 64, C)) of an image of
    image_size: SAM resizes the long side to its input side and pads bottom/right to a square,
    so only the top-left cells cover the image; those are kept and normalised like the
    filters. source names the encoder (e.g. "sam-vit_b"): a model taught on it needs it."""
    e = np.asarray(embedding, np.float32)
    if e.ndim == 4:
        e = e[0]
    if e.ndim != 3:
        raise ValueError(f"expected an embedding (C, h, w) or (h, w, C), got {e.shape}")
    if e.shape[0] > e.shape[2]:
        e = e.transpose(1, 2, 0)
    n = e.shape[0]
    h, w = image_size
    long = max(h, w)
    vh = max(1, math.ceil(n * h / long - 1e-6))
    vw = max(1, math.ceil(n * w / long - 1e-6))
    vals = e[:vh, :vw]
    return FeatureMap(robust_normalise(vals, floor=1e-3), (int(h), int(w)),
                      tuple(f"embedding{i}" for i in range(vals.shape[2])), source)


def with_context(fmap: FeatureMap, window: int = 3) -> np.ndarray:
    """(h, w, 2C): each cell's features and their mean over a window x window neighbourhood
    (PatchCore's local aggregation: a pixel is described with its surroundings, not its
    position)."""
    if window <= 1:
        return fmap.values
    v = fmap.values
    pooled = cv2.blur(v, (window, window), borderType=cv2.BORDER_REFLECT)
    if pooled.ndim == 2:
        pooled = pooled[..., None]
    return np.concatenate([v, pooled], axis=-1)


# ------------------------------------------------------------------ numpy model folders
def save_arrays(folder: str | Path, arrays: dict[str, np.ndarray],
                manifest: ModelManifest) -> ModelManifest:
    """Write arrays (safetensors.numpy) and the manifest with their computed sha256, each
    atomically; the manifest goes last, so a folder with a manifest is complete."""
    from safetensors.numpy import save

    folder = Path(folder)
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    write_atomic(folder / WEIGHTS_NAME, data)
    manifest.weights_sha256 = hashlib.sha256(data).hexdigest()
    write_atomic(folder / MANIFEST_NAME,
                 (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return manifest


def load_arrays(folder: str | Path, kind: str) -> tuple[dict[str, np.ndarray], ModelManifest]:
    """(arrays, manifest) of a model folder whose net kind is `kind`, after checking the
    arrays file's sha256 against the manifest; CheckpointError naming the file otherwise."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    folder = Path(folder)
    data, manifest = verified_weights(folder, "teach the model again")
    got_kind = manifest.net.get("kind") if isinstance(manifest.net, dict) else None
    if got_kind != kind:
        raise CheckpointError(f"{folder / MANIFEST_NAME} describes a {got_kind or 'unknown'} "
                              f"model, not {kind!r}")
    path = folder / WEIGHTS_NAME
    try:
        return load(data), manifest
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
