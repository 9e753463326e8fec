"""One tuning run: split, measure the current engine, train, measure again, gate, register.

The held-out share of the images (by group hash, never trained on) measures everything: the
engine in use now, box-fill, and the tuned model, per class, for box and click prompts. The
tuned model is written to the registry whatever happens; it is promoted for the recipe only
when its held-out mean IoU (box and click averaged) beats the current engine's by `margin`,
and the outcome says why it was or was not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sam_engine.engine import Engine
from sam_engine.errors import SamEngineError
from sam_engine.learned import registry
from sam_engine.learned.data import Dataset, TrainImage, split
from sam_engine.learned.engine import LearnedEngine, load_model
from sam_engine.learned.heldout import HeldOut, evaluate
from sam_engine.learned.train import TrainSettings, train
from sam_engine.learned.weights import ModelManifest, save_model

log = logging.getLogger(__name__)

CURVE_POINTS = (10, 30, 100, 300, 1000)


@dataclass(frozen=True)
class TuneRequest:
    """What to tune: data, starting model, settings, gate and where the result goes."""

    data: Dataset
    name: str
    recipe: str = ""  # the recipe's part name the promotion applies to ("" = default)
    base: str = registry.BASE_NAME
    held_out: float = 0.2
    salt: str = ""
    margin: float = 0.0
    settings: TrainSettings = TrainSettings()
    curve: tuple[int, ...] = ()  # also train on the first N masks, for a learning curve
    checkpoint_dir: Path | None = None
    root: Path | None = None  # registry root (default: registry.registry_root())


@dataclass
class TuneOutcome:
    manifest: ModelManifest
    folder: Path
    before: HeldOut
    after: HeldOut
    current: str  # the engine it was compared with
    promoted: bool
    reason: str
    curve: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def score(h: HeldOut) -> float:
    """The gate's figure: mean of box and click mean IoU on the held-out instances."""
    return (h.mean("box") + h.mean("point")) / 2


def _subset(images: list[TrainImage], n_masks: int) -> list[TrainImage]:
    """The first images (in digest order, so reproducible) holding about n_masks instances."""
    out, total = [], 0
    for im in sorted(images, key=lambda t: t.digest):
        if total >= n_masks:
            break
        out.append(im)
        total += len(im.instances)
    return out


def current_engine(recipe: str, root: Path | None,
                   base: str = registry.BASE_NAME) -> tuple[Engine, str]:
    """The learned model this recipe uses now: its promoted model, else the base."""
    from sam_engine.learned.engine import load_learned

    p = registry.promoted_for(recipe, root)
    spec = p.model_id if p is not None else base
    return load_learned(registry.resolve(spec, root)), spec


def tune(req: TuneRequest, *, progress: bool = True,
         on_step: Callable[[int, int], None] | None = None) -> TuneOutcome:
    """Split, measure, train, gate, register; on_step(step, total) after each step of the
    final training; an exception it raises stops the run (with checkpoint_dir set, the last
    checkpoint written, every settings.checkpoint_every steps, lets the same request resume)."""
    train_set, held = split(req.data.images, req.held_out, req.salt)
    if not train_set:
        raise SamEngineError(f"all {len(req.data.images)} images fell in the held-out share; "
                             "give more images or a smaller --held-out")
    if not held:
        raise SamEngineError(f"no image fell in the held-out share ({req.held_out:.0%} of "
                             f"{len(req.data.images)}); give more images")
    n_train = sum(len(i.instances) for i in train_set)
    log.info("split: %d images (%d masks) to train, %d held out", len(train_set), n_train,
             len(held))
    cur_engine, cur_name = current_engine(req.recipe, req.root, req.base)
    before = evaluate(cur_engine, held, progress=progress, desc=f"held-out {cur_name}")
    base_folder = registry.resolve(req.base, req.root)
    model, base_manifest = load_model(base_folder)

    curve = []
    for n in req.curve:
        if n >= n_train:
            break
        sub = _subset(train_set, n)
        m, _ = load_model(base_folder)
        train(m, sub, req.settings, progress=progress, desc=f"curve {n} masks")
        h = evaluate(LearnedEngine(m, base_manifest), held, desc=f"held-out after {n}")
        curve.append({"masks": sum(len(i.instances) for i in sub), "box": h.mean("box"),
                      "point": h.mean("point")})

    ck = None
    if req.checkpoint_dir is not None:
        ck = Path(req.checkpoint_dir) / f"{req.name}.{req.data.digest()[:12]}.ckpt"
    t0 = time.perf_counter()
    step_cb = None if on_step is None else (lambda step, _loss: on_step(step, req.settings.steps))
    report = train(model, train_set, req.settings, checkpoint=ck,
                   data_digest=req.data.digest(), progress=progress, on_step=step_cb,
                   desc=f"tune {req.name}")
    seconds = time.perf_counter() - t0
    version = registry.next_version(req.name, req.root)
    manifest = ModelManifest(
        name=req.name, version=version, net=model.config.to_dict(),
        base=base_manifest.model_id, base_sha256=base_manifest.weights_sha256,
        data={"source": req.data.source, "digest": req.data.digest(),
              "images": len(req.data.images), "instances": req.data.n_instances,
              "classes": req.data.classes()},
        split={"held_out": req.held_out, "salt": req.salt,
               "train_images": sorted(i.digest for i in train_set),
               "held_out_images": sorted(i.digest for i in held)},
        settings=req.settings.to_dict(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tuned = LearnedEngine(model, manifest)
    after = evaluate(tuned, held, progress=progress, desc=f"held-out {req.name}")
    curve.append({"masks": n_train, "box": after.mean("box"), "point": after.mean("point")})
    gain = score(after) - score(before)
    promoted = gain > req.margin
    reason = (f"held-out mean IoU (box + click) {score(after):.3f} vs {score(before):.3f} for "
              f"{cur_name}: {'+' if gain >= 0 else ''}{gain:.3f}, "
              f"{'above' if promoted else 'not above'} the margin {req.margin:.3f}")
    manifest.metrics = {"held_out": after.table(), "current": {"model": cur_name,
                        "held_out": before.table()}, "gate": {"promoted": promoted,
                        "margin": req.margin, "gain": round(gain, 4), "reason": reason},
                        "curve": curve, "train_seconds": round(report.seconds, 1),
                        "steps": report.steps}
    folder = registry.model_dir(req.name, version, req.root)
    save_model(folder, model.state_dict(), manifest)
    if promoted:
        registry.promote(req.recipe, manifest, reason, req.root)
    if ck is not None:
        ck.unlink(missing_ok=True)
    return TuneOutcome(manifest, folder, before, after, cur_name, promoted, reason, curve,
                       seconds, list(req.data.problems))
