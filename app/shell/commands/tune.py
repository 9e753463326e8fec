"""`sam-inspect tune`: learn a site's defects from the masks inspectors accepted.

Reads the training data (the inspection store's accepted defects, a COCO instances file or a
folder of image + mask pairs), splits it by image (a held-out share never trained on), measures
the engine the recipe uses now, tunes a learned model from the base (or, with --base vit_b /
--base-checkpoint FILE, that SAM checkpoint: its decoder, and with --lora its encoder's
attention), measures it again, and writes it to the registry; it becomes the recipe's model
only when it beats the current one on the held-out images by --margin. Ctrl-C or a kill keeps
a checkpoint: the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from sam_engine.errors import SamEngineError
from sam_engine.learned import registry

EXIT_NOT_PROMOTED = 3
LEARNED_STEPS, LEARNED_BATCH, LEARNED_LR = 800, 24, 1e-3


class SamDefaults:
    """sam_tune.SamTuneSettings' defaults, for the help text without importing torch."""

    steps, images_per_step, lr = 1000, 2, 1e-4


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune the learned engine on accepted defects (per recipe)",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--db", metavar="DB", help="the inspection store (path or URL): learn "
                     "from the defects inspectors accepted")
    src.add_argument("--coco", type=Path, metavar="FILE", help="a COCO instances file")
    src.add_argument("--folder", type=Path, metavar="DIR",
                     help="images/ + masks/ (+ manifest.csv), as shared/data/defects")
    p.add_argument("--images", type=Path, metavar="DIR", help="with --coco: the image folder "
                   "(default: the file's folder)")
    p.add_argument("--dataset", help="with --folder: only this dataset or class of the manifest")
    p.add_argument("--recipe", metavar="PART", default="",
                   help="the recipe's part name: filters --db and receives the promotion")
    p.add_argument("--lot", help="with --db: only this lot")
    p.add_argument("--since", type=datetime.fromisoformat, metavar="DATE",
                   help="with --db: inspections from this date (ISO 8601)")
    p.add_argument("--until", type=datetime.fromisoformat, metavar="DATE")
    p.add_argument("--name", help="the tuned model's name (default: the recipe, else 'site')")
    p.add_argument("--base", default=registry.BASE_NAME,
                   help="model to start from: the learned base (default), a tuned learned "
                   "model, or a SAM model id (vit_b, vit_l, vit_h, vit_t) to tune that "
                   "installed checkpoint")
    p.add_argument("--base-checkpoint", type=Path, metavar="FILE",
                   help="tune this SAM checkpoint file (its architecture: --base, else "
                   "known from an official file name)")
    p.add_argument("--lora", action="store_true",
                   help="SAM: also tune LoRA adapters on the image encoder's attention "
                   "(merged into the weights; slower, for more than the decoder can learn)")
    p.add_argument("--lora-rank", type=int, default=8, help="SAM --lora: adapter rank "
                   "(default 8)")
    p.add_argument("--device", default="auto",
                   help="SAM: where to tune: auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--held-out", type=float, default=0.2, metavar="SHARE",
                   help="share of images never trained on (default 0.2)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="promote only when held-out mean IoU beats the current engine's by "
                   "more than this (default 0)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default {LEARNED_STEPS}; SAM {SamDefaults.steps})")
    p.add_argument("--batch", type=int, default=None,
                   help=f"crops per step (default {LEARNED_BATCH}); SAM: images per step "
                   f"(default {SamDefaults.images_per_step})")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {LEARNED_LR:g}; SAM {SamDefaults.lr:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curve", default="", metavar="N,N,...",
                   help="also tune on the first N masks and report held-out IoU (learning "
                   "curve), e.g. 10,30,100")
    p.add_argument("--restart", action="store_true",
                   help="ignore a checkpoint left by an interrupted run")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the outcome as JSON")
    p.add_argument("--finder", action="store_true",
                   help="train the recipe's zero-click finder (every defect of the data's "
                   "classes without prompts) instead of the prompt model")
    p.add_argument("--list", action="store_true", help="list tuned models and promotions")
    p.add_argument("--demote", metavar="PART", help="go back to the previous model of a recipe")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _read(args: argparse.Namespace):
    from sam_engine.learned.data import read_coco, read_folder

    if args.db:
        from app.tuning.sources import StoreFilter, read_store

        return read_store(args.db, StoreFilter(args.recipe or None, args.lot, args.since,
                                               args.until))
    if args.coco:
        return read_coco(args.coco, args.images)
    if args.folder:
        return read_folder(args.folder, dataset=args.dataset)
    raise SamEngineError("give the training data: --db DB, --coco FILE or --folder DIR")


def _list() -> int:
    root = registry.registry_root()
    models = registry.list_models()
    print(f"registry: {root}")
    if not models:
        print("no tuned models yet (`sam-inspect tune --db DB --recipe PART`)")
    for m in models:
        gate = m.metrics.get("gate", {})
        net_kind = m.net.get("kind") if isinstance(m.net, dict) else None
        kind = "SAM delta" if registry.is_sam_delta(m) else (net_kind or "learned")
        print(f"{m.model_id:<28} {kind:<10} base {m.base or '-':<18} "
              f"{'promoted' if gate.get('promoted') else 'not promoted'}: "
              f"{gate.get('reason', '')}")
    return 0


def _base(args: argparse.Namespace) -> str:
    """--base, or for --base-checkpoint without a SAM id the model its official name is."""
    from app.tuning.run import is_sam_base

    sam_id = is_sam_base(args.base)
    if args.base_checkpoint is None:
        if not sam_id and args.lora:
            raise SamEngineError("--lora tunes a SAM checkpoint: give --base vit_b (or "
                                 "another SAM id) or --base-checkpoint FILE")
        return args.base
    if sam_id:
        return args.base
    from sam_engine.weights.registry import spec_for_file

    spec = spec_for_file(args.base_checkpoint)
    if args.base != registry.BASE_NAME or spec is None:
        raise SamEngineError(
            f"--base-checkpoint {args.base_checkpoint}: name its SAM architecture with --base "
            "vit_b, vit_l, vit_h or vit_t" + (f" (not {args.base!r})"
                                              if args.base != registry.BASE_NAME else ""))
    return spec.id


def _settings(args: argparse.Namespace, base: str) -> dict:
    """TuneRequest's settings (learned) or sam_settings (SAM) from the options."""
    from app.tuning.run import is_sam_base

    if is_sam_base(base, args.base_checkpoint):
        from sam_engine.learned.sam_tune import SamTuneSettings

        given = {"steps": args.steps, "images_per_step": args.batch, "lr": args.lr}
        return {"sam_settings": SamTuneSettings(
            seed=args.seed, lora=args.lora, lora_rank=args.lora_rank, device=args.device,
            **{k: v for k, v in given.items() if v is not None})}
    from sam_engine.learned.train import TrainSettings

    return {"settings": TrainSettings(
        steps=args.steps or LEARNED_STEPS, batch=args.batch or LEARNED_BATCH,
        lr=args.lr if args.lr is not None else LEARNED_LR, seed=args.seed)}


def _row(name: str, h) -> str:
    return f"{name:<26}{h.mean('box'):>8.3f}{h.mean('point'):>8.3f}{h.box_fill_mean():>10.3f}"


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    if args.demote:
        now = registry.demote(args.demote)
        print(f"recipe {args.demote} now uses "
              f"{now.model_id if now else 'the default engine (no tuned model)'}")
        return 0
    from app.tuning.run import TuneRequest, tune

    if not 0 < args.held_out < 1:
        raise SamEngineError(f"--held-out must lie between 0 and 1; got {args.held_out}")
    if args.steps is not None and args.steps < 1:
        raise SamEngineError(f"--steps must be at least 1; got {args.steps}")
    base = _base(args)
    try:
        curve = tuple(int(v) for v in args.curve.split(",") if v.strip())
    except ValueError:
        raise SamEngineError(f"--curve takes numbers of masks such as 10,30,100; got "
                             f"{args.curve!r}") from None
    data = _read(args)
    for problem in data.problems:
        print(f"warning: {problem}", file=sys.stderr)
    name = args.name or args.recipe or "site"
    if args.finder:
        return _run_finder(args, data, name)
    ck_dir = registry.registry_root() / ".checkpoints"
    if args.restart:
        for old in ck_dir.glob(f"{name}.*.ckpt"):
            old.unlink()
    print(f"training data: {data.source}: {len(data.images)} images, {data.n_instances} "
          f"masks, classes {', '.join(data.classes())}", file=sys.stderr)
    req = TuneRequest(data=data, name=name, recipe=args.recipe, base=base,
                      held_out=args.held_out, margin=args.margin, curve=curve,
                      checkpoint_dir=ck_dir, base_checkpoint=args.base_checkpoint,
                      **_settings(args, base))
    out = tune(req, progress=not args.no_progress)
    print(f"held-out mean IoU ({len(out.after.classes)} masks){'box':>6}{'click':>8}"
          f"{'box-fill':>10}")
    print(_row(f"current: {out.current}", out.before))
    for rival, h in out.rivals.items():
        print(_row(f"also: {rival}", h))
    print(_row(f"tuned: {out.manifest.model_id}", out.after))
    for cls in sorted(set(out.after.classes)):
        print(f"  {cls:<24}{out.after.mean('box', cls):>8.3f}{out.after.mean('point', cls):>8.3f}"
              f"{out.after.box_fill_mean(cls):>10.3f}  (was {out.before.mean('box', cls):.3f} / "
              f"{out.before.mean('point', cls):.3f})")
    for c in out.curve:
        print(f"  after {c['masks']:>5} masks: box {c['box']:.3f}, click {c['point']:.3f}")
    return _outcome(args, out, {"before": out.before.table(), "after": out.after.table(),
                                "curve": out.curve,
                                "rivals": {k: v.table() for k, v in out.rivals.items()}})


def _outcome(args: argparse.Namespace, out, figures: dict) -> int:
    """The gate's verdict and the model folder on stdout, the outcome as --json; exit code."""
    verdict = "promoted for recipe " + (args.recipe or "(default)") if out.promoted \
        else "kept, not used"
    print(f"{out.manifest.model_id} {verdict}: {out.reason}")
    print(f"model folder: {out.folder}")
    if args.json:
        from sam_engine.learned.weights import write_atomic

        doc = {"model": out.manifest.model_id, "folder": str(out.folder),
               "promoted": out.promoted, "reason": out.reason, "current": out.current,
               **figures, "train_seconds": round(out.train_seconds, 1),
               "problems": out.problems}
        write_atomic(args.json, (json.dumps(doc, indent=2) + "\n").encode())
    return 0 if out.promoted else EXIT_NOT_PROMOTED


def _run_finder(args: argparse.Namespace, data, name: str) -> int:
    """tune --finder: train, measure and gate the recipe's zero-click finder."""
    from app.tuning.finder_run import FinderTuneRequest, tune_finder

    name = args.name or f"{name}-finder"
    ck_dir = registry.registry_root() / ".checkpoints"
    if args.restart:
        for old in ck_dir.glob(f"finder-{name}.*.ckpt"):
            old.unlink()
    print(f"training data: {data.source}: {len(data.images)} images, {data.n_instances} "
          f"defects, classes {', '.join(data.classes())}", file=sys.stderr)
    req = FinderTuneRequest(data=data, name=name, recipe=args.recipe, held_out=args.held_out,
                            margin=args.margin, steps=args.steps, seed=args.seed,
                            checkpoint_dir=ck_dir)
    out = tune_finder(req, progress=not args.no_progress)
    print(f"held-out ({out.after['images'] - out.after['clean_images']} images) and "
          f"{out.after['clean_images']} clean parts:")
    print(f"  {'class':<20}{'pixel IoU':>10}{'recall':>8}{'precision':>10}{'defects':>9}")
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    for cls, v in out.after["per_class"].items():
        print(f"  {cls:<20}{f(v['pixel_iou']):>10}{f(v['recall']):>8}{f(v['precision']):>10}"
              f"{v['true_defects']:>9}")
    print(f"  image-level class accuracy {out.after['class_accuracy']}, false alarms on clean "
          f"parts {out.after['false_alarm_rate']}")
    return _outcome(args, out, {"after": out.after, "before": out.before})
