"""`sam-inspect segment IMAGE --box/--point ...`: one image, prompts on the command line; or
`--find CLASSES` (zero-click: the trained finder, taught examples and golden samples of
app.finding find the classes' defects without prompts, measured and, with --recipe, judged).

With --recipe the recipe's pinned model ([model]) is used and its sha256 checked, and
--engine auto prefers the model promoted for the recipe's part name."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from app.inspection.recipe import check_pinned, engine_for_recipe, load_recipe
from app.outputs import atomic_write
from app.outputs.overlay import draw_overlay, label_map
from app.shell.cli_args import MODEL_HELP, check_writable_dir, parse_numbers
from app.shell.commands.models import add_checkpoint_check_args, checkpoint_check_options
from sam_engine.factory import ENGINE_NAMES, load_engine
from sam_engine.image_io import load_image
from sam_engine.prompts import Prompts, validate_prompts


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment one image from point/box prompts")
    p.add_argument("image", type=Path)
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="box in pixels (repeatable: several boxes are decoded together)")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="point in pixels; LABEL 1 = defect (default), 0 = background")
    p.add_argument("--multimask", action="store_true", help="write all candidates, not the best")
    p.add_argument("--out", type=Path, help="output folder (default: next to the image)")
    p.add_argument("--engine", choices=ENGINE_NAMES, default="auto")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--recipe", type=Path, help="recipe TOML: its [model] pin is used (sha256 "
                   "checked); with --engine auto, the model promoted for its part is preferred")
    p.add_argument("--checkpoint", help="SAM checkpoint file")
    add_checkpoint_check_args(p)
    f = p.add_argument_group("zero-click (no prompts)")
    f.add_argument("--find", metavar="CLASS[,CLASS]",
                   help="find every defect of these classes without prompts ('all': every "
                   "class the recipe or the models know)")
    f.add_argument("--finder", help="finder to use: NAME[@V], a model folder or an ONNX finder "
                   "export (default: the one promoted for the recipe's part)")
    f.add_argument("--examples", help="taught-examples model NAME[@V] (default: promoted)")
    f.add_argument("--golden", help="golden-sample model NAME[@V] (default: promoted)")
    f.add_argument("--mm-per-px", type=float, help="scale for measurements in mm")
    p.set_defaults(func=run)


def parse_prompts(boxes: list[str], points: list[str]) -> Prompts:
    bx = [parse_numbers(b, (4,), "box") for b in boxes]
    pts = [parse_numbers(p, (2, 3), "point") for p in points]
    return Prompts(
        points=np.array([p[:2] for p in pts]) if pts else None,
        labels=np.array([int(p[2]) if len(p) == 3 else 1 for p in pts]) if pts else None,
        boxes=np.array(bx) if bx else None,
    )


def run_find(args: argparse.Namespace) -> int:
    """--find: the zero-click path."""
    from app.finding.plan import find_defects, plan_find, to_findings
    from app.inspection.verdict import judge

    if args.box or args.point:
        raise SystemExit("sam-inspect segment: give --find or --box/--point, not both")
    recipe = load_recipe(args.recipe) if args.recipe is not None else None
    out = args.out or args.image.parent
    if args.out is not None or out.is_dir():
        check_writable_dir(out, "--out" if args.out else "the image's folder (no --out)")
    rgb = load_image(args.image)
    wanted = None if args.find.strip() in ("", "all") else \
        [c.strip() for c in args.find.split(",") if c.strip()]
    plan = plan_find(wanted, recipe, finder=args.finder, examples=args.examples,
                     golden=args.golden)
    print(f"looking for {plan.describe()}")
    t0 = time.perf_counter()
    result = find_defects(plan, rgb)
    t1 = time.perf_counter()
    findings = to_findings(result, recipe, args.mm_per_px)
    verdict = judge(findings, recipe) if recipe is not None else None
    masks = [f.mask for f in findings]
    stem = args.image.stem
    atomic_write.write_png(out / f"{stem}_mask.png", label_map(masks, rgb.shape[:2]))
    boxes = [list(f.box) for f in result.found] or None
    atomic_write.write_png(out / f"{stem}_overlay.png", draw_overlay(rgb, masks, boxes))
    info = {"mode": "find", "image": str(args.image), "models": plan.model_id,
            "looked_for": list(plan.wanted), "not_looked_for": list(plan.not_looked_for),
            "find_ms": round((t1 - t0) * 1e3, 1), "timings_ms": result.timings_ms,
            "defects": [{"number": i + 1, "class": f.defect_class,
                         "score": round(float(f.score), 4), "source": f.source,
                         "box": list(fd.box), "area_px": int(fd.area),
                         "measurements": f.measurements.to_dict() if f.measurements else None}
                        for i, (f, fd) in enumerate(zip(findings, result.found, strict=True))],
            "verdict": verdict.to_dict() if verdict is not None else None}
    atomic_write.write_text(out / f"{stem}_result.json", json.dumps(info, indent=2))
    status = f"; verdict {verdict.status}" if verdict is not None else ""
    print(f"found {len(findings)} defect(s){status}")
    print(f"wrote {out / (stem + '_mask.png')}, {stem}_overlay.png, {stem}_result.json")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.find is not None:
        return run_find(args)
    prompts = parse_prompts(args.box, args.point)
    recipe = load_recipe(args.recipe) if args.recipe is not None else None
    out = args.out or args.image.parent
    if args.out is not None or out.is_dir():  # no --out and no folder: load_image says why
        check_writable_dir(out, "--out" if args.out else "the image's folder (no --out)")
    rgb = load_image(args.image)
    validate_prompts(prompts, rgb.shape[:2])  # a bad prompt is reported before the engine loads
    name, model = engine_for_recipe(recipe, args.engine, args.model)
    options = checkpoint_check_options(args)
    if recipe is not None and recipe.model is not None:  # the pin is the expected sha256
        options = {"checkpoint_sha256": recipe.model.sha256, "allow_unverified": True}
    engine = load_engine(name, model=model, checkpoint=args.checkpoint,
                         recipe=recipe.name if recipe is not None else None, **options)
    if recipe is not None:
        check_pinned(recipe, engine.info.model_id, engine.info.checkpoint_sha256)
    t0 = time.perf_counter()
    handle = engine.set_image(rgb)
    t1 = time.perf_counter()
    result = engine.predict(handle, prompts, multimask_output=args.multimask)
    t2 = time.perf_counter()
    nb, nc = result.scores.shape
    masks = [result.mask(b, c) for b in range(nb) for c in range(nc)] if args.multimask \
        else [result.best(b) for b in range(nb)]
    stem = args.image.stem
    atomic_write.write_png(out / f"{stem}_mask.png", label_map(masks, rgb.shape[:2]))
    boxes = list(prompts.boxes) if prompts.boxes is not None else None
    atomic_write.write_png(out / f"{stem}_overlay.png", draw_overlay(rgb, masks, boxes))
    info = {"engine": engine.info.describe(), "image": str(args.image),
            "set_image_ms": round((t1 - t0) * 1e3, 1), "predict_ms": round((t2 - t1) * 1e3, 1),
            "scores": result.scores.round(4).tolist(),
            "areas_px": [int(m.sum()) for m in masks]}
    atomic_write.write_text(out / f"{stem}_result.json", json.dumps(info, indent=2))
    print(json.dumps(info))
    print(f"wrote {out / (stem + '_mask.png')}, {stem}_overlay.png, {stem}_result.json")
    return 0
