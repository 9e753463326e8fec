"""Training the crop network on images with true masks, with prompts simulated as inspectors
give them (prompt_sim), through the same windows and inputs the engine uses (crops).

Each step draws `batch` instances; each gets a jittered box (sometimes with a click) or a
click (sometimes with a negative click) and one of the prompt's candidate windows; a share of
them get a second, corrective round: the network's first answer goes through SAM's low-res
frame as the engine would pass it back, an inspector's next click lands on the largest error,
and the network is trained on that refinement. Loss: BCE + soft Dice on the crop, plus the
squared error of the IoU head against the candidate's true IoU with the whole instance (so a
window that cuts the defect off scores low).

Deterministic for a seed (numpy Generator + torch seed, single-process) on a CPU; on a GPU
(used when there is one; the model comes back on the CPU) up to cuDNN's own nondeterminism.
A checkpoint (model, optimiser, schedule, step, random states) is written atomically every
checkpoint_every steps and on Ctrl-C; train() resumes from it when its settings and data
digest match.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from sam_engine.errors import SamEngineError
from sam_engine.learned.crop_engine import sigmoid
from sam_engine.learned.crops import (
    CropGeometry,
    crop_mask,
    logits_to_low_res,
    low_res_to_crop,
    low_res_to_mask,
    network_input,
    prompt_windows,
)
from sam_engine.learned.data import TrainImage
from sam_engine.learned.model import CropUNet
from sam_engine.learned.prompt_sim import (
    corrective_click,
    inside_click,
    jittered_box,
    outside_click,
)
from sam_engine.learned.weights import write_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """How to train; recorded in the model's manifest."""

    steps: int = 800
    batch: int = 24
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    p_box: float = 0.5  # share of box prompts (the rest are clicks)
    p_box_click: float = 0.15  # a box prompt also gets a positive click
    p_negative: float = 0.2  # a click prompt also gets a negative click
    p_refine: float = 0.25  # a corrective second round
    iou_weight: float = 5.0  # weight of the IoU head's loss (chosen on the NEU site protocol)
    checkpoint_every: int = 50
    warmup: int = 20

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainReport:
    steps: int
    seconds: float
    resumed_from: int
    final_loss: float
    losses: list[float]


class TrainingInterrupted(SamEngineError):
    """Training stopped by Ctrl-C after its checkpoint was written."""


@dataclass
class _Sample:
    x: np.ndarray
    target: np.ndarray
    gt_area: float  # the whole instance's area in crop pixels


def _instance_table(images: list[TrainImage]) -> list[tuple[int, int]]:
    return [(i, j) for i, im in enumerate(images) for j in range(len(im.instances))]


def _first_prompt(mask: np.ndarray, rng: np.random.Generator, s: TrainSettings):
    if rng.random() < s.p_box:
        box = jittered_box(mask, rng)
        if rng.random() < s.p_box_click:
            return box, inside_click(mask, rng)[None], np.array([1])
        return box, None, None
    pts, lab = [inside_click(mask, rng)], [1]
    if rng.random() < s.p_negative:
        neg = outside_click(mask, rng)
        if neg is not None:
            pts.append(neg)
            lab.append(0)
    return None, np.array(pts), np.array(lab)


def _sample(rgb: np.ndarray, mask: np.ndarray, g: CropGeometry, box, pts, lab, cand: int,
            prev_low: np.ndarray | None) -> tuple[_Sample, object]:
    size = mask.shape
    n = cand + 1
    prev_mask = None if prev_low is None or box is not None else low_res_to_mask(prev_low, size)
    wins = prompt_windows(size, box, pts, lab, prev_mask, n, g)
    win = wins[min(cand, len(wins) - 1)]
    prev = None if prev_low is None else sigmoid(low_res_to_crop(prev_low, win, g.size, size))
    x = network_input(rgb, win, g, box, pts, lab, prev)
    target = crop_mask(mask, win, g.size)
    gt_area = float(np.count_nonzero(mask)) * g.size**2 / (win.width * win.height)
    return _Sample(x, target, gt_area), win


def _augment(x: torch.Tensor, t: torch.Tensor, rng: np.random.Generator):
    k = int(rng.integers(4))
    if k:
        x, t = torch.rot90(x, k, (2, 3)), torch.rot90(t, k, (2, 3))
    if rng.random() < 0.5:
        x, t = torch.flip(x, (3,)), torch.flip(t, (3,))
    return x, t


def losses(logits: torch.Tensor, iou: torch.Tensor, target: torch.Tensor,
           gt_area: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(segmentation loss, IoU-head loss) for logits (B, 1, S, S), targets in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    with torch.no_grad():
        hard = (logits > 0).float()
        hi = (hard * (target > 0.5).float()).sum((1, 2, 3))
        true_iou = hi / (hard.sum((1, 2, 3)) + gt_area - hi).clamp(min=1.0)
    return bce + dice.mean(), F.mse_loss(iou[:, 0], true_iou)


def save_checkpoint(path: Path, model, opt, sched, step: int, rng, meta: dict,
                    losses_: list[float]) -> None:
    """Write a training checkpoint atomically: weights, optimiser, schedule, step, random
    states, the run's meta (settings, data digest, net) and the loss history."""
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "step": step, "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "meta": meta, "losses": losses_}, buf)
    write_atomic(path, buf.getvalue())


def resume_checkpoint(ck: Path | None, meta: dict, model, opt, sched,
                      rng) -> tuple[int, list[float]]:
    """(step, loss history) restored from ck into model, opt, sched and the random states;
    (0, []) without one or with an unreadable one (logged). A checkpoint of other settings or
    data is refused."""
    if ck is None or not ck.is_file():
        return 0, []
    try:
        state = torch.load(ck, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: say so, start over
        log.warning("checkpoint %s is unreadable (%s); starting from the beginning", ck, exc)
        return 0, []
    if state.get("meta") != meta:
        raise SamEngineError(
            f"checkpoint {ck} was written for other settings or data; delete it or "
            "pass --restart to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming %s from step %d", ck, int(state["step"]))
    return int(state["step"]), list(state.get("losses", []))


@dataclass(frozen=True)
class StepsDone:
    """What run_steps did: the step it resumed from, the last step, the loss of every step
    (resumed ones too) and the seconds this run took."""

    start: int
    step: int
    losses: list[float]
    seconds: float

    @property
    def final_loss(self) -> float:
        return float(np.mean(self.losses[-20:])) if self.losses else float("nan")


def run_steps(model, settings, batch_loss: Callable[[], torch.Tensor], *, meta: dict, rng,
              checkpoint: str | Path | None = None, progress: bool = True,
              on_step: Callable[[int, float], None] | None = None,
              desc: str = "train") -> StepsDone:
    """The training loop every trainer here shares: AdamW (settings.lr, weight_decay) with a
    linear warm-up over settings.warmup steps and a cosine decay to settings.steps; a progress
    bar; a checkpoint every settings.checkpoint_every steps, at the end and on Ctrl-C (then
    TrainingInterrupted); resumed from `checkpoint` when its meta matches. batch_loss()
    draws one batch and returns its loss (the model is in train mode when it is called)."""
    from tqdm import tqdm

    s = settings
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)

    def lr_at(step: int) -> float:
        if step < s.warmup:
            return (step + 1) / s.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - s.warmup) / max(1, s.steps - s.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ck = Path(checkpoint) if checkpoint else None
    start, hist = resume_checkpoint(ck, meta, model, opt, sched, rng)
    t0 = time.perf_counter()
    bar = tqdm(total=s.steps, initial=start, disable=not progress, desc=desc, unit="step")
    step = start
    try:
        while step < s.steps:
            model.train()
            loss = batch_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            value = float(loss.detach())
            hist.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(hist[-20:]):.3f}")
            if on_step is not None:
                on_step(step, value)
            if ck is not None and (step % s.checkpoint_every == 0 or step == s.steps):
                save_checkpoint(ck, model, opt, sched, step, rng, meta, hist)
    except KeyboardInterrupt:
        if ck is not None:
            save_checkpoint(ck, model, opt, sched, step, rng, meta, hist)
            bar.close()
            raise TrainingInterrupted(f"stopped at step {step}/{s.steps}; the checkpoint {ck} "
                                      "keeps it: run the same command again to resume") from None
        raise
    finally:
        bar.close()
    return StepsDone(start, step, hist, time.perf_counter() - t0)


def train(model: CropUNet, images: list[TrainImage], settings: TrainSettings = TrainSettings(),
          *, checkpoint: str | Path | None = None, data_digest: str = "",
          progress: bool = True, on_step: Callable[[int, float], None] | None = None,
          desc: str = "tune") -> TrainReport:
    """Train model in place on the images' instances; resumable through `checkpoint`."""
    table = _instance_table(images)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU when there is one
    model.to(device=device, memory_format=torch.channels_last)
    if not table:
        raise SamEngineError("no defect instances to train on")
    g = model.config.geometry
    s = settings
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    meta = {"settings": s.to_dict(), "data": data_digest, "net": model.config.to_dict()}
    n_cand = {"box": len(g.box_margins), "click": len(g.click_sides)}

    def batch_loss() -> torch.Tensor:
        picks = [table[int(k)] for k in rng.integers(len(table), size=s.batch)]
        samples, firsts = [], []
        for i, j in picks:
            im, inst = images[i], images[i].instances[j]
            box, pts, lab = _first_prompt(inst.mask, rng, s)
            cand = int(rng.integers(n_cand["box" if box is not None else "click"]))
            refine = rng.random() < s.p_refine
            smp, win = _sample(im.rgb, inst.mask, g, box, pts, lab, cand, None)
            samples.append(smp)
            firsts.append((refine, im, inst, box, pts, lab, cand, win))
        if any(f[0] for f in firsts):
            idx = [k for k, f in enumerate(firsts) if f[0]]
            model.eval()
            with torch.no_grad():
                lo, _ = model(torch.from_numpy(np.stack([samples[k].x for k in idx]))
                              .to(device))
            model.train()
            for k, lg in zip(idx, lo[:, 0].cpu().numpy(), strict=True):
                _, im, inst, box, pts, lab, cand, win = firsts[k]
                low = logits_to_low_res(lg, win, im.size)
                click = corrective_click(low_res_to_mask(low, im.size), inst.mask, rng)
                if click is None:
                    continue
                p2 = click[0][None] if pts is None else np.concatenate([pts, click[0][None]])
                l2 = np.array([click[1]]) if lab is None else np.concatenate(
                    [lab, [click[1]]])
                samples[k], _ = _sample(im.rgb, inst.mask, g, box, p2, l2, cand, low)
        x = torch.from_numpy(np.stack([smp.x for smp in samples]))
        t = torch.from_numpy(np.stack([smp.target for smp in samples]))[:, None]
        x, t = _augment(x, t, rng)
        x = x.to(device).contiguous(memory_format=torch.channels_last)  # faster on a CPU
        t = t.to(device)
        area = torch.tensor([smp.gt_area for smp in samples], dtype=torch.float32,
                            device=device)
        logits, iou = model(x)
        seg, iou_loss = losses(logits, iou, t, area)
        return seg + s.iou_weight * iou_loss

    done = run_steps(model, s, batch_loss, meta=meta, rng=rng, checkpoint=checkpoint,
                     progress=progress, on_step=on_step, desc=desc)
    model.to("cpu").eval()
    return TrainReport(steps=done.step, seconds=done.seconds, resumed_from=done.start,
                       final_loss=done.final_loss, losses=done.losses)
