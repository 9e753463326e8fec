"""`sam-inspect-line IMAGE --models DIR [--recipe FILE] [--box ... | --point ...]` (also
`python -m app.line_main`): the line controller's command, on onnxruntime only (no torch, no Qt).

Runs encoder + decoder (OnnxEngine), measures every mask (app.measure: pixels, and mm when the
recipe or --mm-per-px calibrates the image) and, with a recipe, judges the part against its
tolerances (app.verdict). Writes `<stem>_mask.png` (label image: 0 background, i = the i-th
defect's mask, uint8 up to 255 defects else uint16) and `<stem>_result.json` (model,
providers, timings, per defect: class, IoU score, area, box, measurements; the verdict).
The recipe's prompts are used unless --box/--point are given; frames "relative" and
"fiducial" are resolved on the image (the fiducial is segmented in its recipe box first, and
also calibrates the image when the recipe measures by a fiducial).
Needs numpy, onnxruntime, OpenCV, and scipy + scikit-image + pycocotools for the measurements,
recipes and verdicts (packaging/line-controller/requirements.txt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app import atomic_write
from app.cli_args import parse_numbers
from sam_engine.errors import PromptError, SamEngineError
from sam_engine.image_io import load_image
from sam_engine.onnx_runtime import OnnxEngine
from sam_engine.prompts import Prompts


@dataclass(frozen=True)
class LinePrompt:
    """One prompt to segment: given Prompts, or a recipe PromptSpec resolved per image."""

    defect_class: str
    prompts: Prompts | None = None
    spec: object | None = None  # app.recipe.PromptSpec


@dataclass(frozen=True)
class Defect:
    index: int  # label value in the mask PNG
    defect_class: str
    score: float
    area_px: int
    bbox_xyxy: tuple[int, int, int, int] | None  # inclusive-exclusive pixel box, None if empty
    measurements: dict | None = None  # app.measure.Measurements.to_dict(); None if empty


def prompts_from_args(args: argparse.Namespace, recipe=None) -> list[LinePrompt]:
    """--box/--point prompts (class --defect-class), else the recipe's prompts."""
    out = [LinePrompt(args.defect_class, Prompts.from_boxes([parse_numbers(b, (4,), "box")]))
           for b in args.box]
    for p in args.point:
        v = parse_numbers(p, (2, 3), "point")
        out.append(LinePrompt(args.defect_class,
                              Prompts.from_points([v[:2]], [int(v[2]) if len(v) == 3 else 1])))
    if not out and recipe is not None:
        out = [LinePrompt(s.defect_class, spec=s) for s in recipe.prompts]
    if not out:
        raise PromptError("no prompts: give --box X0,Y0,X1,Y1 / --point X,Y, or a --recipe "
                          "FILE with [[prompts]]")
    return out


def _resolve(prompts: list[LinePrompt], size: tuple[int, int], fid_xy) -> list[Prompts]:
    out = []
    for lp in prompts:
        if lp.prompts is not None:
            out.append(lp.prompts)
            continue
        try:
            out.append(lp.spec.to_prompts(size, fid_xy))
        except ValueError as exc:
            raise PromptError(f"recipe prompt for {lp.defect_class}: {exc}") from None
    return out


def run_line(image: Path, models: Path, prompts: list[LinePrompt], out_dir: Path,
             quantized: bool = False, threads: int | None = None, recipe=None,
             mm_per_px: float | None = None, prefer_tensorrt: bool = False) -> dict:
    """Segment every prompt on one image, measure, judge against the recipe (when given);
    write the mask PNG and JSON; return the JSON dict."""
    from app.fiducial import image_calibration, locate_fiducial, needs_fiducial
    from app.findings import Finding, prompts_to_dict
    from app.measure import measure

    t0 = time.perf_counter()
    engine = OnnxEngine(models, quantized=quantized, threads=threads,
                        prefer_tensorrt=prefer_tensorrt)
    t_load = time.perf_counter()
    rgb = load_image(image)
    handle = engine.set_image(rgb)
    size = handle.original_size
    t_enc = time.perf_counter()
    fid_mask = fid_xy = None
    if needs_fiducial(recipe, (getattr(lp.spec, "frame", "pixels") for lp in prompts),
                      mm_per_px):
        fid_mask, fid_xy = locate_fiducial(engine, handle, recipe)
    resolved = _resolve(prompts, size, fid_xy)
    masks, scores, classes = [], [], []
    for lp, p in zip(prompts, resolved, strict=True):
        res = engine.predict(handle, p, multimask_output=p.n_boxes == 0)
        for b in range(res.shape[0]):
            masks.append(res.best(b))
            scores.append(float(res.scores[b, res.best_index(b)]))
            classes.append(lp.defect_class)
    t_dec = time.perf_counter()
    cal = image_calibration(recipe, mm_per_px, fid_mask)
    datum = recipe.datum if recipe is not None else None
    defects, findings = [], []
    for i, (mask, score, cls) in enumerate(zip(masks, scores, classes, strict=True), start=1):
        m = measure(mask, cal, datum=datum) if mask.any() else None
        box = m.bbox if m is not None else None
        defects.append(Defect(i, cls, score, int(mask.sum()), box,
                              None if m is None else m.to_dict()))
        if m is not None:  # an empty mask is no finding (as in batch runs)
            findings.append(Finding(cls, mask, m, score, None, source=engine.info.name))
    verdict = None
    if recipe is not None:
        from app.verdict import judge

        verdict = judge(findings, recipe).to_dict()
    t_end = time.perf_counter()
    labels = np.zeros(size, np.uint8 if len(masks) < 256 else np.uint16)
    for i, mask in enumerate(masks, start=1):
        labels[mask] = i
    png = out_dir / f"{image.stem}_mask.png"
    try:
        atomic_write.write_png(png, labels)
    except OSError as exc:
        raise SamEngineError(f"cannot write {png} ({exc}): check the folder's permissions "
                             "and free space") from exc
    result = {
        "image": str(image), "mask_png": str(png), "model_id": engine.info.model_id,
        "engine": engine.info.describe(), "providers": engine.providers,
        "image_size": list(size),
        "recipe": None if recipe is None else {"name": recipe.name, "version": recipe.version,
                                               "path": str(recipe.path)},
        "mm_per_px": cal.mm_per_px,
        "timings_ms": {"load": (t_load - t0) * 1e3, "encode": (t_enc - t_load) * 1e3,
                       "decode": (t_dec - t_enc) * 1e3, "measure": (t_end - t_dec) * 1e3},
        "defects": [asdict(d) for d in defects],
        "prompts": [prompts_to_dict(p) for p in resolved],
        "verdict": verdict,
    }
    atomic_write.write_text(out_dir / f"{image.stem}_result.json",
                            json.dumps(result, indent=2) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam-inspect-line",
                                description="Segment, measure and judge defects with exported "
                                            "ONNX models (no PyTorch needed).")
    p.add_argument("image", type=Path)
    p.add_argument("--models", type=Path, required=True, help="folder written by export-onnx")
    p.add_argument("--recipe", type=Path,
                   help="recipe TOML: calibration, tolerances (-> verdict) and prompts")
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]")
    p.add_argument("--defect-class", default="defect",
                   help="class of the --box/--point defects (default %(default)s)")
    p.add_argument("--mm-per-px", type=float, help="calibration (overrides the recipe's)")
    p.add_argument("--out", type=Path, help="output folder (default: next to the image)")
    p.add_argument("--int8", action="store_true", help="use the dynamic-int8 models")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    p.add_argument("--tensorrt", action="store_true",
                   help="use TensorRT when this onnxruntime build has it (first run builds "
                        "engines, cached in the models folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        recipe = None
        if args.recipe is not None:
            from app.recipe import load_recipe

            recipe = load_recipe(args.recipe)
        prompts = prompts_from_args(args, recipe)
        res = run_line(args.image, args.models, prompts, args.out or args.image.parent,
                       args.int8, args.threads, recipe, args.mm_per_px, args.tensorrt)
    except (SamEngineError, ValueError) as exc:  # RecipeError is both
        print(f"sam-inspect-line: error: {exc}", file=sys.stderr)
        return 2
    summary = {"mask_png": res["mask_png"],
               "defects": [{k: d[k] for k in ("index", "defect_class", "score", "area_px")}
                           for d in res["defects"]],
               "verdict": None if res["verdict"] is None else res["verdict"]["status"]}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
