"""`sam-inspect tune --finder`: train the recipe's zero-click finder on accepted defects.

The same data, split and registry as the prompt model's tuning (run.py): the held-out images
are never trained on; clean parts (synthetic parts without defects, and any defect-free images
given) teach what is not a defect. The finder is measured on the held-out images (pixel IoU,
defect recall and precision per class, image-level class accuracy) and on clean parts it never
saw (false-alarm rate); it is promoted for the recipe (registry section "finders") when it
beats the finder promoted now by the margin on mean pixel IoU without raising the false-alarm
rate, or, with none promoted, when it finds at least half the held-out defects of some class.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam_engine.errors import SamEngineError
from sam_engine.learned import registry
from sam_engine.learned.data import Dataset, TrainImage, split
from sam_engine.learned.weights import ModelManifest, save_model

log = logging.getLogger(__name__)

CLEAN_TRAIN_SEEDS = range(0, 150)  # synthetic clean parts trained on
CLEAN_TEST_SEEDS = range(50_000, 50_050)  # and others, never trained on, for false alarms


@dataclass(frozen=True)
class FinderTuneRequest:
    data: Dataset
    name: str
    recipe: str = ""
    held_out: float = 0.2
    salt: str = ""
    margin: float = 0.0
    steps: int | None = None
    seed: int = 0
    clean: Sequence[np.ndarray] = ()  # defect-free images of the site (e.g. passed parts)
    synthetic_clean: bool = True
    checkpoint_dir: Path | None = None
    root: Path | None = None


@dataclass
class FinderTuneOutcome:
    manifest: ModelManifest
    folder: Path
    after: dict  # metrics.Tally.summary() on the held-out images + clean parts
    before: dict | None  # the same for the finder promoted now (None: there is none)
    current: str | None
    promoted: bool
    reason: str
    train_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def default_config(classes: Sequence[str], images: Sequence[TrainImage] = ()):
    """The finder for these classes, at the scale of the site's images (geometry_for)."""
    from sam_engine.finder.model import FinderConfig

    return FinderConfig(tuple(classes), geometry=geometry_for(images))


def geometry_for(images: Sequence[TrainImage]):
    """Network input long side: the images' median long side rounded up to 32, within
    160..320 px (small images are not blown up much; larger ones are shrunk so a 1-megapixel
    photo still runs at line speed on a CPU)."""
    from sam_engine.finder.preprocess import FinderGeometry

    if not images:
        return FinderGeometry()
    long = float(np.median([max(im.size) for im in images]))
    return FinderGeometry(long_side=int(min(320, max(160, -(-long // 32) * 32))))


def default_settings(seed: int, steps: int | None):
    from sam_engine.finder.train import FinderSettings

    return FinderSettings(seed=seed, **({"steps": steps} if steps else {}))


def synthetic_clean(seeds) -> list[np.ndarray]:
    from sam_engine.synthetic.hard import make_hard_part

    return [make_hard_part(s, n_defects=0).image for s in seeds]


def evaluate_finder(finder, held: Sequence[TrainImage], clean: Sequence[np.ndarray],
                    classes: Sequence[str] | None = None) -> dict:
    """Tally.summary() of a finder on held-out images and clean images."""
    from sam_engine.finder.metrics import Tally, Truth, truth_from_instances

    classes = tuple(classes or finder.classes)
    tally = Tally()
    for im in held:
        r = finder.find(im.rgb, classes)
        tally.add(r.found, truth_from_instances(im.instances, im.size), classes)
    for rgb in clean:
        r = finder.find(rgb, classes)
        tally.add(r.found, Truth({}, (int(rgb.shape[0]), int(rgb.shape[1]))), classes)
    return tally.summary()


def mean_pixel_iou(summary: dict, classes: Sequence[str] | None = None) -> float:
    vals = [v["pixel_iou"] or 0.0 for c, v in summary["per_class"].items()
            if classes is None or c in classes]
    return float(np.mean(vals)) if vals else 0.0


def _gate(req: FinderTuneRequest, after: dict, before: dict | None,
          cur: str | None) -> tuple[bool, str]:
    new = mean_pixel_iou(after)
    if before is None:
        best_recall = max((v["recall"] or 0.0 for v in after["per_class"].values()), default=0)
        ok = best_recall >= 0.5
        return ok, (f"no finder promoted yet; held-out defect recall {best_recall:.3f} at best "
                    f"({'at least' if ok else 'below'} 0.5), mean pixel IoU {new:.3f}")
    shared = [c for c in after["per_class"] if c in before["per_class"]]
    old = mean_pixel_iou(before, shared)
    new_s = mean_pixel_iou(after, shared)
    fa_new, fa_old = after["false_alarm_rate"] or 0.0, before["false_alarm_rate"] or 0.0
    gain = new_s - old
    ok = gain > req.margin and fa_new <= fa_old + 1e-9
    return ok, (f"held-out mean pixel IoU {new_s:.3f} vs {old:.3f} for {cur} ({gain:+.3f}, "
                f"margin {req.margin:.3f}); false alarms on clean parts {fa_new:.1%} vs "
                f"{fa_old:.1%}")


def tune_finder(req: FinderTuneRequest, *, progress: bool = True,
                on_step: Callable[[int, int], None] | None = None) -> FinderTuneOutcome:
    """Split, train, measure, gate, register a finder for req.recipe."""
    from sam_engine.finder.finder import Finder, load_finder
    from sam_engine.finder.model import FinderNet
    from sam_engine.finder.preprocess import PostSettings
    from sam_engine.finder.train import train_finder

    train_set, held = split(req.data.images, req.held_out, req.salt)
    if not train_set or not held:
        raise SamEngineError(f"{len(req.data.images)} images give {len(train_set)} to train and "
                             f"{len(held)} held out; give more images or another --held-out")
    classes = tuple(req.data.classes())
    if not classes:
        raise SamEngineError("the training data has no defect classes")
    clean_train = list(req.clean) + (synthetic_clean(CLEAN_TRAIN_SEEDS) if req.synthetic_clean
                                     else [])
    clean_test = synthetic_clean(CLEAN_TEST_SEEDS)
    cur = registry.promoted_for(req.recipe, req.root, section="finders") if req.recipe else None
    before = None
    cur_id = None
    if cur is not None:
        try:
            current = load_finder(registry.resolve(cur.model_id, req.root))
            cur_id = cur.model_id
            shared = [c for c in current.classes if c in classes]
            if shared:
                before = evaluate_finder(current, held, clean_test, shared)
        except SamEngineError as exc:
            log.warning("the promoted finder %s cannot be measured (%s)", cur.model_id, exc)
    settings = default_settings(req.seed, req.steps)
    import torch

    torch.manual_seed(settings.seed)  # the initial weights too: one seed, one finder
    net = FinderNet(default_config(classes, train_set))
    digest = req.data.digest()
    ck = None
    if req.checkpoint_dir is not None:
        ck = Path(req.checkpoint_dir) / f"finder-{req.name}.{digest[:12]}.ckpt"
    step_cb = None if on_step is None else (lambda step, _l: on_step(step, settings.steps))
    report = train_finder(net, train_set, clean_train, settings, checkpoint=ck,
                          data_digest=digest, progress=progress, on_step=step_cb,
                          desc=f"finder {req.name}")
    version = registry.next_version(req.name, req.root)
    manifest = ModelManifest(
        name=req.name, version=version,
        net=net.config.to_dict() | {"post": PostSettings().to_dict()},
        data={"source": req.data.source, "digest": digest, "images": len(req.data.images),
              "instances": req.data.n_instances, "classes": list(classes),
              "clean_images": len(req.clean),
              "synthetic_clean": len(CLEAN_TRAIN_SEEDS) if req.synthetic_clean else 0},
        split={"held_out": req.held_out, "salt": req.salt,
               "train_images": sorted(i.digest for i in train_set),
               "held_out_images": sorted(i.digest for i in held)},
        settings=settings.to_dict(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    after = evaluate_finder(Finder(net, manifest), held, clean_test)
    promoted, reason = _gate(req, after, before, cur_id)
    manifest.metrics = {"held_out": after, "current": {"model": cur_id, "held_out": before},
                        "gate": {"promoted": promoted, "margin": req.margin, "reason": reason},
                        "train_seconds": round(report.seconds, 1), "steps": report.steps,
                        "device": report.device}
    folder = registry.model_dir(req.name, version, req.root)
    save_model(folder, net.state_dict(), manifest)
    if promoted:
        registry.promote(req.recipe, manifest, reason, req.root, section="finders")
    if ck is not None:
        ck.unlink(missing_ok=True)
    return FinderTuneOutcome(manifest, folder, after, before, cur_id, promoted, reason,
                             report.seconds, list(req.data.problems))
