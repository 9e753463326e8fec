"""Teach by example: find every defect like the ones an inspector accepted, without prompts.

Like PerSAM / Matcher, an example's mask says which pixels of its image are the defect; unlike
them, each class gets a trained linear probe on the pixel features (features.py) instead of
one similarity prototype: an L2-regularised logistic regression whose positives are the
grid cells inside the class's example masks and whose negatives are the cells well outside
every mask of that class on the same images (and on any clean images given), weighted so
both sides count equally. The probe sees each feature and its magnitude, so a class taught
with both dark and bright examples can be either. More examples mean more and more varied
pixels, so the probe gets better with every one. Cells straddling a mask's edge are left out.

Finding: per wanted class its probability map; a cell is a defect where the highest wanted
probability passes the threshold and its logit also stands out from the rest of its own image
(at least `contrast` robust deviations above the image's median logit: on a busy surface
whose every streak looks a little like the examples, only what is unusual there is kept).
The result is brought to image size; components are grouped as the finder groups them
(preprocess.group_components), small ones dropped, each takes the class with the most
probability over it; score = mean probability.

numpy + OpenCV + scipy + safetensors.numpy only: runs on the torch-free line controller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from sam_engine.errors import CheckpointError, SamEngineError
from sam_engine.finder.features import (
    FEATURES_VERSION,
    FeatureMap,
    FeatureSettings,
    load_arrays,
    pixel_features,
    save_arrays,
)
from sam_engine.finder.preprocess import PostSettings, group_components, radius_px
from sam_engine.finder.types import SOURCE_EXAMPLES, Found
from sam_engine.learned.weights import ModelManifest

EXAMPLES_KIND = "examples"  # manifest net["kind"]
DEFAULT_POST = PostSettings(threshold=0.99, min_area=20, min_score=0.0, group_radius=0.02)
DEFAULT_CONTRAST = 3.5  # robust deviations of the logit above its image's median


class TeachError(SamEngineError, ValueError):
    """Examples that cannot be taught from; the message says which and why."""


@dataclass(frozen=True)
class Example:
    """One accepted defect: the image, the bool mask of the defect's pixels, its class.

    ignore: optional bool mask of pixels that are neither this example nor background (other
    defects on the image that were not accepted as examples): never used as negatives.
    """

    rgb: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    cls: str
    ignore: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TeachSettings:
    """How the probes are fitted. positive: the share of a cell the mask must cover for the
    cell to be the defect (cells within one cell of a mask are never background); l2: ridge
    penalty on standardised inputs; max_samples: cells per class and side (subsampled);
    post / contrast: the model's default finding thresholds (see the module docstring),
    chosen on synthetic parts (synthetic.hard)."""

    features: FeatureSettings = field(default_factory=FeatureSettings)
    post: PostSettings = DEFAULT_POST
    contrast: float = DEFAULT_CONTRAST
    positive: float = 0.25
    l2: float = 3e-2
    max_samples: int = 20000
    seed: int = 0

    def to_dict(self) -> dict:
        return {"features": self.features.to_dict(), "post": self.post.to_dict(),
                "contrast": self.contrast, "positive": self.positive, "l2": self.l2,
                "max_samples": self.max_samples, "seed": self.seed}


FeatureFn = Callable[[np.ndarray], FeatureMap]


@dataclass
class ExampleModel:
    """Per-class linear probes on pixel features. weights: (K, 2C) on the standardised
    design (design(x) - mean) / scale; bias: (K,); n_examples: accepted examples per class."""

    classes: tuple[str, ...]
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    n_examples: dict[str, int]
    features: FeatureSettings = field(default_factory=FeatureSettings)
    post: PostSettings = DEFAULT_POST
    contrast: float = DEFAULT_CONTRAST
    feature_source: str = FEATURES_VERSION
    manifest: ModelManifest | None = None

    @property
    def model_id(self) -> str:
        return self.manifest.model_id if self.manifest else "examples (unsaved)"

    def feature_map(self, rgb: np.ndarray) -> FeatureMap:
        if self.feature_source != FEATURES_VERSION:
            raise ValueError(f"this model was taught on {self.feature_source} features: pass "
                             "them to find(features=...)")
        return pixel_features(rgb, self.features)

    def logits(self, fmap: FeatureMap) -> np.ndarray:
        """(K, h, w) float32 per-class logits on the feature grid."""
        if fmap.source != self.feature_source or 2 * fmap.channels != self.weights.shape[1]:
            raise ValueError(f"features from {fmap.source} ({fmap.channels} channels) but the "
                             f"model was taught on {self.feature_source} "
                             f"({self.weights.shape[1] // 2})")
        x = (design(fmap.values.reshape(-1, fmap.channels)) - self.mean) / self.scale
        z = (x @ self.weights.T + self.bias).astype(np.float32)
        return z.T.reshape(len(self.classes), *fmap.grid)

    def probabilities(self, fmap: FeatureMap) -> np.ndarray:
        """(K, h, w) float32 per-class probabilities on the feature grid."""
        return expit(self.logits(fmap))

    def find(self, rgb: np.ndarray, wanted: Sequence[str] | None = None,
             features: FeatureMap | None = None, post: PostSettings | None = None,
             contrast: float | None = None) -> list[Found]:
        """Every defect of the wanted classes (default all) on rgb, best score first.

        features: a precomputed map of rgb (another source, e.g. SAM's embedding, when the
        model was taught on it; default: the filter bank); post / contrast: instead of the
        model's thresholds."""
        wanted = list(self.classes) if wanted is None else list(wanted)
        unknown = [c for c in wanted if c not in self.classes]
        if unknown:
            raise ValueError(f"classes {unknown} were never taught (taught: "
                             f"{', '.join(self.classes)})")
        if not wanted:
            return []
        post = post or self.post
        contrast = self.contrast if contrast is None else contrast
        fmap = features if features is not None else self.feature_map(rgb)
        if fmap.image_size != tuple(rgb.shape[:2]):
            raise ValueError("the feature map describes an image of another size")
        z = self.logits(fmap)[[self.classes.index(c) for c in wanted]]
        flat = z.reshape(len(wanted), -1)
        med = np.median(flat, axis=1)[:, None, None]
        mad = np.median(np.abs(flat - med.reshape(-1, 1)), axis=1)[:, None, None] * 1.4826
        standout = (z - med) >= contrast * np.maximum(mad, 1e-3)
        if not standout.any():
            return []
        full = np.stack([fmap.to_image(p) for p in expit(z)])
        gate = fmap.to_image(standout.any(axis=0).astype(np.float32)) >= 0.5
        fg = full.max(axis=0)
        mask = (fg > post.threshold) & gate
        if not mask.any():
            return []
        out = []
        for g in group_components(mask, radius_px(fmap.image_size, post.group_radius)):
            area = int(np.count_nonzero(g))
            score = float(fg[g].mean())
            if area < post.min_area or score < post.min_score:
                continue
            ys, xs = np.nonzero(g)
            cls = wanted[int(np.argmax(full[:, g].sum(axis=1)))]
            out.append(Found(cls, score, g, (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                             int(ys.max()) + 1), SOURCE_EXAMPLES))
        out.sort(key=lambda f: -f.score)
        return out

    def save(self, folder: str | Path, name: str, version: str,
             data: dict | None = None) -> ModelManifest:
        """Write the model (model.safetensors + manifest.json, sha256 recorded) into folder."""
        net = {"kind": EXAMPLES_KIND, "classes": list(self.classes),
               "n_examples": dict(self.n_examples), "features": self.features.to_dict(),
               "feature_source": self.feature_source, "post": self.post.to_dict(),
               "contrast": self.contrast}
        manifest = ModelManifest(name=name, version=str(version), net=net, data=data or {},
                                 created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        arrays = {"weights": self.weights.astype(np.float32),
                  "bias": self.bias.astype(np.float32),
                  "mean": self.mean.astype(np.float32), "scale": self.scale.astype(np.float32)}
        self.manifest = save_arrays(folder, arrays, manifest)
        return self.manifest


def load_examples(folder: str | Path) -> ExampleModel:
    """The ExampleModel in a model folder (sha256 checked; CheckpointError naming the file)."""
    arrays, manifest = load_arrays(folder, EXAMPLES_KIND)
    net = manifest.net
    try:
        classes = tuple(str(c) for c in net["classes"])
        post = PostSettings(**{k: v for k, v in net["post"].items()
                               if k in PostSettings.__dataclass_fields__})
        model = ExampleModel(classes, arrays["weights"], arrays["bias"], arrays["mean"],
                             arrays["scale"], {str(k): int(v) for k, v in
                                               net["n_examples"].items()},
                             FeatureSettings.from_dict(net["features"]), post,
                             float(net["contrast"]),
                             str(net.get("feature_source", FEATURES_VERSION)), manifest)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{Path(folder)}: not an examples model this version can read "
                              f"({exc!r})") from None
    if model.weights.shape != (len(classes), model.mean.shape[0]) or model.weights.shape[1] % 2:
        raise CheckpointError(f"{Path(folder)}: weights {model.weights.shape} do not fit "
                              f"{len(classes)} classes of {model.mean.shape[0]} features")
    return model


# ------------------------------------------------------------------ teaching
def design(x: np.ndarray) -> np.ndarray:
    """The probe's inputs from (n, C) features: each feature and its magnitude (n, 2C)."""
    return np.concatenate([x, np.abs(x)], axis=-1)


def _cells(fmap: FeatureMap, masks: dict[str, np.ndarray], ignore: np.ndarray,
           positive: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per class: bool (h, w) positive cells and negative cells of one image. A mask thinner
    than `positive` of a cell (a hairline crack on a coarse grid) takes its best-covered cells."""
    near = np.ones((3, 3), np.uint8)
    cover = {c: fmap.coverage(m) for c, m in masks.items()}
    blocked = cv2.dilate((fmap.coverage(ignore) > 0).astype(np.uint8), near) > 0
    pos, neg = {}, {}
    for c, cv in cover.items():
        touched = cv2.dilate((cv > 0).astype(np.uint8), near) > 0
        pos[c] = cv >= min(positive, 0.5 * float(cv.max())) if cv.max() > 0 else cv > 0
        neg[c] = ~touched & ~blocked
    return pos, neg


def _fit_probe(xp: np.ndarray, xn: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Weighted logistic regression (each side weight 1/2), L2 on the weights only, L-BFGS."""
    x = np.concatenate([xp, xn]).astype(np.float64)
    y = np.concatenate([np.ones(len(xp)), -np.ones(len(xn))])
    w = np.concatenate([np.full(len(xp), 0.5 / len(xp)), np.full(len(xn), 0.5 / len(xn))])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = y * (x @ theta[:-1] + theta[-1])
        f = float(np.sum(w * np.logaddexp(0.0, -z))) + 0.5 * l2 * float(theta[:-1] @ theta[:-1])
        g = -w * y * expit(-z)
        grad = np.append(x.T @ g + l2 * theta[:-1], g.sum())
        return f, grad

    res = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 300})
    return res.x[:-1], float(res.x[-1])


def teach(examples: Sequence[Example], settings: TeachSettings = TeachSettings(),
          negatives: Sequence[np.ndarray] = (), features: FeatureFn | None = None,
          feature_source: str | None = None) -> ExampleModel:
    """Fit one probe per class of the examples.

    Examples that share an image (the same array) are taught together: none of them is
    background for another. negatives: images known to hold none of the classes (clean
    parts): all their cells are background. features: rgb -> FeatureMap for another feature
    source (named by feature_source); default: the filter bank with settings.features.
    """
    if not examples:
        raise TeachError("no examples to teach from: give at least one accepted defect")
    if (features is None) != (feature_source is None):
        raise ValueError("give features and feature_source together (another feature "
                         "source), or neither (the filter bank)")
    fn = features or (lambda rgb: pixel_features(rgb, settings.features))
    rng = np.random.default_rng(settings.seed)
    n_examples: dict[str, int] = {}
    by_image: dict[int, list[Example]] = {}
    for i, ex in enumerate(examples):
        m = np.asarray(ex.mask, bool)
        if m.shape != ex.rgb.shape[:2]:
            raise TeachError(f"example {i} ({ex.cls}): mask is {m.shape[1]}x{m.shape[0]} but "
                             f"its image is {ex.rgb.shape[1]}x{ex.rgb.shape[0]}")
        if not m.any():
            raise TeachError(f"example {i} ({ex.cls}): the mask is empty")
        n_examples[ex.cls] = n_examples.get(ex.cls, 0) + 1
        by_image.setdefault(id(ex.rgb), []).append(ex)
    classes = tuple(sorted(n_examples))
    pos: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    neg: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    for group in by_image.values():
        rgb = group[0].rgb
        fmap = fn(rgb)
        masks = {c: np.zeros(rgb.shape[:2], bool) for c in classes}
        ignore = np.zeros(rgb.shape[:2], bool)
        for ex in group:
            masks[ex.cls] |= np.asarray(ex.mask, bool)
            if ex.ignore is not None:
                ignore |= np.asarray(ex.ignore, bool)
        ignore &= ~np.logical_or.reduce(list(masks.values()))
        p, n = _cells(fmap, masks, ignore, settings.positive)
        for c in classes:
            pos[c].append(fmap.values[p[c]])
            neg[c].append(fmap.values[n[c]])
    for rgb in negatives:
        v = fn(rgb).values
        for c in classes:
            neg[c].append(v.reshape(-1, v.shape[-1]))

    def sample(parts: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        if len(x) > settings.max_samples:
            x = x[rng.choice(len(x), settings.max_samples, replace=False)]
        return x

    xs = {c: (design(sample(pos[c])), design(sample(neg[c]))) for c in classes}
    for c, (xp, xn) in xs.items():
        if not len(xp):
            raise TeachError(f"the examples of {c!r} cover no feature cell (too thin or small "
                             "for the feature grid); give larger examples")
        if not len(xn):
            raise TeachError(f"the examples of {c!r} leave no background to learn from; give "
                             "examples on images with defect-free areas, or clean images")
    every = np.concatenate([x for pair in xs.values() for x in pair])
    mean = every.mean(axis=0)
    scale = np.maximum(every.std(axis=0), 1e-3)
    w, b = [], []
    for c in classes:
        xp, xn = xs[c]
        wc, bc = _fit_probe((xp - mean) / scale, (xn - mean) / scale, settings.l2)
        w.append(wc)
        b.append(bc)
    source = feature_source or FEATURES_VERSION
    return ExampleModel(classes, np.array(w, np.float32), np.array(b, np.float32),
                        mean.astype(np.float32), scale.astype(np.float32), n_examples,
                        settings.features, settings.post, settings.contrast, source)

