"""Training a finder: per-pixel classes from accepted defects, and clean parts as negatives.

Every image (with its instances, or clean) is brought to the network's scale once
(preprocess.finder_input: the same resizing and standardisation as at inference) with a label
map (0 background, 1 + k class k; thin defects survive the shrinking: a pixel is labelled when a
quarter of its area is defect). Each step draws random crops (flips, 90° turns, gain/offset
jitter), and a share of the batch from clean images, so the network learns what is not a
defect. Loss: class-weighted cross-entropy + soft Dice on the defect pixels.

A checkpoint (model, optimiser, schedule, step, random states) is written atomically every
checkpoint_every steps and on Ctrl-C; train_finder resumes from it when its settings and data
match. Deterministic per seed on a CPU; uses a GPU when there is one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from sam_engine.errors import SamEngineError
from sam_engine.finder.model import FinderNet
from sam_engine.finder.preprocess import FinderGeometry, finder_input
from sam_engine.learned.data import TrainImage
from sam_engine.learned.train import run_steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinderSettings:
    """Training settings (recorded in the finder's manifest)."""

    steps: int = 1200
    batch: int = 12
    crop: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    clean_share: float = 0.2
    dice_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 50

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FinderTrainReport:
    steps: int
    seconds: float
    final_loss: float
    device: str


@dataclass
class Prepared:
    """One image at network scale: standardised (3, h, w) float16 and its label map (h, w)."""

    x: np.ndarray
    labels: np.ndarray


def prepare(rgb: np.ndarray, instances: Sequence, classes: Sequence[str],
            geometry: FinderGeometry) -> Prepared:
    """The network's view of one image and its per-pixel labels (instances: .cls, .mask)."""
    x, info = finder_input(rgb, geometry)
    rh, rw = info.resized
    labels = np.zeros((rh, rw), np.uint8)
    for inst in instances:
        if inst.cls not in classes:
            continue
        m = np.asarray(inst.mask, np.float32)
        if (rh, rw) != m.shape:
            m = cv2.resize(m, (rw, rh), interpolation=cv2.INTER_AREA)
        labels[m >= 0.25] = 1 + list(classes).index(inst.cls)
    return Prepared(x[0, :, :rh, :rw].astype(np.float16), labels)


def _crop(p: Prepared, size: int, rng: np.random.Generator, defect_bias: bool):
    _, h, w = p.x.shape
    x = np.zeros((3, size, size), np.float32)
    t = np.zeros((size, size), np.int64)
    valid = np.zeros((size, size), np.float32)
    if defect_bias and p.labels.any() and rng.random() < 0.5:  # centre on a defect pixel
        ys, xs = np.nonzero(p.labels)
        k = int(rng.integers(len(ys)))
        cy = int(ys[k]) - size // 2 + int(rng.integers(-size // 4, size // 4 + 1))
        cx = int(xs[k]) - size // 2 + int(rng.integers(-size // 4, size // 4 + 1))
        y0 = min(max(cy, 0), max(h - size, 0))
        x0 = min(max(cx, 0), max(w - size, 0))
    else:
        y0 = int(rng.integers(max(h - size, 0) + 1))
        x0 = int(rng.integers(max(w - size, 0) + 1))
    ch, cw = min(size, h - y0), min(size, w - x0)
    x[:, :ch, :cw] = p.x[:, y0:y0 + ch, x0:x0 + cw]
    t[:ch, :cw] = p.labels[y0:y0 + ch, x0:x0 + cw]
    valid[:ch, :cw] = 1.0
    k = int(rng.integers(4))
    flip = rng.random() < 0.5
    x, t, valid = (np.rot90(a, k, axes=(-2, -1)) for a in (x, t, valid))
    if flip:
        x, t, valid = (a[..., ::-1] for a in (x, t, valid))
    gain = float(np.exp(rng.normal(0, 0.15)))
    x = x * gain + float(rng.normal(0, 0.1))
    return np.ascontiguousarray(x), np.ascontiguousarray(t), np.ascontiguousarray(valid)


def losses(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
           weights: torch.Tensor, dice_weight: float) -> torch.Tensor:
    ce = F.cross_entropy(logits, target, weight=weights, reduction="none")
    ce = (ce * valid).sum() / valid.sum().clamp(min=1.0)
    prob = logits.softmax(1)
    fg = (1.0 - prob[:, 0]) * valid
    gt = (target > 0).float() * valid
    inter = (fg * gt).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (fg.sum((1, 2)) + gt.sum((1, 2)) + 1)
    has = (gt.sum((1, 2)) > 0).float()  # Dice only where there is a defect to overlap
    dice = (dice * has).sum() / has.sum().clamp(min=1.0)
    return ce + dice_weight * dice


def train_finder(model: FinderNet, images: Sequence[TrainImage],
                 clean: Sequence[np.ndarray] = (), settings: FinderSettings = FinderSettings(),
                 *, checkpoint: str | Path | None = None, data_digest: str = "",
                 progress: bool = True, on_step: Callable[[int, float], None] | None = None,
                 desc: str = "finder") -> FinderTrainReport:
    """Train model in place on images (instances of model.config.classes) and clean images."""
    s = settings
    classes = model.config.classes
    g = model.config.geometry
    defective = [prepare(im.rgb, im.instances, classes, g) for im in images]
    defective = [p for p in defective if p.labels.any()]
    if not defective:
        raise SamEngineError(f"no defects of the classes {', '.join(classes)} to train on")
    negatives = [prepare(rgb, (), classes, g) for rgb in clean]
    counts = np.bincount(np.concatenate([p.labels.ravel() for p in defective]),
                         minlength=1 + len(classes)).astype(np.float64)
    freq = counts / counts.sum()
    # rarer classes weigh more, tempered (sqrt) so a tiny class does not swamp the background
    w = np.where(counts > 0, np.sqrt(freq[0] / np.maximum(freq, 1e-9)), 1.0)
    weights = torch.tensor(np.minimum(w, 3.0), dtype=torch.float32)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    model.to(device=device, memory_format=torch.channels_last)
    weights = weights.to(device)
    meta = {"settings": s.to_dict(), "data": data_digest, "net": model.config.to_dict(),
            "clean": len(negatives)}

    def batch_loss() -> torch.Tensor:
        xs, ts, vs = [], [], []
        for _ in range(s.batch):
            use_clean = negatives and rng.random() < s.clean_share
            pool = negatives if use_clean else defective
            p = pool[int(rng.integers(len(pool)))]
            x, t, v = _crop(p, s.crop, rng, not use_clean)
            xs.append(x)
            ts.append(t)
            vs.append(v)
        x = torch.from_numpy(np.stack(xs)).to(device).contiguous(
            memory_format=torch.channels_last)
        t = torch.from_numpy(np.stack(ts)).to(device)
        v = torch.from_numpy(np.stack(vs)).to(device)
        return losses(model(x), t, v, weights, s.dice_weight)

    done = run_steps(model, s, batch_loss, meta=meta, rng=rng, checkpoint=checkpoint,
                     progress=progress, on_step=on_step, desc=desc)
    model.eval()
    model.to("cpu", memory_format=torch.contiguous_format)
    return FinderTrainReport(done.step, done.seconds, done.final_loss, device)
