"""`sam-inspect eval DATA_DIR`: segmentation quality on a folder of images with true masks."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.inspection.evaluation import PROMPT_KINDS, EvalResult, evaluate, read_manifest
from app.shell.cli_args import MODEL_HELP
from sam_engine.errors import SamEngineError
from sam_engine.factory import load_engine, model_kind

EVAL_ENGINES = ("classic", "auto", "learned")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="mean IoU of box or point prompts on a folder with true masks",
        description="Prompt the engine with each defect instance of DATA_DIR/"
        "manifest_components.csv (its box, or one click at its most interior pixel) and "
        "compare the best mask with the instance's true mask. The last line printed is "
        "machine-readable: mean_iou=... baseline_box_fill=... n=...")
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    p.add_argument("--engine", choices=EVAL_ENGINES,
                   help="default: the kind of model --model names (learned or SAM), else "
                   "classic")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--prompt", choices=PROMPT_KINDS, default="box")
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate a fixed random subsample of N instances (quick runs)")
    p.add_argument("--min-area", type=int, default=20, metavar="PX",
                   help="skip instances smaller than this many pixels (default 20)")
    p.add_argument("--dataset", help="only rows of this dataset or class (e.g. neu_seg, crack)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def format_table(result: EvalResult) -> str:
    """Per-class table: class, n, mean IoU, box-fill baseline; then the overall row."""
    lines = [f"{'class':<14}{'n':>6}{'mean IoU':>10}{'box fill':>10}"]
    for c in result.per_class():
        lines.append(f"{c.cls:<14}{c.n:>6}{c.mean_iou:>10.4f}{c.box_fill_iou:>10.4f}")
    lines.append(f"{'all':<14}{result.n:>6}{result.mean_iou:>10.4f}{result.box_fill_iou:>10.4f}")
    return "\n".join(lines)


def eval_engine_name(engine: str | None, model: str | None) -> str:
    """The engine to evaluate: --engine, else the kind of model --model names (learned or
    sam), else classic; the classic engine has no model to name."""
    if engine is None:
        return model_kind(model) if model is not None else "classic"
    if engine == "classic" and model is not None:
        raise SamEngineError(f"--model {model}: the classic engine has no model; use --engine "
                             "learned (or auto) to evaluate a learned or tuned model")
    return engine


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise SamEngineError(f"--limit must be a positive number of instances; got {args.limit}")
    rows = read_manifest(args.data_dir, min_area=args.min_area, dataset=args.dataset,
                         limit=args.limit)
    if not rows:
        raise SamEngineError(f"no instances to evaluate in {args.data_dir} "
                             f"(min area {args.min_area} px, dataset {args.dataset or 'any'})")
    engine = load_engine(eval_engine_name(args.engine, args.model), model=args.model)
    result = evaluate(engine, rows, args.prompt, progress=not args.no_progress)
    print(f"engine: {result.engine}; prompt: {args.prompt}")
    print(format_table(result))
    print(result.summary_line())
    return 0
