"""`sam-inspect-line IMAGE --models DIR [--recipe FILE] [--box ... | --point ...]` (also
`python -m app.shell.line_main`): the line controller's command, on onnxruntime only (no torch, no
Qt).

Runs encoder + decoder (OnnxEngine; or the learned engine's crop network, OnnxLearnedEngine,
when --models holds a learned-model export), measures every mask (app.inspection.measure:
pixels, and mm when the recipe or --mm-per-px calibrates the image) and, with a recipe, judges
the part against its tolerances (app.inspection.verdict). Writes `<stem>_mask.png` and
`<stem>_result.json` (RESULT_EPILOG below describes both; it is the --help text). The recipe's
prompts are used unless --box/--point are given; frames "relative" and "fiducial" are resolved
on the image (the fiducial is segmented in its recipe box first, and also calibrates the image
when the recipe measures by a fiducial).
Needs numpy, onnxruntime, OpenCV, and scipy + scikit-image + pycocotools for the measurements,
recipes and verdicts (packaging/line-controller/requirements.txt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.outputs import atomic_write
from app.shell.cli_args import glue_negative_values, parse_numbers
from sam_engine.errors import PromptError, SamEngineError
from sam_engine.image_io import load_image
from sam_engine.onnx.learned_runtime import OnnxLearnedEngine, is_learned_export
from sam_engine.onnx.runtime import OnnxEngine
from sam_engine.prompts import Prompts

RESULT_FORMAT = 2

EXIT_PASS = 0  # verdict PASS, or no --recipe (no verdict): results written
EXIT_FAIL = 1  # verdict FAIL: results written
EXIT_ERROR = 2  # nothing judged: bad arguments, image, models, recipe or output folder

RESULT_EPILOG = f"""\
exit status:
  {EXIT_PASS}  PASS (or, without --recipe, segmentation done); results written
  {EXIT_FAIL}  FAIL; results written
  {EXIT_ERROR}  error (bad arguments, unreadable image, models or recipe, output not
     writable); the message on stderr says what to do; no verdict

outputs (in --out, default the image's folder):
  <stem>_mask.png    label image: 0 background, N on the pixels of defect number N (later
                     defects win overlaps); 8-bit up to 255 defects, else 16-bit
  <stem>_result.json result_format {RESULT_FORMAT}: time (UTC, ISO 8601), image and
                     image_sha256 (of the file's bytes), model_id, checkpoint_sha256 (as
                     recorded by export-onnx; null if it did not compute one; a learned
                     export: its learned.onnx's), models (per
                     role: file, sha256 checked against the manifest at load, precision),
                     engine, providers, timings_ms, defects (number = the label value in the
                     PNG, class, score, area_px, bbox, measurements), prompts, and verdict
                     (status, reasons naming the defect_number, and dropped: the defects
                     below their class's min_score, left out of the verdict)
"""


@dataclass(frozen=True)
class LinePrompt:
    """One prompt to segment: given Prompts, or a recipe PromptSpec resolved per image."""

    defect_class: str
    prompts: Prompts | None = None
    spec: object | None = None  # app.inspection.recipe.PromptSpec


@dataclass(frozen=True)
class Defect:
    number: int  # the defect number: its label value in the mask PNG, reasons' defect_number
    defect_class: str
    score: float
    area_px: int
    bbox_xyxy: tuple[int, int, int, int] | None  # inclusive-exclusive pixel box, None if empty
    measurements: dict | None = None  # app.inspection.measure.Measurements.to_dict(); None if empty


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
    from app.inspection.fiducial import image_calibration, locate_fiducial, needs_fiducial
    from app.inspection.findings import Finding, prompts_to_dict
    from app.inspection.measure import measure
    from app.outputs.overlay import label_map

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    # a learned-engine export (export-onnx --model learned-base|NAME) or SAM's graphs
    kind = OnnxLearnedEngine if is_learned_export(models) else OnnxEngine
    engine = kind(models, quantized=quantized, threads=threads,
                  prefer_tensorrt=prefer_tensorrt)
    t_load = time.perf_counter()
    rgb = load_image(image)
    image_sha256 = _sha256(image)
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
        if m is not None:  # an empty mask is no finding (as in batch runs); it keeps its number
            findings.append(Finding(cls, mask, m, score, None, source=engine.info.name,
                                    number=i))
    verdict = None
    if recipe is not None:
        from app.inspection.verdict import dropped_findings, judge

        verdict = judge(findings, recipe).to_dict()
        verdict["dropped"] = [d.to_dict() for d in dropped_findings(findings, recipe)]
    t_end = time.perf_counter()
    png = out_dir / f"{image.stem}_mask.png"
    try:
        atomic_write.write_png(png, label_map(masks, size))
    except OSError as exc:
        raise SamEngineError(f"cannot write {png} ({exc}): check the folder's permissions "
                             "and free space") from exc
    result = {
        "result_format": RESULT_FORMAT, "time": started.isoformat(),
        "image": str(image), "image_sha256": image_sha256, "mask_png": str(png),
        "model_id": engine.info.model_id, "checkpoint_sha256": engine.info.checkpoint_sha256,
        "models": _model_files(engine),
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
    path = out_dir / f"{image.stem}_result.json"
    try:
        atomic_write.write_text(path, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise SamEngineError(f"cannot write {path} ({exc}): check the folder's permissions "
                             "and free space") from exc
    return result


def _sha256(path: Path) -> str:
    """sha256 of a file's bytes (what `sha256sum` prints)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError as exc:
        raise SamEngineError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _model_files(engine) -> dict:
    """role -> file, sha256, precision of each ONNX file the engine loaded; OnnxEngine checks
    each file's sha256 against its manifest when it loads it (empty when the engine does not
    say which files it loaded: no unchecked digest is reported)."""
    files = getattr(engine, "files", None) or {}
    precisions = getattr(engine, "precisions", {}) or {}
    return {role: {"path": f.path, "sha256": f.sha256,
                   "precision": precisions.get(role, "int8" if f.quantized else "float32")}
            for role, f in sorted(files.items())}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam-inspect-line",
                                description="Segment, measure and judge defects with exported "
                                            "ONNX models (no PyTorch needed).",
                                epilog=RESULT_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = build_parser().parse_args(glue_negative_values(sys.argv[1:] if argv is None else argv))
    try:
        recipe = None
        if args.recipe is not None:
            from app.inspection.recipe import load_recipe

            recipe = load_recipe(args.recipe)
        prompts = prompts_from_args(args, recipe)
        res = run_line(args.image, args.models, prompts, args.out or args.image.parent,
                       args.int8, args.threads, recipe, args.mm_per_px, args.tensorrt)
    except (SamEngineError, ValueError) as exc:  # RecipeError is both
        print(f"sam-inspect-line: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a crash must not read as FAIL (exit 1) on the line
        print(f"sam-inspect-line: error: unexpected {type(exc).__name__}: {exc}; please report "
              "it with the image and the models folder", file=sys.stderr)
        return EXIT_ERROR
    status = None if res["verdict"] is None else res["verdict"]["status"]
    summary = {"mask_png": res["mask_png"],
               "defects": [{k: d[k] for k in ("number", "defect_class", "score", "area_px")}
                           for d in res["defects"]],
               "verdict": status}
    print(json.dumps(summary, indent=1))
    return EXIT_FAIL if status == "FAIL" else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
