"""`sam-inspect-line IMAGE --models DIR [--recipe FILE | --box ... | --point ...]` (also
`python -m app.line_main`): the line controller's command, on onnxruntime only.

Runs encoder + decoder (OnnxEngine), writes `<stem>_mask.png` (label image: 0 background, i = the
i-th prompt's mask, uint8 up to 255 prompts else uint16) and `<stem>_result.json` (model, providers,
timings, and per prompt: class, IoU score, area in pixels, bounding box). Measurements in mm and
the verdict from a recipe's tolerances are not computed here yet (app.measure/app.verdict need
scipy/scikit-image and are not wired in); with --recipe only the recipe's prompts are used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from app.cli_args import parse_numbers
from sam_engine.errors import PromptError, SamEngineError
from sam_engine.image_io import load_image
from sam_engine.onnx_runtime import OnnxEngine
from sam_engine.prompts import Prompts


@dataclass(frozen=True)
class LinePrompt:
    defect_class: str
    prompts: Prompts


@dataclass(frozen=True)
class Defect:
    index: int  # label value in the mask PNG
    defect_class: str
    score: float
    area_px: int
    bbox_xyxy: tuple[int, int, int, int] | None  # inclusive-exclusive pixel box, None if empty


def prompts_from_args(args: argparse.Namespace) -> list[LinePrompt]:
    if args.recipe is not None:
        from app.recipe import load_recipe  # needs the app package (scikit-image)

        recipe = load_recipe(args.recipe)
        return [LinePrompt(p.defect_class, p.to_prompts()) for p in recipe.prompts]
    out = [LinePrompt("defect", Prompts.from_boxes([parse_numbers(b, (4,), "box")]))
           for b in args.box]
    for p in args.point:
        v = parse_numbers(p, (2, 3), "point")
        out.append(LinePrompt("defect", Prompts.from_points([v[:2]], [int(v[2]) if len(v) == 3
                                                                      else 1])))
    if not out:
        raise PromptError("no prompts: give --recipe FILE, or --box X0,Y0,X1,Y1 / --point X,Y")
    return out


def run_line(image: Path, models: Path, prompts: list[LinePrompt], out_dir: Path,
             quantized: bool = False, threads: int | None = None) -> dict:
    """Segment every prompt on one image; write the mask PNG and JSON; return the JSON dict."""
    t0 = time.perf_counter()
    engine = OnnxEngine(models, quantized=quantized, threads=threads)
    t_load = time.perf_counter()
    rgb = load_image(image)
    handle = engine.set_image(rgb)
    t_enc = time.perf_counter()
    labels = np.zeros(handle.original_size, np.uint8 if len(prompts) < 256 else np.uint16)
    defects = []
    for i, lp in enumerate(prompts, start=1):
        masks = engine.predict(handle, lp.prompts)
        for b in range(masks.shape[0]):
            m = masks.best(b)
            labels[m] = i
            ys, xs = np.nonzero(m)
            box = None if len(xs) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                              int(ys.max()) + 1)
            defects.append(Defect(i, lp.defect_class, float(masks.scores[b, masks.best_index(b)]),
                                  int(m.sum()), box))
    t_dec = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{image.stem}_mask.png"
    if not cv2.imwrite(str(png), labels):
        raise SamEngineError(f"cannot write {png}: check the folder's permissions and space")
    result = {
        "image": str(image), "mask_png": str(png), "model_id": engine.info.model_id,
        "engine": engine.info.describe(), "image_size": list(handle.original_size),
        "timings_ms": {"load": (t_load - t0) * 1e3, "encode": (t_enc - t_load) * 1e3,
                       "decode": (t_dec - t_enc) * 1e3},
        "defects": [asdict(d) for d in defects],
        "verdict": None,  # needs recipe tolerances + measurements: not wired in yet
    }
    (out_dir / f"{image.stem}_result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sam-inspect-line",
                                description="Segment defects with exported ONNX models.")
    p.add_argument("image", type=Path)
    p.add_argument("--models", type=Path, required=True, help="folder written by export-onnx")
    p.add_argument("--recipe", type=Path, help="recipe TOML whose prompts are used")
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]")
    p.add_argument("--out", type=Path, help="output folder (default: next to the image)")
    p.add_argument("--int8", action="store_true", help="use the dynamic-int8 models")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prompts = prompts_from_args(args)
        res = run_line(args.image, args.models, prompts, args.out or args.image.parent,
                       args.int8, args.threads)
    except SamEngineError as exc:
        print(f"sam-inspect-line: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: res[k] for k in ("mask_png", "defects")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
