"""`sam-inspect batch INPUT --out DIR`: inspect every image under a folder, resumably."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from app.batch import BatchConfig, run_batch
from app.shell.cli_args import MODEL_HELP
from app.shell.commands.models import add_checkpoint_check_args, checkpoint_check_options
from sam_engine.auto_masks import AutoMaskSettings
from sam_engine.factory import ENGINE_NAMES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="inspect every image under a folder (resumable; local or Ray)",
        description="Inspect every image under INPUT (recursive; jpg, png, bmp, tif/tiff incl. "
        "16-bit) and write masks, coco.json, findings.csv/.jsonl and summary.json to --out. "
        "A rerun skips images already done; the exit code is 1 when any image or report "
        "failed, 2 when the job cannot start (e.g. --out not writable or in use by another "
        "run).")
    p.add_argument("input", type=Path, help="image folder (searched recursively) or one image")
    p.add_argument("--out", type=Path, required=True, help="results folder")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out images whose path under INPUT matches (repeatable), e.g. "
                   "'gt/*'")
    src = p.add_argument_group("prompts (the recipe's [[prompts]] unless one of these is given)")
    src.add_argument("--recipe", type=Path, help="recipe TOML: prompts, classes, calibration, "
                     "tolerances, and the model it pins ([model], sha256 checked); --engine "
                     "auto prefers the model promoted for its part")
    src.add_argument("--prompts", type=Path, metavar="DIR",
                     help="per-image prompt files: <stem>.json (ours), <stem>.txt (YOLO), or a "
                     "COCO instances file (DIR itself or DIR/annotations.json); an image "
                     "without one fails (an empty list means: no defects)")
    src.add_argument("--auto", action="store_true", help="automatic mask generation (point "
                     "grid, score/stability filters, NMS, defect-size filters)")
    d = AutoMaskSettings()
    src.add_argument("--auto-class", default="defect", help="class name of automatic masks")
    src.add_argument("--points-per-side", type=int, default=d.points_per_side)
    src.add_argument("--pred-iou-thresh", type=float, default=d.pred_iou_thresh)
    src.add_argument("--stability-thresh", type=float, default=d.stability_score_thresh)
    src.add_argument("--min-area", type=int, default=d.min_area_px, help="px; smaller masks "
                     "are dropped")
    src.add_argument("--max-area-fraction", type=float, default=d.max_area_fraction,
                     help="masks covering more of the image are dropped (the part, background)")
    src.add_argument("--find", metavar="CLASS[,CLASS]", help="zero-click: find every defect "
                     "of these classes without prompts ('all': the recipe's classes the models "
                     "know); trained finder, taught examples and golden samples (app.finding)")
    src.add_argument("--finder", help="with --find: finder NAME[@V], folder or ONNX export "
                     "(default: the one promoted for the recipe's part)")
    src.add_argument("--examples", help="with --find: taught-examples model NAME[@V]")
    src.add_argument("--golden", help="with --find: golden-sample model NAME[@V]")
    eng = p.add_argument_group("engine")
    eng.add_argument("--engine", choices=ENGINE_NAMES, default="auto")
    eng.add_argument("--model", help=MODEL_HELP)
    eng.add_argument("--checkpoint", help="SAM checkpoint file")
    add_checkpoint_check_args(eng)
    eng.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the best available)")
    eng.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    eng.add_argument("--batch-size", type=int, help="images per encoder call (default: 4 on a "
                     "GPU, 1 on a CPU)")
    eng.add_argument("--loaders", type=int, default=2, help="image decoding threads")
    run = p.add_argument_group("run")
    run.add_argument("--force", action="store_true", help="redo images already done")
    run.add_argument("--quiet", action="store_true", help="no progress bar; warnings, errors "
                     "and the final summary only")
    run.add_argument("--overlays", action="store_true", help="also write overlay PNGs")
    run.add_argument("--coco-polygons", action="store_true", help="coco.json with polygon "
                     "masks instead of RLE (for tools that read only polygons, e.g. Label "
                     "Studio; holes are filled)")
    run.add_argument("--report", choices=("md", "html", "pdf"), help="also write an inspection "
                     "report per image to OUT/reports (template wording; see `sam-inspect report`)")
    run.add_argument("--mm-per-px", type=float, help="calibration (overrides the recipe's); "
                     "refused when it makes an image less than 0.1 mm or more than 2 m across "
                     "unless the recipe states [calibration] field_of_view_mm")
    run.add_argument("--db", help="inspection store: file or SQLAlchemy URL (default: "
                     "OUT/inspections.db)")
    run.add_argument("--no-store", action="store_true", help="do not write the inspection store")
    run.add_argument("--lot", default="")
    run.add_argument("--station", default="")
    run.add_argument("--operator", default="batch")
    run.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run on Ray (Ray Data actor pool, one engine per actor); without "
                     "ADDRESS a local Ray is started or joined")
    run.add_argument("--ray-actors", type=int, help="actors (default: one per GPU, else half "
                     "the CPUs)")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    config = BatchConfig(
        input=args.input, out=args.out, exclude=tuple(args.exclude), recipe=args.recipe,
        prompts=args.prompts, auto=args.auto,
        auto_settings=AutoMaskSettings(
            points_per_side=args.points_per_side, pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh, min_area_px=args.min_area,
            max_area_fraction=args.max_area_fraction),
        auto_class=args.auto_class, engine=args.engine, model=args.model,
        find=None if args.find is None else tuple(
            c.strip() for c in args.find.split(",") if c.strip() and c.strip() != "all"),
        finder=args.finder, examples=args.examples, golden=args.golden,
        checkpoint=args.checkpoint, device=args.device, precision=args.precision,
        **checkpoint_check_options(args),
        mm_per_px=args.mm_per_px, force=args.force, quiet=args.quiet, overlays=args.overlays,
        coco_polygons=args.coco_polygons,
        report=args.report,
        db=args.db, no_store=args.no_store, lot=args.lot, station=args.station,
        operator=args.operator, loaders=args.loaders, batch_size=args.batch_size, ray=args.ray,
        ray_actors=args.ray_actors)
    return run_batch(config).exit_code

