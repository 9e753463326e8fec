"""Golden samples: find what is unlike a few good parts, whatever defect type it is.

PatchCore-style, on the pixel features of features.py: every grid cell of the good parts is
described by its features and their mean over a small neighbourhood (local context), with no
position, so a part shifted or turned a little still matches. A random subsample of those
vectors is the memory bank; a cell's anomaly score is the distance to its nearest neighbour in
the bank (chunked numpy matmul).

The threshold is calibrated leave-one-out on the good parts themselves: each good part is
scored against the bank without its own cells and its high percentile taken (its peak); the
threshold is the second-highest peak (the highest with fewer than 4 good parts) times a
margin, so good parts give no finds. One odd good part, whose cells are in the final bank
anyway, does not set the threshold for all (on synthetic parts the highest peak halved the
defects found at the same false-alarm rate).
Scores are kept in units of the threshold (1.0 = the threshold). A find is a group of cells
above it (preprocess.group_components, min area), class UNKNOWN_CLASS, score 1 - 1/r for a mean
ratio r over its pixels (0 at the threshold, towards 1 far above it).

numpy + OpenCV + safetensors.numpy only: runs on the torch-free line controller.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sam_engine.errors import CheckpointError, SamEngineError
from sam_engine.finder.features import (
    FeatureMap,
    FeatureSettings,
    load_arrays,
    pixel_features,
    save_arrays,
    with_context,
)
from sam_engine.finder.preprocess import PostSettings, group_components, radius_px
from sam_engine.finder.types import SOURCE_ANOMALY, UNKNOWN_CLASS, Found
from sam_engine.learned.weights import ModelManifest

GOLDEN_KIND = "golden"  # manifest net["kind"]
CHUNK = 1024  # cells scored per matmul: CHUNK x bank floats at a time


class GoldenError(SamEngineError, ValueError):
    """Good parts that cannot be learnt from; the message says which and why."""


@dataclass(frozen=True)
class GoldenSettings:
    """features: the filter bank (a coarser grid than teaching: distances cost cells x bank);
    context: neighbourhood of the local mean, cells; bank_size: vectors kept; smooth: Gaussian
    sigma (cells) on the score map (a lone noisy cell is not a defect); percentile / margin:
    the leave-one-out calibration; post.threshold is in units of the calibrated
    threshold (1.0), post.min_area in pixels. Chosen on synthetic parts (synthetic.hard)."""

    features: FeatureSettings = field(default_factory=lambda: FeatureSettings(grid_side=128))
    context: int = 3
    bank_size: int = 12000
    smooth: float = 1.0
    percentile: float = 99.9
    margin: float = 1.25
    post: PostSettings = PostSettings(threshold=1.0, min_area=30, min_score=0.0,
                                      group_radius=0.02)
    seed: int = 0

    def to_dict(self) -> dict:
        return {"features": self.features.to_dict(), "context": self.context,
                "bank_size": self.bank_size, "smooth": self.smooth, "percentile": self.percentile,
                "margin": self.margin, "post": self.post.to_dict(), "seed": self.seed}


def nearest_distance(x: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray | None = None,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distance of each row of x (n, D) to its nearest row of bank (m, D), in chunks.

    exclude: bool (m,) bank rows not to match (leave-one-out)."""
    bank_sq = (bank * bank).sum(axis=1) if bank_sq is None else bank_sq
    if exclude is not None:
        bank_sq = np.where(exclude, np.float32(np.inf), bank_sq)
    out = np.empty(len(x), np.float32)
    for i in range(0, len(x), CHUNK):
        c = x[i:i + CHUNK]
        d2 = bank_sq[None, :] - 2.0 * (c @ bank.T)
        out[i:i + CHUNK] = d2.min(axis=1) + (c * c).sum(axis=1)
    return np.sqrt(np.maximum(out, 0.0))


def smoothed(grid: np.ndarray, sigma: float) -> np.ndarray:
    """A score grid Gaussian-smoothed (sigma in cells; 0: as it is)."""
    if sigma <= 0:
        return grid
    return cv2.GaussianBlur(np.ascontiguousarray(grid, np.float32), (0, 0), sigma,
                            borderType=cv2.BORDER_REFLECT)


@dataclass
class GoldenModel:
    """A memory bank of good-part cells and the calibrated distance threshold."""

    bank: np.ndarray
    threshold: float
    n_good: int
    features: FeatureSettings = field(default_factory=lambda: FeatureSettings(grid_side=128))
    context: int = 3
    smooth: float = 1.0
    post: PostSettings = GoldenSettings.post
    calibration: dict = field(default_factory=dict)
    manifest: ModelManifest | None = None

    def __post_init__(self) -> None:
        self.bank = np.ascontiguousarray(self.bank, np.float32)
        self._bank_sq = (self.bank * self.bank).sum(axis=1)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id if self.manifest else "golden (unsaved)"

    def grid_scores(self, rgb: np.ndarray) -> tuple[np.ndarray, FeatureMap]:
        """(distance / threshold on the feature grid (h, w), the feature map)."""
        fmap = pixel_features(rgb, self.features)
        x = with_context(fmap, self.context).reshape(-1, self.bank.shape[1])
        d = nearest_distance(x, self.bank, self._bank_sq).reshape(fmap.grid)
        return smoothed(d, self.smooth) / np.float32(self.threshold), fmap

    def score_map(self, rgb: np.ndarray) -> np.ndarray:
        """float32 (H, W): each pixel's anomaly score in units of the threshold (>1: unlike
        every good part)."""
        grid, fmap = self.grid_scores(rgb)
        return fmap.to_image(grid)

    def find(self, rgb: np.ndarray, post: PostSettings | None = None) -> list[Found]:
        """The regions unlike the good parts, most anomalous first (class UNKNOWN_CLASS)."""
        return self.regions(*self.grid_scores(rgb), post)

    def regions(self, grid: np.ndarray, fmap: FeatureMap,
                post: PostSettings | None = None) -> list[Found]:
        """Finds from a score grid (grid_scores): groups above post.threshold (in units of
        the calibrated threshold), min area, most anomalous first."""
        post = post or self.post
        if not (grid > post.threshold).any():
            return []
        full = fmap.to_image(grid)
        out = []
        for g in group_components(full > post.threshold,
                                  radius_px(fmap.image_size, post.group_radius)):
            area = int(np.count_nonzero(g))
            score = 1.0 - 1.0 / float(full[g].mean())
            if area < post.min_area or score < post.min_score:
                continue
            ys, xs = np.nonzero(g)
            out.append(Found(UNKNOWN_CLASS, score, g, (int(xs.min()), int(ys.min()),
                                                       int(xs.max()) + 1, int(ys.max()) + 1),
                             SOURCE_ANOMALY))
        out.sort(key=lambda f: -f.score)
        return out

    def save(self, folder: str | Path, name: str, version: str,
             data: dict | None = None) -> ModelManifest:
        """Write the model (model.safetensors + manifest.json, sha256 recorded) into folder."""
        net = {"kind": GOLDEN_KIND, "features": self.features.to_dict(),
               "context": self.context, "smooth": self.smooth, "threshold": self.threshold,
               "n_good": self.n_good,
               "post": self.post.to_dict(), "calibration": self.calibration}
        manifest = ModelManifest(name=name, version=str(version), net=net, data=data or {},
                                 created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.manifest = save_arrays(folder, {"bank": self.bank}, manifest)
        return self.manifest


def load_golden(folder: str | Path) -> GoldenModel:
    """The GoldenModel in a model folder (sha256 checked; CheckpointError naming the file)."""
    arrays, manifest = load_arrays(folder, GOLDEN_KIND)
    net = manifest.net
    try:
        post = PostSettings(**{k: v for k, v in net["post"].items()
                               if k in PostSettings.__dataclass_fields__})
        model = GoldenModel(arrays["bank"], float(net["threshold"]), int(net["n_good"]),
                            FeatureSettings.from_dict(net["features"]), int(net["context"]),
                            float(net["smooth"]), post, dict(net.get("calibration") or {}),
                            manifest)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(folder)}: not a golden model this version can read "
                              f"({exc!r})") from None
    return model


def fit_golden(good_rgbs: Sequence[np.ndarray],
               settings: GoldenSettings = GoldenSettings()) -> GoldenModel:
    """A GoldenModel from good parts of one part type (3 to 20 is typical; at least 2)."""
    if len(good_rgbs) < 2:
        raise GoldenError(f"golden samples need at least 2 good parts (3 or more is better); "
                          f"got {len(good_rgbs)}")
    vecs, owner, grids = [], [], []
    for i, rgb in enumerate(good_rgbs):
        try:
            fmap = pixel_features(rgb, settings.features)
        except ValueError as exc:
            raise GoldenError(f"good part {i}: {exc}") from None
        v = with_context(fmap, settings.context)
        grids.append(fmap.grid)
        vecs.append(v.reshape(-1, v.shape[-1]))
        owner.append(np.full(len(vecs[-1]), i))
    x = np.concatenate(vecs)
    who = np.concatenate(owner)
    rng = np.random.default_rng(settings.seed)
    if len(x) > settings.bank_size:
        keep = np.sort(rng.choice(len(x), settings.bank_size, replace=False))
        bank, bank_owner = x[keep], who[keep]
    else:
        bank, bank_owner = x, who
    bank_sq = (bank * bank).sum(axis=1)
    peaks = []
    for i, v in enumerate(vecs):  # leave-one-out: each good part against the others' cells
        d = smoothed(nearest_distance(v, bank, bank_sq, exclude=bank_owner == i)
                     .reshape(grids[i]), settings.smooth)
        peaks.append(float(np.percentile(d, settings.percentile)))
    ranked = sorted(peaks)
    threshold = max(settings.margin * (ranked[-2] if len(ranked) >= 4 else ranked[-1]), 1e-3)
    calibration = {"peaks": [round(p, 4) for p in peaks], "percentile": settings.percentile,
                   "margin": settings.margin}
    return GoldenModel(bank, threshold, len(good_rgbs), settings.features, settings.context,
                       settings.smooth, settings.post, calibration)
