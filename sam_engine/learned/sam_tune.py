"""Tuning a SAM checkpoint on inspectors' accepted masks, saved as a small delta to its base.

Decoder tuning (the default): the image encoder runs once per image (inference mode, on the
engine's CPU preprocessing: preprocess.resize_longest + encoder_input, the pixels of
SamEngine.prepare) and the embeddings stay in memory (float16, 2 MB an image); each step then
runs only the prompt encoder (frozen) and the mask decoder (trained). LoRA (settings.lora):
PEFT adapters of rank r on every `qkv` Linear of the ViT image encoder, which then runs with
grad on each step's images (nothing cached); the adapters are merged at the end
(merge_and_unload), so the tuned model is a plain Sam.

Each step follows SAM's interactive training recipe: `images_per_step` images and up to
`instances_per_image` of their instances; per image one kind of prompt (prompt_sim): a jittered
box, or a click inside (sometimes with a negative click just outside). Round 1 decodes three
candidates; the lowest-loss one is trained (SAM's rule for ambiguous prompts) and the IoU head
learns all three, as evaluation and the GUI pick the best-scoring one. With probability
p_corrective a second round adds a corrective click on round 1's largest error and feeds its
low-res logits back as mask_input (single output, as a refinement is decoded).

Loss, on the decoder's 256 x 256 low-res logits against the share of each low-res cell the true
mask covers (cells inside the resized image only): BCE + Dice (1:1) plus the squared error of
the IoU head against each candidate's actual IoU. Low res because it is what the decoder
outputs and what is fed back as mask_input (the full-size mask is a fixed bilinear upsampling
of it, so cell coverage is the consistent target), it costs the same at every image size, and
for inspection images up to ~1000 px a cell is at most 4 px. BCE rather than SAM's focal loss
(20:1 with Dice): focal down-weights the easy pixels that dominate a few-mask, few-step tuning
from an off-domain start and learns more slowly there; loss="focal" gives SAM's.

Deterministic for a seed: step k draws its prompts from numpy Generator (seed, k) and seeds
torch with (seed, k), so a resumed run draws what an uninterrupted one would. A checkpoint
(trained tensors, optimiser, step, losses, the before-metrics) is written atomically every
checkpoint_every steps, at the end, and on Ctrl-C (which first finishes the current step);
a rerun with the same checkpoint_path resumes from it when settings, base and data match.
On an error or interrupt the model is given back with its base weights.

The result is a delta (save_sam_delta): only the tuned tensors (mask decoder, and the merged
qkv weights after LoRA) in safetensors, with a JSON manifest beside it naming the base
checkpoint's sha256; apply_sam_delta refuses another base or a changed file.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from sam_engine import preprocess
from sam_engine.constants import IMG_SIZE, LOW_RES_SIZE, MASK_THRESHOLD
from sam_engine.errors import CheckpointError, SamEngineError
from sam_engine.learned.data import DataError, Dataset, TrainImage
from sam_engine.learned.heldout import interior_point, iou
from sam_engine.learned.prompt_sim import (
    corrective_click,
    inside_click,
    jittered_box,
    outside_click,
)
from sam_engine.learned.weights import write_atomic
from sam_engine.upsample_np import NumpyMaskUpsampler

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "sam-inspect/sam-tune-checkpoint/1"
DELTA_FORMAT = "sam-inspect/sam-delta/1"
LORA_TARGETS = ("qkv",)  # segment_anything's ViT attention: one fused Linear per block
FOCAL_WEIGHT = 20.0  # SAM's focal : dice ratio
# Settings that may differ between a run and the run that resumes it.
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "eval_batch", "device")


class SamTuneError(SamEngineError):
    """Tuning cannot start or resume (bad settings, a checkpoint of another run)."""


class DeltaBaseMismatchError(CheckpointError):
    """A SAM delta was tuned from another base checkpoint than the one it is applied to."""

    def __init__(self, message: str, *, expected_sha256: str, actual_sha256: str) -> None:
        super().__init__(message)
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256


# ------------------------------------------------------------------ values
@dataclass(frozen=True)
class SamTuneSettings:
    """How to tune. lr: peak AdamW rate (linear warm-up over warmup_steps, cosine decay to a
    tenth at `steps`). p_box: share of images prompted with boxes (else clicks); p_negative:
    share of click images that also get a negative click; p_corrective: share of images with a
    second, corrective round. lora: adapters on the encoder's qkv (train_decoder: tune the
    decoder too). device: "auto" (CUDA when present), "cpu", "cuda", "cuda:N"."""

    steps: int = 1000
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    images_per_step: int = 2
    instances_per_image: int = 4
    p_box: float = 0.5
    p_negative: float = 0.3
    p_corrective: float = 0.5
    loss: str = "bce"  # "bce" (+ dice) or "focal" (SAM's 20:1 focal + dice)
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    train_decoder: bool = True
    checkpoint_every: int = 50
    eval_batch: int = 16
    device: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 0:
            problems.append(f"steps must be >= 0 (got {self.steps})")
        if self.images_per_step < 1 or self.instances_per_image < 1:
            problems.append("images_per_step and instances_per_image must be >= 1")
        for name in ("p_box", "p_negative", "p_corrective"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1] (got {getattr(self, name)})")
        if self.loss not in ("bce", "focal"):
            problems.append(f"loss must be 'bce' or 'focal' (got {self.loss!r})")
        if self.lora and self.lora_rank < 1:
            problems.append(f"lora_rank must be >= 1 (got {self.lora_rank})")
        if not self.lora and not self.train_decoder:
            problems.append("nothing to train: set train_decoder or lora")
        if problems:
            raise SamTuneError("invalid tuning settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SamTuneSettings:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class ClassIoU:
    """Mean IoU of one class's held-out instances for a box prompt and for one click."""

    cls: str
    n: int
    box_iou: float
    click_iou: float


@dataclass(frozen=True)
class HeldOutMetrics:
    """Held-out scores: mean IoU (over instances) of the best-scoring candidate for the exact
    box and for one click at the most interior pixel, per class, and the mean training loss
    (first round, same prompts)."""

    n_instances: int
    loss: float
    box_iou: float
    click_iou: float
    per_class: tuple[ClassIoU, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HeldOutMetrics:
        return cls(int(d["n_instances"]), float(d["loss"]), float(d["box_iou"]),
                   float(d["click_iou"]), tuple(ClassIoU(**c) for c in d["per_class"]))


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of the model as trained (adapters included) and how many were trained."""

    total: int
    trainable: int
    adapter: int  # LoRA parameters (0 without LoRA)
    decoder: int  # trained mask-decoder parameters


@dataclass
class SamTuneResult:
    """What tune_sam_decoder did. sam: the tuned model (the one passed in, tuned in place,
    adapters merged). start_step: where this run began (a checkpoint's step, else 0)."""

    sam: Sam = field(repr=False)
    settings: SamTuneSettings
    steps: int
    start_step: int
    losses: list[float] = field(repr=False)
    seconds_per_step: float
    params: ParamCounts
    before: HeldOutMetrics | None
    after: HeldOutMetrics | None
    data_digest: str
    held_out_digest: str
    n_train_images: int
    n_train_instances: int
    delta_names: tuple[str, ...] = field(repr=False)

    def manifest(self, base_model_id: str) -> dict:
        """The manifest fields save_sam_delta stores with this result's delta."""
        return {
            "base_model_id": base_model_id,
            "kind": "lora+decoder" if self.settings.lora and self.settings.train_decoder
            else "lora" if self.settings.lora else "decoder",
            "settings": self.settings.to_dict(),
            "data": {"digest": self.data_digest, "images": self.n_train_images,
                     "instances": self.n_train_instances},
            "held_out": {"digest": self.held_out_digest,
                         "before": self.before.to_dict() if self.before else None,
                         "after": self.after.to_dict() if self.after else None},
            "params": asdict(self.params),
            "steps": self.steps,
            "seconds_per_step": self.seconds_per_step,
        }

    def save_delta(self, path: str | Path, base_sha256: str, base_model_id: str) -> dict:
        """save_sam_delta of this result's tuned tensors and manifest."""
        return save_sam_delta(path, self.sam, base_sha256, self.manifest(base_model_id),
                              names=self.delta_names)


# ------------------------------------------------------------------ geometry and targets
def low_res_coverage(mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """float32 (256, 256): the share of each low-res logit cell that `mask` covers once resized
    into the encoder's frame (input_size = preprocess.preprocess_shape; padding is 0)."""
    h, w = input_size
    m = np.asarray(mask, np.float32)
    interp = cv2.INTER_AREA if h < m.shape[0] else cv2.INTER_LINEAR
    big = np.zeros((IMG_SIZE, IMG_SIZE), np.float32)
    big[:h, :w] = cv2.resize(m, (w, h), interpolation=interp)
    s = IMG_SIZE // LOW_RES_SIZE
    return big.reshape(LOW_RES_SIZE, s, LOW_RES_SIZE, s).mean((1, 3))


@dataclass
class _Item:
    """One image ready for training or evaluation."""

    image: TrainImage
    input_size: tuple[int, int]
    upsampler: NumpyMaskUpsampler
    valid: torch.Tensor  # (1, 1, 256, 256) float: cells inside the resized image
    targets: np.ndarray  # uint8 (n_instances, 256, 256): coverage * 255
    resized: np.ndarray | None = None  # uint8 encoder-frame image (LoRA mode)
    embedding: torch.Tensor | None = None  # (1, 256, 64, 64) float16 on the CPU

    def target(self, idx: Sequence[int], device: torch.device) -> torch.Tensor:
        t = torch.from_numpy(self.targets[list(idx)]).to(device)
        return t.float().div_(255.0)[:, None]


def _item(image: TrainImage, keep_resized: bool) -> _Item:
    size = image.size
    input_size = preprocess.preprocess_shape(*size)
    valid = low_res_coverage(np.ones(size, bool), input_size) >= 0.5
    targets = np.stack([np.round(low_res_coverage(i.mask, input_size) * 255).astype(np.uint8)
                        for i in image.instances])
    return _Item(image, input_size, NumpyMaskUpsampler(input_size, size),
                 torch.from_numpy(valid.astype(np.float32))[None, None], targets,
                 preprocess.resize_longest(image.rgb) if keep_resized else None)


def _encoder_input(resized: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(preprocess.encoder_input(resized))


@torch.inference_mode()
def _embed(sam: Sam, items: list[_Item], device: torch.device, progress: bool,
           desc: str) -> None:
    """Fill each item's embedding with the (frozen) image encoder, one image per forward."""
    from tqdm import tqdm

    was_training = sam.image_encoder.training
    sam.image_encoder.eval()
    for it in tqdm(items, desc=desc, unit="img", file=sys.stderr, disable=not progress):
        resized = it.resized if it.resized is not None else preprocess.resize_longest(
            it.image.rgb)
        x = _encoder_input(resized)[None].to(device)
        it.embedding = sam.image_encoder(x).to("cpu", torch.float16)
    sam.image_encoder.train(was_training)


# ------------------------------------------------------------------ prompts and decoding
@dataclass
class _Prompt:
    """One decoder call's prompts in original pixels; labels -1 mark padding points."""

    points: np.ndarray | None = None  # (B, N, 2)
    labels: np.ndarray | None = None  # (B, N)
    boxes: np.ndarray | None = None  # (B, 4)


def _first_prompt(masks: list[np.ndarray], rng: np.random.Generator,
                  s: SamTuneSettings) -> _Prompt:
    """A jittered box per instance, or a click inside (plus, for a share of images, a
    negative click near each instance)."""
    if rng.random() < s.p_box:
        return _Prompt(boxes=np.stack([jittered_box(m, rng) for m in masks]))
    negative = rng.random() < s.p_negative
    n = 2 if negative else 1
    pts = np.zeros((len(masks), n, 2))
    lab = np.full((len(masks), n), -1, np.int64)
    for b, m in enumerate(masks):
        pts[b, 0], lab[b, 0] = inside_click(m, rng), 1
        if negative and (neg := outside_click(m, rng)) is not None:
            pts[b, 1], lab[b, 1] = neg, 0
    return _Prompt(points=pts, labels=lab)


def _with_corrections(prompt: _Prompt, clicks: list[tuple[np.ndarray, int] | None]) -> _Prompt:
    """The prompt plus one corrective click per instance (padding where none is needed)."""
    add = np.zeros((len(clicks), 1, 2))
    lab = np.full((len(clicks), 1), -1, np.int64)
    for b, c in enumerate(clicks):
        if c is not None:
            add[b, 0], lab[b, 0] = c
    if prompt.points is None:
        return _Prompt(add, lab, prompt.boxes)
    return _Prompt(np.concatenate([prompt.points, add], 1),
                   np.concatenate([prompt.labels, lab], 1), prompt.boxes)


def _decode(sam: Sam, emb: torch.Tensor, prompt: _Prompt, size: tuple[int, int],
            mask_input: torch.Tensor | None, multimask: bool):
    """Meta's prompt encoder + mask decoder: low-res logits (B, C, 256, 256), IoU (B, C)."""
    dev = emb.device
    points = boxes = None
    if prompt.points is not None:
        coords = torch.as_tensor(preprocess.apply_coords(prompt.points, size), device=dev)
        points = (coords, torch.as_tensor(prompt.labels, dtype=torch.int, device=dev))
    if prompt.boxes is not None:
        boxes = torch.as_tensor(preprocess.apply_boxes(prompt.boxes, size), device=dev)
    pe = sam.prompt_encoder
    sparse, dense = pe(points=points, boxes=boxes, masks=mask_input)
    return sam.mask_decoder(image_embeddings=emb, image_pe=pe.get_dense_pe(),
                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                            multimask_output=multimask)


# ------------------------------------------------------------------ losses
def seg_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
             kind: str = "bce", dice_weight: float = 1.0) -> torch.Tensor:
    """(B, C) loss of each candidate: BCE (or SAM's focal x 20) + dice_weight * Dice, over the
    valid cells. logits (B, C, S, S); target (B, 1, S, S) coverage in [0, 1]; valid (1, 1, S, S)."""
    t = target.expand_as(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = torch.sigmoid(logits)
    if kind == "focal":
        p_t = p * t + (1 - p) * (1 - t)
        ce = FOCAL_WEIGHT * ce * (1 - p_t) ** 2 * (0.25 * t + 0.75 * (1 - t))
    n = valid.sum().clamp(min=1.0)
    pixel = (ce * valid).sum((2, 3)) / n
    pv, tv = p * valid, t * valid
    dice = 1 - (2 * (pv * tv).sum((2, 3)) + 1) / (pv.sum((2, 3)) + tv.sum((2, 3)) + 1)
    return pixel + dice_weight * dice


@torch.no_grad()
def low_res_iou(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, C) IoU of each thresholded candidate with the target (coverage > 0.5), valid cells."""
    v = valid > 0
    pred = (logits > MASK_THRESHOLD) & v
    truth = (target > 0.5) & v
    inter = (pred & truth).sum((2, 3)).float()
    union = (pred | truth).sum((2, 3)).float()
    return torch.where(union > 0, inter / union.clamp(min=1.0), torch.ones_like(union))


def _round_loss(low: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor,
                valid: torch.Tensor, s: SamTuneSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, index of the trained candidate per prompt): the lowest segmentation loss among
    the candidates, plus iou_weight * MSE of the IoU head on every candidate."""
    seg = seg_loss(low, target, valid, s.loss, s.dice_weight)
    best = seg.detach().argmin(1)
    seg_min = seg.gather(1, best[:, None]).mean()
    iou_l = F.mse_loss(iou_pred, low_res_iou(low, target, valid))
    return seg_min + s.iou_weight * iou_l, best


# ------------------------------------------------------------------ evaluation
def _pick(low: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return low[torch.arange(low.shape[0], device=low.device), idx]


@torch.no_grad()
def _evaluate(sam: Sam, items: list[_Item], s: SamTuneSettings, device: torch.device,
              progress: bool, desc: str) -> HeldOutMetrics | None:
    """Box and interior-click IoU (best-scoring of three candidates, full size) and loss."""
    from tqdm import tqdm

    if not items:
        return None
    classes: list[str] = []
    box_ious: list[float] = []
    click_ious: list[float] = []
    losses: list[float] = []
    total = sum(len(it.image.instances) for it in items)
    bar = tqdm(total=total, desc=desc, unit="inst", file=sys.stderr, disable=not progress)
    for it in items:
        emb = it.embedding.to(device).float()
        valid = it.valid.to(device)
        insts = it.image.instances
        for c0 in range(0, len(insts), max(1, s.eval_batch)):
            idx = list(range(c0, min(c0 + max(1, s.eval_batch), len(insts))))
            masks = [insts[i].mask for i in idx]
            target = it.target(idx, device)
            boxes = np.array([insts[i].bbox for i in idx], np.float64)
            clicks = np.array([[interior_point(m)] for m in masks])
            out = []
            for prompt in (_Prompt(boxes=boxes),
                           _Prompt(clicks, np.ones((len(idx), 1), np.int64))):
                low, iou_pred = _decode(sam, emb, prompt, it.image.size, None, True)
                loss, _ = _round_loss(low, iou_pred, target, valid, s)
                losses.append(float(loss) * len(idx))
                best = _pick(low, iou_pred.argmax(1)).float().cpu().numpy()
                full = it.upsampler(best)
                out.append([iou(full[b], m) for b, m in enumerate(masks)])
            box_ious += out[0]
            click_ious += out[1]
            classes += [insts[i].cls for i in idx]
            bar.update(len(idx))
    bar.close()
    per_class = []
    for cls in sorted(set(classes)):
        sel = [i for i, c in enumerate(classes) if c == cls]
        per_class.append(ClassIoU(cls, len(sel), float(np.mean([box_ious[i] for i in sel])),
                                  float(np.mean([click_ious[i] for i in sel]))))
    return HeldOutMetrics(len(classes), float(np.sum(losses) / (2 * len(classes))),
                          float(np.mean(box_ious)), float(np.mean(click_ious)), tuple(per_class))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate_sam(sam: Sam, images: list[TrainImage], *, loss: str = "bce",
                 device: str = "auto", batch: int = 16,
                 progress: bool = False) -> HeldOutMetrics | None:
    """Held-out metrics of `sam` on `images` (None when they hold no instance): the encoder
    runs once per image, then each instance is prompted with its exact box and with one click
    at its most interior pixel (as `sam-inspect eval`)."""
    s = SamTuneSettings(loss=loss, eval_batch=batch, device=device)
    dev = _device(device)
    items = [_item(im, False) for im in images if im.instances]
    home = next(sam.parameters()).device
    sam.to(dev)
    try:
        _embed(sam, items, dev, progress, "encoding held-out images")
        return _evaluate(sam, items, s, dev, progress, "held-out")
    finally:
        sam.to(home)


# ------------------------------------------------------------------ model bookkeeping
def model_fingerprint(sam: torch.nn.Module) -> str:
    """A short hash of every tensor's name and first 256 values (cheap even for vit_h): tells
    a checkpoint's base from another."""
    h = hashlib.blake2b(digest_size=12)
    for name, t in sam.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()


def qkv_weight_names(sam: Sam) -> list[str]:
    """State-dict names of the encoder's qkv weights (what a merged LoRA changes)."""
    return [f"image_encoder.{n}.weight" for n, m in sam.image_encoder.named_modules()
            if n.split(".")[-1] in LORA_TARGETS and isinstance(m, torch.nn.Linear)]


def delta_names(sam: Sam, *, decoder: bool = True, encoder_qkv: bool = False) -> tuple[str, ...]:
    """The state-dict names a delta holds: the mask decoder's, and the qkv weights after LoRA."""
    names = [f"mask_decoder.{k}" for k in sam.mask_decoder.state_dict()] if decoder else []
    return tuple(names + (qkv_weight_names(sam) if encoder_qkv else []))


def _has_peft(module: torch.nn.Module) -> bool:
    return any(type(m).__module__.startswith("peft") for m in module.modules())


def _counts(sam: Sam) -> ParamCounts:
    named = list(sam.named_parameters())
    return ParamCounts(
        total=sum(p.numel() for _, p in named),
        trainable=sum(p.numel() for _, p in named if p.requires_grad),
        adapter=sum(p.numel() for n, p in named if "lora_" in n),
        decoder=sum(p.numel() for n, p in named
                    if n.startswith("mask_decoder.") and p.requires_grad))


class _DeferredInterrupt:
    """Ctrl-C while training: the first one is acted on after the current step (so the
    checkpoint is consistent); a second one interrupts at once (nothing more is saved).
    Only the main thread receives signals, so elsewhere this does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self.forced = False
        self._old = None

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupt: finishing this step and saving a checkpoint (again to abort)")

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# ------------------------------------------------------------------ training
class _Tuner:
    """One tuning run's state: model, data, optimiser, checkpoint."""

    def __init__(self, sam: Sam, train: list[TrainImage], held_out: list[TrainImage],
                 s: SamTuneSettings, checkpoint_path: Path | None, progress: bool) -> None:
        self.sam, self.s, self.progress = sam, s, progress
        self.dev = _device(s.device)
        self.path = checkpoint_path
        self.train_images = [im for im in train if im.instances]
        if not self.train_images:
            raise DataError("no training instances: the training images hold no defect masks")
        self.held_images = [im for im in held_out if im.instances]
        self.data_digest = Dataset(self.train_images).digest()
        self.held_digest = Dataset(self.held_images).digest()
        self.base_fp = model_fingerprint(sam)
        self.home = next(sam.parameters()).device
        self.grad_flags = {n: p.requires_grad for n, p in sam.named_parameters()}
        self.base_decoder = {k: v.detach().clone() for k, v in
                             sam.mask_decoder.state_dict().items()}
        self.peft_model = None

    # -- setup
    def prepare(self) -> None:
        s = self.s
        self.sam.to(self.dev).eval()
        for p in self.sam.parameters():
            p.requires_grad_(False)
        self.items = [_item(im, s.lora) for im in self.train_images]
        self.held = [_item(im, False) for im in self.held_images]
        if not s.lora:
            _embed(self.sam, self.items, self.dev, self.progress, "encoding training images")
        _embed(self.sam, self.held, self.dev, self.progress, "encoding held-out images")
        if s.train_decoder:
            for p in self.sam.mask_decoder.parameters():
                p.requires_grad_(True)
        if s.lora:
            self._add_lora()
        self.params = [(n, p) for n, p in self.sam.named_parameters() if p.requires_grad]
        bad = [n for n, _ in self.params
               if not ("lora_" in n or (s.train_decoder and n.startswith("mask_decoder.")))]
        if bad:
            raise SamTuneError(f"parameters outside the adapter/decoder are trainable: {bad[:5]}")
        self.counts = _counts(self.sam)
        msg = (f"trainable parameters: {self.counts.trainable:,} of {self.counts.total:,} "
               f"(adapter {self.counts.adapter:,}, decoder {self.counts.decoder:,})")
        log.info(msg)
        if self.progress:
            print(msg, file=sys.stderr)
        self.opt = torch.optim.AdamW([p for _, p in self.params], lr=s.lr,
                                     weight_decay=s.weight_decay)

    def _add_lora(self) -> None:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise SamTuneError("LoRA needs PEFT: pip install 'sam-inspect[report]' (or peft), "
                               "or tune the decoder alone (without --lora)") from None

        s = self.s
        config = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                            target_modules=list(LORA_TARGETS), bias="none")
        torch.manual_seed(s.seed)  # the adapters' initialisation (inside fork_rng)
        # injects lora.Linear layers into sam.image_encoder in place; the wrapper merges later
        self.peft_model = get_peft_model(self.sam.image_encoder, config)
        self.sam.image_encoder.train()

    # -- checkpoints
    def _compatible(self) -> dict:
        d = self.s.to_dict()
        return {k: v for k, v in d.items() if k not in _RESUMABLE_CHANGES}

    def save(self, step: int, losses: list[float], before: HeldOutMetrics | None) -> None:
        if self.path is None:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "step": step, "settings": self.s.to_dict(),
            "base_fingerprint": self.base_fp, "data_digest": self.data_digest,
            "held_out_digest": self.held_digest,
            "trainable": {n: p.detach().cpu().clone() for n, p in self.params},
            "optimizer": self.opt.state_dict(), "losses": list(losses),
            "before": before.to_dict() if before else None,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(self.path, buf.getvalue())

    def peek(self) -> dict | None:
        """The checkpoint's state when there is one for this run (checked before any work);
        raises SamTuneError when it is unreadable or another run's."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, bit-flipped, not a torch file
            raise SamTuneError(f"cannot read the tuning checkpoint {self.path} ({exc}); delete "
                               "it to start over") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise SamTuneError(f"{self.path} is not a SAM tuning checkpoint; delete it or pass "
                               "another checkpoint path")
        why = []
        saved = SamTuneSettings.from_dict(state["settings"]).to_dict()
        diff = [k for k, v in self._compatible().items() if saved.get(k) != v]
        if diff:
            why.append("settings differ: " + ", ".join(
                f"{k} {saved.get(k)!r} -> {getattr(self.s, k)!r}" for k in diff))
        if state["base_fingerprint"] != self.base_fp:
            why.append("the base model differs (pass the untuned base it started from)")
        if state["data_digest"] != self.data_digest:
            why.append("the training data differ")
        if state["step"] > self.s.steps:
            why.append(f"it is at step {state['step']}, beyond the {self.s.steps} asked for")
        if why:
            raise SamTuneError(f"the tuning checkpoint {self.path} belongs to another run: "
                               + "; ".join(why) + ". Delete it to start over.")
        return state

    def restore(self, state: dict) -> None:
        """Trained tensors and optimiser state from a checkpoint (after prepare)."""
        names = {n for n, _ in self.params}
        if set(state["trainable"]) != names:
            raise SamTuneError(f"{self.path} holds other tensors than this run trains; delete "
                               "it to start over")
        with torch.no_grad():
            for n, p in self.params:
                p.copy_(state["trainable"][n])
        self.opt.load_state_dict(state["optimizer"])

    def restore_base(self) -> None:
        """Undo the tuning on the model passed in (after an error or interrupt)."""
        with torch.no_grad():
            self.sam.mask_decoder.load_state_dict(self.base_decoder)
        if self.peft_model is not None:
            self.peft_model.unload()
            self.peft_model = None
        for n, p in self.sam.named_parameters():
            p.requires_grad_(self.grad_flags.get(n, False))
        self.sam.eval().to(self.home)

    # -- steps
    def lr_at(self, step: int) -> float:
        s = self.s
        warm = min(1.0, (step + 1) / s.warmup_steps) if s.warmup_steps > 0 else 1.0
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, s.steps)))
        return s.lr * warm * decay

    def _image_loss(self, it: _Item, emb: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        s, insts = self.s, it.image.instances
        idx = sorted(rng.choice(len(insts), size=min(s.instances_per_image, len(insts)),
                                replace=False).tolist())
        masks = [insts[i].mask for i in idx]
        target, valid = it.target(idx, self.dev), it.valid.to(self.dev)
        prompt = _first_prompt(masks, rng, s)
        low, iou_pred = _decode(self.sam, emb, prompt, it.image.size, None, True)
        loss, best = _round_loss(low, iou_pred, target, valid, s)
        if rng.random() >= s.p_corrective:
            return loss
        prev = _pick(low, best).detach()
        preds = it.upsampler(prev.float().cpu().numpy())
        clicks = [corrective_click(p, m, rng) for p, m in zip(preds, masks, strict=True)]
        low2, iou2 = _decode(self.sam, emb, _with_corrections(prompt, clicks), it.image.size,
                             prev[:, None], False)
        loss2, _ = _round_loss(low2, iou2, target, valid, s)
        return (loss + loss2) / 2

    def step(self, step: int) -> float:
        s = self.s
        rng = np.random.default_rng([s.seed, step])
        torch.manual_seed(int(np.random.SeedSequence([s.seed, step, 1]).generate_state(1)[0]))
        picks = rng.choice(len(self.items), size=min(s.images_per_step, len(self.items)),
                           replace=False)
        items = [self.items[int(i)] for i in picks]
        if s.lora:
            x = torch.stack([_encoder_input(it.resized) for it in items]).to(self.dev)
            embs = self.sam.image_encoder(x)
        else:
            embs = torch.cat([it.embedding for it in items]).to(self.dev).float()
        loss = sum(self._image_loss(it, embs[i:i + 1], rng) for i, it in enumerate(items))
        loss = loss / len(items)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], s.grad_clip)
        self.opt.step()
        return float(loss.detach())

    def finish(self) -> None:
        """Merge the adapters (plain weights), freeze everything, back to the caller's device."""
        if self.peft_model is not None:
            self.peft_model.merge_and_unload()
            self.peft_model = None
            if _has_peft(self.sam) or any("lora_" in n for n, _ in self.sam.named_parameters()):
                raise SamTuneError("the LoRA adapters did not merge into plain weights")
        for p in self.sam.parameters():
            p.requires_grad_(False)
        self.sam.eval()

    def run(self, on_step: Callable[[int, float], None] | None) -> SamTuneResult:
        from tqdm import tqdm

        s = self.s
        state = self.peek()
        self.prepare()
        if state:
            self.restore(state)
        start = int(state["step"]) if state else 0
        losses: list[float] = list(state["losses"]) if state else []
        if (state and state["before"] is not None
                and state.get("held_out_digest") == self.held_digest):
            before = HeldOutMetrics.from_dict(state["before"])
        else:
            before = _evaluate(self.sam, self.held, s, self.dev, self.progress, "held-out before")
        if state:
            log.info("resuming SAM tuning from step %d of %d (%s)", start, s.steps, self.path)
        done, t0 = start, time.perf_counter()
        desc = "tuning SAM (LoRA)" if s.lora else "tuning SAM decoder"
        bar = tqdm(total=s.steps, initial=start, desc=desc, unit="step", file=sys.stderr,
                   disable=not self.progress)
        with _DeferredInterrupt() as stop:
            try:
                for step in range(start, s.steps):
                    losses.append(self.step(step))
                    done = step + 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
                    if on_step is not None:
                        on_step(done, losses[-1])
                    if s.checkpoint_every > 0 and done % s.checkpoint_every == 0:
                        self.save(done, losses, before)
                    if stop.requested:
                        raise KeyboardInterrupt
            except BaseException as exc:
                bar.close()
                if isinstance(exc, KeyboardInterrupt) and not stop.forced and done > start:
                    self.save(done, losses, before)
                    log.warning("tuning interrupted at step %d of %d; checkpoint %s", done,
                                s.steps, self.path)
                raise
        bar.close()
        elapsed = time.perf_counter() - t0
        if done > start or state is None:
            self.save(done, losses, before)
        self.finish()
        if s.lora:  # the encoder changed: embed the held-out images again
            _embed(self.sam, self.held, self.dev, self.progress, "encoding held-out images")
        after = _evaluate(self.sam, self.held, s, self.dev, self.progress, "held-out after")
        self.sam.to(self.home)
        return SamTuneResult(
            sam=self.sam, settings=s, steps=done, start_step=start, losses=losses,
            seconds_per_step=elapsed / (done - start) if done > start else float("nan"),
            params=self.counts, before=before, after=after, data_digest=self.data_digest,
            held_out_digest=self.held_digest, n_train_images=len(self.train_images),
            n_train_instances=sum(len(im.instances) for im in self.train_images),
            delta_names=delta_names(self.sam, decoder=s.train_decoder, encoder_qkv=s.lora))


def tune_sam_decoder(sam: Sam, train: list[TrainImage], held_out: list[TrainImage],
                     settings: SamTuneSettings = SamTuneSettings(), *,
                     checkpoint_path: Path | None = None, progress: bool = True,
                     on_step: Callable[[int, float], None] | None = None) -> SamTuneResult:
    """Tune `sam` in place on the training images' instances (see the module docstring) and
    score it on the held-out images before and after (None when there are none). The tuned
    model comes back in eval mode with every parameter frozen, on the device it came on.

    checkpoint_path: where the training state is saved (every checkpoint_every steps, at the
    end, on Ctrl-C) and resumed from. progress: tqdm bars with ETA on stderr. on_step(step,
    loss) is called after each step (its exceptions, KeyboardInterrupt included, stop the run
    as Ctrl-C would). Raises SamTuneError for a checkpoint of another run, DataError when no
    training image has an instance.
    """
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    tuner = _Tuner(sam, train, held_out, settings, path, progress)
    devices = [tuner.dev.index or 0] if tuner.dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            return tuner.run(on_step)
        except BaseException:
            tuner.restore_base()
            raise


# ------------------------------------------------------------------ the delta file
def delta_manifest_path(path: str | Path) -> Path:
    """The JSON manifest beside a delta file: NAME.safetensors -> NAME.json."""
    return Path(path).with_suffix(".json")


def _sha256_arg(value: str, what: str) -> str:
    v = str(value).strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise CheckpointError(f"{what} must be a sha256 of 64 hex digits, got {value!r}")
    return v


def save_sam_delta(path: str | Path, sam: Sam, base_sha256: str, manifest: dict, *,
                   names: Sequence[str] | None = None) -> dict:
    """Write the tuned tensors of `sam` (names; default: the mask decoder's) to `path` with
    safetensors, then its manifest beside it (delta_manifest_path): the caller's fields plus
    the base checkpoint's sha256, the delta's computed sha256 and size, and every tensor's
    shape. Both writes are atomic. Returns the manifest written."""
    from safetensors.torch import save

    path = Path(path)
    base = _sha256_arg(base_sha256, "the base checkpoint's sha256")
    sd = sam.state_dict()
    names = list(names) if names is not None else list(delta_names(sam))
    missing = [n for n in names if n not in sd]
    if missing:
        raise CheckpointError(f"the model has no tensors {missing[:5]} to save in {path}")
    tensors = {n: sd[n].detach().cpu().contiguous().clone() for n in names}
    # one metadata key: safetensors writes several in no fixed order, and the same tensors
    # must give the same file (and sha256)
    data = save(tensors, metadata={"sam_inspect": json.dumps(
        {"format": DELTA_FORMAT, "base_sha256": base}, sort_keys=True)})
    write_atomic(path, data)
    out = dict(manifest)
    out.update({
        "format": DELTA_FORMAT,
        "base_sha256": base,
        "delta_file": path.name,
        "delta_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "delta_bytes": len(data),
        "tensors": {n: list(t.shape) for n, t in tensors.items()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    write_atomic(delta_manifest_path(path),
                 (json.dumps(out, indent=2, sort_keys=True) + "\n").encode())
    return out


def read_delta_manifest(path: str | Path) -> dict:
    """The manifest of a delta file; CheckpointError naming it when missing or unreadable."""
    mpath = delta_manifest_path(path)
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{mpath} is missing: a SAM delta ({Path(path).name}) is used "
                              "only with its manifest beside it") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{mpath} is damaged ({exc}); restore it or tune again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DELTA_FORMAT:
        raise CheckpointError(f"{mpath} is not a SAM delta manifest ({DELTA_FORMAT})")
    return manifest


def apply_sam_delta(sam: Sam, path: str | Path, base_sha256: str) -> dict:
    """Load a delta's tensors into `sam` (its base, loaded from the checkpoint whose sha256 is
    base_sha256) and return the delta's manifest.

    Refuses, before touching the model: a delta made from another base
    (DeltaBaseMismatchError, naming both sha256s), a delta file whose sha256 differs from its
    manifest's (truncated, altered), tensors the model does not have or of other shapes
    (CheckpointError)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    manifest = read_delta_manifest(path)
    have = _sha256_arg(base_sha256, "the base checkpoint's sha256")
    want = str(manifest.get("base_sha256", "")).lower()
    if want != have:
        raise DeltaBaseMismatchError(
            f"{path.name} was tuned from the base checkpoint with sha256 {want}, but the "
            f"loaded base has sha256 {have}; load the base model "
            f"{manifest.get('base_model_id', '')!s} it was tuned from, or tune this base again",
            expected_sha256=want, actual_sha256=have)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read the SAM delta {path}: {exc}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != manifest.get("delta_sha256"):
        raise CheckpointError(
            f"{path} has sha256 {got} but its manifest {delta_manifest_path(path).name} "
            f"records {manifest.get('delta_sha256')}: the file is truncated or altered; "
            "restore it or tune again")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    sd = sam.state_dict()
    listed = set(manifest.get("tensors", {}))
    problems = [f"unknown tensor {n}" for n in tensors if n not in sd]
    problems += [f"{n}: shape {list(t.shape)} but the model's is {list(sd[n].shape)}"
                 for n, t in tensors.items() if n in sd and t.shape != sd[n].shape]
    if listed != set(tensors):
        problems.append("its tensors differ from those its manifest lists")
    if problems:
        raise CheckpointError(f"{path} does not fit this model: " + "; ".join(problems[:5]))
    with torch.no_grad():
        for n, t in tensors.items():
            sd[n].copy_(t)
    return manifest
