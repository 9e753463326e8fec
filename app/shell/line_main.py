"""`sam-inspect-line IMAGE... --models DIR [--recipe FILE] [--box ... | --point ... | --find ...]`
(also `python -m app.shell.line_main`): the line controller's command, on onnxruntime only (no
torch, no Qt).

Runs encoder + decoder (OnnxEngine; or the learned engine's crop network, OnnxLearnedEngine,
when --models holds a learned-model export), measures every mask (app.inspection.measure:
pixels, and mm when the recipe or --mm-per-px calibrates the image) and, with a recipe, judges
the part against its tolerances (app.inspection.verdict). Writes `<stem>_mask.png` and
`<stem>_result.json` (RESULT_EPILOG below describes both; it is the --help text). The recipe's
prompts are used unless --box/--point are given; frames "relative" and "fiducial" are resolved
on the image (the fiducial is segmented in its recipe box first, and also calibrates the image
when the recipe measures by a fiducial).
When --models holds a finder export (`sam-inspect export-onnx --finder ...`), there are no
prompts: the finder (OnnxFinder) finds every defect of the recipe's classes it knows (or of
--find's), each with its class and score, and the same measuring, judging and outputs follow.
Several images may be given: the models are loaded once, and the run's throughput is printed.
Needs numpy, onnxruntime, OpenCV, and scipy + scikit-image + pycocotools for the measurements,
recipes and verdicts (packaging/line-controller/requirements.txt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.outputs import atomic_write
from app.shell.cli_args import glue_negative_values, parse_numbers
from sam_engine.errors import PromptError, SamEngineError
from sam_engine.image_io import load_image
from sam_engine.onnx.finder_runtime import DEFAULT_THREADS, OnnxFinder, is_finder_export
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
  several images: the worst of them (error before FAIL before PASS); every image that
  could be read is judged and written

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
                     With a finder export also: finder (its classes, the classes looked
                     for and the recipe's classes it does not know), each defect's source,
                     timings_ms per stage (read, preprocess, network, postprocess, measure)
                     and images_per_s (this image, model load excluded); prompts is empty

zero-click (--models holds a finder export): no --box/--point; the recipe's [[prompts]] are
not used. The finder looks for --find's classes, else the recipe's classes it knows (the
others are named on stderr and in the result), else all of its classes.
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


def open_engine(models: Path, quantized: bool = False, threads: int | None = None,
                prefer_tensorrt: bool = False):
    """The prompt engine of an export folder: the learned engine's crop network
    (export-onnx --model learned-base|NAME) or SAM's graphs."""
    kind = OnnxLearnedEngine if is_learned_export(models) else OnnxEngine
    return kind(models, quantized=quantized, threads=threads, prefer_tensorrt=prefer_tensorrt)


def run_line(image: Path, models: Path, prompts: list[LinePrompt], out_dir: Path,
             quantized: bool = False, threads: int | None = None, recipe=None,
             mm_per_px: float | None = None, prefer_tensorrt: bool = False,
             engine=None) -> dict:
    """Segment every prompt on one image, measure, judge against the recipe (when given);
    write the mask PNG and JSON; return the JSON dict. engine: one already loaded from
    `models` (several images), else it is loaded here."""
    from app.inspection.fiducial import image_calibration, locate_fiducial, needs_fiducial
    from app.inspection.findings import prompts_to_dict

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    if engine is None:
        engine = open_engine(models, quantized, threads, prefer_tensorrt)
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
    defects, verdict = judge_masks(masks, scores, classes, [engine.info.name] * len(masks),
                                   cal, recipe)
    t_end = time.perf_counter()
    png = write_mask_png(image, out_dir, masks, size)
    result = {
        "result_format": RESULT_FORMAT, "time": started.isoformat(),
        "image": str(image), "image_sha256": image_sha256, "mask_png": str(png),
        **engine_fields(engine),
        "image_size": list(size),
        "recipe": recipe_fields(recipe),
        "mm_per_px": cal.mm_per_px,
        "timings_ms": {"load": (t_load - t0) * 1e3, "encode": (t_enc - t_load) * 1e3,
                       "decode": (t_dec - t_enc) * 1e3, "measure": (t_end - t_dec) * 1e3},
        "defects": [asdict(d) for d in defects],
        "prompts": [prompts_to_dict(p) for p in resolved],
        "verdict": verdict,
    }
    write_result(image, out_dir, result)
    return result


# ------------------------------------------------------------------ zero-click (finder)
@dataclass(frozen=True)
class LineClasses:
    """What the zero-click path looks for on every image: `wanted` (classes the finder knows),
    and the recipe's classes it does not know (`not_looked_for`: reported, not inspected)."""

    wanted: tuple[str, ...]
    not_looked_for: tuple[str, ...] = ()


def line_classes(finder_classes: Sequence[str], finder_id: str, recipe=None,
                 find: Sequence[str] | None = None) -> LineClasses:
    """The classes to look for (app.finding.classes.choose_classes: `find`'s, every one known
    to the finder; else the recipe's it knows; else all the finder's)."""
    from app.finding.classes import FindError, choose_classes

    try:
        wanted, rest = choose_classes(finder_classes, find,
                                      recipe.class_names if recipe is not None else None,
                                      f"finder {finder_id}")
    except FindError as exc:
        raise PromptError(str(exc)) from None
    return LineClasses(wanted, rest)


def run_find(image: Path, finder: OnnxFinder, plan: LineClasses, out_dir: Path, recipe=None,
             mm_per_px: float | None = None, load_ms: float = 0.0, golden=None) -> dict:
    """Find every defect of plan.wanted on one image (no prompts), measure and judge each as
    the prompt path does (judge_masks), write the mask PNG and JSON; return the JSON dict."""
    from app.inspection.fiducial import image_calibration

    started = datetime.now(UTC)
    t0 = time.perf_counter()
    rgb = load_image(image)
    image_sha256 = _sha256(image)
    t_read = time.perf_counter()
    found = finder.find(rgb, plan.wanted)
    items = list(found.found)
    if golden is not None:  # unlike the good parts: class "unknown", which no recipe passes
        items += golden.find(rgb)
    t_find = time.perf_counter()
    size = found.image_size
    masks = [f.mask for f in items]
    cal = image_calibration(recipe, mm_per_px, None)
    defects, verdict = judge_masks(masks, [f.score for f in items], [f.cls for f in items],
                                   [f.source for f in items], cal, recipe)
    t_end = time.perf_counter()
    png = write_mask_png(image, out_dir, masks, size)
    t_png = time.perf_counter()
    net_ms = {k: float(v) for k, v in found.timings_ms.items()}
    timings = {"load": load_ms, "read": (t_read - t0) * 1e3, **net_ms,
               "measure": (t_end - t_find) * 1e3, "write_png": (t_png - t_end) * 1e3}
    result = {
        "result_format": RESULT_FORMAT, "time": started.isoformat(),
        "image": str(image), "image_sha256": image_sha256, "mask_png": str(png),
        **engine_fields(finder),
        "image_size": list(size),
        "recipe": recipe_fields(recipe),
        "mm_per_px": cal.mm_per_px,
        "finder": {"model_id": finder.model_id, "classes": list(finder.classes),
                   "looked_for": list(plan.wanted), "not_looked_for": list(plan.not_looked_for),
                   "settings": asdict(finder.settings)},
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        "images_per_s": round(1e3 / max((t_png - t0) * 1e3, 1e-6), 3),
        "defects": [asdict(d) | {"source": f.source}
                    for d, f in zip(defects, items, strict=True)],
        "prompts": [],
        "verdict": verdict,
    }
    write_result(image, out_dir, result)
    return result


def check_zero_click(args: argparse.Namespace, recipe) -> None:
    """Refuse what a finder export cannot do: prompts, and a recipe that measures by its
    fiducial (segmenting the fiducial needs a prompt model) without --mm-per-px."""
    from app.inspection.fiducial import needs_fiducial

    if args.box or args.point:
        raise PromptError(f"{args.models} holds a finder, which finds defects without prompts: "
                          "drop --box/--point (or give a prompt model's export)")
    if args.int8:
        raise PromptError(f"{args.models} holds a finder export, which has no int8 copy: "
                          "drop --int8")
    if needs_fiducial(recipe, (), args.mm_per_px):
        raise PromptError(f"recipe {recipe.name} measures by its fiducial, which only a prompt "
                          "model can segment: give --mm-per-px with a finder export")


# ------------------------------------------------------------------ shared by both paths
def judge_masks(masks: Sequence, scores: Sequence[float], classes: Sequence[str],
                sources: Sequence[str], cal, recipe) -> tuple[list[Defect], dict | None]:
    """Measure every mask (numbered 1.. in order) and judge the findings against the recipe
    (when given): (Defect records, verdict dict with "dropped", or None). An empty mask is no
    finding (as in batch runs) but keeps its number."""
    from app.inspection.findings import Finding
    from app.inspection.measure import measure

    datum = recipe.datum if recipe is not None else None
    defects, findings = [], []
    for i, (mask, score, cls, src) in enumerate(zip(masks, scores, classes, sources,
                                                    strict=True), start=1):
        m = measure(mask, cal, datum=datum) if mask.any() else None
        box = m.bbox if m is not None else None
        defects.append(Defect(i, cls, score, int(mask.sum()), box,
                              None if m is None else m.to_dict()))
        if m is not None:
            findings.append(Finding(cls, mask, m, score, None, source=src, number=i))
    verdict = None
    if recipe is not None:
        from app.inspection.verdict import dropped_findings, judge

        verdict = judge(findings, recipe).to_dict()
        verdict["dropped"] = [d.to_dict() for d in dropped_findings(findings, recipe)]
    return defects, verdict


def write_mask_png(image: Path, out_dir: Path, masks: Sequence, size: tuple[int, int]) -> Path:
    """`<stem>_mask.png` (label image, atomically) in out_dir."""
    from app.outputs.overlay import label_map

    png = out_dir / f"{image.stem}_mask.png"
    try:
        atomic_write.write_png(png, label_map(list(masks), size))
    except OSError as exc:
        raise SamEngineError(f"cannot write {png} ({exc}): check the folder's permissions "
                             "and free space") from exc
    return png


def write_result(image: Path, out_dir: Path, result: dict) -> Path:
    """`<stem>_result.json` (atomically) in out_dir."""
    path = out_dir / f"{image.stem}_result.json"
    try:
        atomic_write.write_text(path, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise SamEngineError(f"cannot write {path} ({exc}): check the folder's permissions "
                             "and free space") from exc
    return path


def engine_fields(engine) -> dict:
    """What a result says about the models: model_id, checkpoint_sha256, models, engine,
    providers."""
    return {"model_id": engine.info.model_id, "checkpoint_sha256": engine.info.checkpoint_sha256,
            "models": _model_files(engine), "engine": engine.info.describe(),
            "providers": engine.providers}


def recipe_fields(recipe) -> dict | None:
    return None if recipe is None else {"name": recipe.name, "version": recipe.version,
                                        "path": str(recipe.path)}


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
    p.add_argument("image", type=Path, nargs="+",
                   help="image(s); the models are loaded once for all of them")
    p.add_argument("--models", type=Path, required=True, help="folder written by export-onnx")
    p.add_argument("--recipe", type=Path,
                   help="recipe TOML: calibration, tolerances (-> verdict) and prompts")
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]")
    p.add_argument("--defect-class", default="defect",
                   help="class of the --box/--point defects (default %(default)s)")
    p.add_argument("--find", metavar="CLASS[,CLASS...]",
                   help="finder export only: the classes to look for (default: the recipe's "
                        "classes the finder knows, else all of its classes)")
    p.add_argument("--golden", type=Path, metavar="DIR",
                   help="finder export only: a golden-sample model folder (`sam-inspect "
                        "golden`); regions unlike the good parts become defects of class "
                        "'unknown', which the verdict FAILs (never a silent PASS)")
    p.add_argument("--mm-per-px", type=float, help="calibration (overrides the recipe's)")
    p.add_argument("--out", type=Path, help="output folder (default: next to the image)")
    p.add_argument("--int8", action="store_true", help="use the dynamic-int8 models")
    p.add_argument("--threads", type=int,
                   help="onnxruntime intra-op threads (default: one per core; a finder: "
                        f"{DEFAULT_THREADS})")
    p.add_argument("--tensorrt", action="store_true",
                   help="use TensorRT when this onnxruntime build has it (first run builds "
                        "engines, cached in the models folder)")
    return p


def _guarded(step: Callable[[], object]):
    """step() with the line's error contract: (result, None), or (None, EXIT_ERROR) after the
    message on stderr (a crash must not read as FAIL, exit 1, on the line)."""
    try:
        return step(), None
    except (SamEngineError, ValueError) as exc:  # RecipeError is both
        print(f"sam-inspect-line: error: {exc}", file=sys.stderr)
    except Exception as exc:
        print(f"sam-inspect-line: error: unexpected {type(exc).__name__}: {exc}; please report "
              "it with the image and the models folder", file=sys.stderr)
    return None, EXIT_ERROR


def _summary(res: dict) -> dict:
    status = None if res["verdict"] is None else res["verdict"]["status"]
    return {"mask_png": res["mask_png"],
            "defects": [{k: d[k] for k in ("number", "defect_class", "score", "area_px")}
                        for d in res["defects"]],
            "verdict": status}


def _exit_code(results: Sequence[dict | None]) -> int:
    if any(r is None for r in results):
        return EXIT_ERROR
    if any(r["verdict"] is not None and r["verdict"]["status"] == "FAIL" for r in results):
        return EXIT_FAIL
    return EXIT_PASS


def throughput_line(results: Sequence[dict], seconds: float, load_ms: float) -> str:
    """One line: images/s over the run (the models, loaded once in load_ms, not counted) and
    the mean per-image time of each stage in the results' timings_ms."""
    n = len(results)
    stages: dict[str, float] = {}
    for r in results:
        for k, v in r.get("timings_ms", {}).items():
            if k != "load":
                stages[k] = stages.get(k, 0.0) + float(v) / n
    per = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
    rate = n / seconds if seconds > 0 else float("inf")
    return (f"throughput: {n} image(s) in {seconds:.3f} s = {rate:.2f} images/s; per image "
            f"ms: {per}; models loaded once in {load_ms:.1f} ms")


def _check_out_names(images: Sequence[Path], out: Path | None) -> None:
    """Two images with one stem would write the same result files: refuse before any run."""
    seen: dict[tuple[Path, str], Path] = {}
    for img in images:
        key = ((out or img.parent).resolve(), img.stem)
        if key in seen:
            raise PromptError(f"{seen[key]} and {img} would both write {img.stem}_result.json "
                              f"in {key[0]}: give images with different names")
        seen[key] = img


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(glue_negative_values(sys.argv[1:] if argv is None else argv))
    images: list[Path] = args.image

    def setup():
        recipe = None
        if args.recipe is not None:
            from app.inspection.recipe import load_recipe

            recipe = load_recipe(args.recipe)
        _check_out_names(images, args.out)
        if is_finder_export(args.models):
            check_zero_click(args, recipe)
            t0 = time.perf_counter()
            finder = OnnxFinder(args.models, threads=args.threads or DEFAULT_THREADS,
                                prefer_tensorrt=args.tensorrt)
            load_ms = (time.perf_counter() - t0) * 1e3
            find = [c.strip() for c in args.find.split(",") if c.strip()] if args.find else None
            plan = line_classes(finder.classes, finder.model_id, recipe, find)
            if plan.not_looked_for:
                why = "--find leaves them out" if find else "it does not know them"
                print(f"sam-inspect-line: warning: recipe {recipe.name} class(es) "
                      f"{', '.join(plan.not_looked_for)} not looked for ({why}): finder "
                      f"{finder.model_id} knows {', '.join(finder.classes)}", file=sys.stderr)
            golden = None
            if args.golden is not None:
                from sam_engine.finder.anomaly import load_golden

                golden = load_golden(args.golden)
            return lambda img: run_find(img, finder, plan, args.out or img.parent, recipe,
                                        args.mm_per_px, load_ms, golden), True, load_ms
        if args.find:
            raise PromptError(f"--find needs a finder export; {args.models} holds a prompt "
                              "model (give --box/--point or a recipe with [[prompts]])")
        prompts = prompts_from_args(args, recipe)
        if len(images) == 1:  # one image: the engine is loaded inside run_line, as ever
            return lambda img: run_line(img, args.models, prompts, args.out or img.parent,
                                        args.int8, args.threads, recipe, args.mm_per_px,
                                        args.tensorrt), False, 0.0
        t0 = time.perf_counter()
        engine = open_engine(args.models, args.int8, args.threads, args.tensorrt)
        load_ms = (time.perf_counter() - t0) * 1e3
        return lambda img: run_line(img, args.models, prompts, args.out or img.parent,
                                    args.int8, args.threads, recipe, args.mm_per_px,
                                    args.tensorrt, engine=engine), True, load_ms

    ready, error = _guarded(setup)
    if error is not None:
        return error
    run_one, report, load_ms = ready
    results: list[dict | None] = []
    t0 = time.perf_counter()
    for img in images:
        res, _ = _guarded(lambda img=img: run_one(img))
        results.append(res)
    seconds = time.perf_counter() - t0
    if not report:  # one image on a prompt model: the summary as it always was
        if results[0] is None:
            return EXIT_ERROR
        print(json.dumps(_summary(results[0]), indent=1))
        return _exit_code(results)
    summaries = [{"image": str(img), **_summary(r)} if r is not None
                 else {"image": str(img), "error": True} for img, r in zip(images, results,
                                                                           strict=True)]
    print(json.dumps(summaries[0] if len(summaries) == 1 else {"images": summaries}, indent=1))
    done = [r for r in results if r is not None]
    if done:
        print(throughput_line(done, seconds, load_ms))
    return _exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
