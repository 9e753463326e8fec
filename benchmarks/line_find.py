"""Zero-click line throughput: the finder export on onnxruntime vs today's `--auto` path.

    python benchmarks/line_find.py --json benchmarks/results/line_find.json
    python benchmarks/line_find.py --finder models/tuned/site-finder/3 --n 10
    python benchmarks/line_find.py --n 2 --train-steps 0   # smoke test

On --n synthetic hard parts (sam_engine.synthetic.hard.make_hard_part(seed, size=(S, S)),
default 1000x1000, written as PNG files so reading and hashing are timed as on the line), and
the demo recipe (samples/recipes/demo_part.toml, --mm-per-px from it), the same images in the
same run:

  zero_click  the line tool's finder path (app.shell.line_main.run_find: read + hash, OnnxFinder
              with --threads onnxruntime threads (default 2, as the line runs), measure every
              found defect, judge with the recipe, write the label PNG and result JSON)
  auto        today's automatic masks: sam_engine.auto_masks.AutoMaskGenerator (16x16 click
              grid) over the default classic engine, as `sam-inspect batch --auto` runs it
              (app.batch.inspect_image.segment), then the same measuring and judging
              (line_main.judge_masks, class "defect") and the same outputs

--finder FOLDER: a trained finder model folder (exported here first, with its check against
PyTorch) or a finder export. Without it a finder of the recipe's classes is trained here on
synthetic parts (--train-steps, default 400; 0: random-initialised weights, whose network
speed is the same but whose number of defects found, so the measure/judge time, is not); the
JSON says which it was and how many defects each path found. One warm-up image per path is
not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEMO_RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"


def write_images(folder: Path, n: int, size: int) -> list[Path]:
    """n synthetic hard parts (seed 0..n-1) of size x size as PNG files."""
    from sam_engine.synthetic.hard import make_hard_part

    out = []
    for seed in range(n):
        path = folder / f"part_{seed:03d}.png"
        rgb = make_hard_part(seed, size=(size, size)).image
        cv2.imwrite(str(path), rgb[..., ::-1])
        out.append(path)
    return out


def synthetic_finder(classes: tuple[str, ...], steps: int, work: Path) -> Path:
    """A finder of the recipe's classes trained `steps` steps on synthetic hard parts (seeds
    10000.., never the timed ones; defect kinds the recipe lacks are left unlabelled), at the
    line's scale (320 px long side): it finds defects as a real finder does, so the measure
    and judge time is realistic."""
    import numpy as np
    import torch

    from sam_engine.finder.model import FinderConfig, FinderNet
    from sam_engine.finder.preprocess import FinderGeometry, PostSettings
    from sam_engine.finder.train import FinderSettings, train_finder
    from sam_engine.learned.data import Instance, make_image
    from sam_engine.learned.weights import ModelManifest, save_model
    from sam_engine.synthetic.hard import make_hard_part

    images, clean = [], []
    for seed in range(10_000, 10_300):
        part = make_hard_part(seed)
        inst = [Instance(d.kind, d.mask) for d in part.instances if d.kind in classes]
        (images if inst else clean).append(
            make_image(part.image, inst) if inst else np.asarray(part.image))
    torch.manual_seed(0)
    net = FinderNet(FinderConfig(classes=classes, geometry=FinderGeometry(long_side=320)))
    train_finder(net, images, clean, FinderSettings(steps=steps), progress=True,
                 desc="synthetic finder")
    folder = work / "synthetic-finder" / "1"
    save_model(folder, net.state_dict(), ModelManifest(
        "synthetic-finder", "1", net.config.to_dict() | {"post": PostSettings().to_dict()}))
    return folder


def finder_export(spec: Path | None, classes: tuple[str, ...], work: Path,
                  train_steps: int = 0) -> tuple[Path, dict]:
    """(export folder, what the JSON says about the finder): --finder's export, its model
    folder exported here, a finder trained on synthetic parts (train_steps > 0), or a
    random-initialised finder of the default architecture."""
    import torch

    from sam_engine.finder.finder import is_finder
    from sam_engine.finder.model import FinderConfig, FinderNet
    from sam_engine.finder.preprocess import PostSettings
    from sam_engine.learned.weights import ModelManifest, save_model
    from sam_engine.onnx.finder_export import export_finder
    from sam_engine.onnx.finder_runtime import is_finder_export

    if spec is not None and is_finder_export(spec):
        return spec, {"source": str(spec), "weights": "trained (an export)"}
    if spec is not None:
        if not is_finder(spec):
            raise SystemExit(f"--finder {spec} is neither a finder model folder nor a finder "
                             "export")
        folder, about = spec, {"source": str(spec), "weights": "trained"}
    elif train_steps > 0:
        folder = synthetic_finder(classes, train_steps, work)
        about = {"source": f"trained here {train_steps} steps on 300 synthetic hard parts "
                           "(seeds 10000-10299, the recipe's defect kinds), 320 px input",
                 "weights": "trained on synthetic parts"}
    else:
        torch.manual_seed(0)
        net = FinderNet(FinderConfig(classes=classes))
        folder = work / "random-finder" / "1"
        save_model(folder, net.state_dict(), ModelManifest(
            "random-finder", "1", net.config.to_dict() | {"post": PostSettings().to_dict()}))
        about = {"source": "random-initialised FinderNet(FinderConfig(classes=recipe classes)), "
                           "torch seed 0",
                 "weights": "random: the network's speed does not depend on its weights' "
                            "values; the number of defects found (so measure/judge time) does"}
    out = work / "finder-export"
    export_finder(folder, out)
    return out, about


def stats(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 2), "p50": round(statistics.median(values), 2),
            "max": round(max(values), 2)}


def mean_stages(results: list[dict]) -> dict:
    keys = [k for k in results[0]["timings_ms"] if k != "load"]
    return {k: round(statistics.fmean(r["timings_ms"][k] for r in results), 2) for k in keys}


def time_zero_click(paths: list[Path], export: Path, recipe, threads: int, out: Path) -> dict:
    from app.shell.line_main import plan_find, run_find
    from sam_engine.onnx.finder_runtime import OnnxFinder

    t0 = time.perf_counter()
    finder = OnnxFinder(export, threads=threads, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    plan = plan_find(finder.classes, finder.model_id, recipe)
    run_find(paths[0], finder, plan, out, recipe)  # warm-up: onnxruntime's first run
    walls, results = [], []
    t_all = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        results.append(run_find(p, finder, plan, out, recipe, load_ms=load_ms))
        walls.append((time.perf_counter() - t) * 1e3)
    seconds = time.perf_counter() - t_all
    return {
        "images_per_s": round(len(paths) / seconds, 3),
        "per_image_ms": stats(walls), "stages_ms": mean_stages(results),
        "model_load_ms": round(load_ms, 1),
        "defects_per_image": round(statistics.fmean(len(r["defects"]) for r in results), 2),
        "verdicts": {s: sum(r["verdict"]["status"] == s for r in results)
                     for s in ("PASS", "FAIL")},
        "onnxruntime_threads": threads, "model_id": finder.model_id,
        "classes_looked_for": list(plan.wanted),
        "geometry": finder.geometry.to_dict(),
    }


def time_auto(paths: list[Path], recipe, threads: int, out: Path) -> dict:
    import torch

    from app.inspection.fiducial import image_calibration
    from app.shell.line_main import judge_masks, write_mask_png, write_result
    from sam_engine.auto_masks import AutoMaskGenerator, AutoMaskSettings
    from sam_engine.factory import load_engine
    from sam_engine.image_io import load_image

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    t0 = time.perf_counter()
    engine = load_engine("classic")
    generator = AutoMaskGenerator(engine, AutoMaskSettings())
    load_ms = (time.perf_counter() - t0) * 1e3
    cal = image_calibration(recipe, None, None)

    def one(path: Path) -> dict:
        t = time.perf_counter()
        rgb = load_image(path)
        t_read = time.perf_counter()
        handle = engine.set_image(rgb)
        t_enc = time.perf_counter()
        masks = generator.generate(handle)
        t_gen = time.perf_counter()
        defects, verdict = judge_masks([m.mask for m in masks], [m.score for m in masks],
                                       ["defect"] * len(masks), [engine.info.name] * len(masks),
                                       cal, recipe)
        t_meas = time.perf_counter()
        write_mask_png(path, out, [m.mask for m in masks], handle.original_size)
        result = {"timings_ms": {"read": (t_read - t) * 1e3, "set_image": (t_enc - t_read) * 1e3,
                                 "auto_masks": (t_gen - t_enc) * 1e3,
                                 "measure": (t_meas - t_gen) * 1e3,
                                 "write_png": (time.perf_counter() - t_meas) * 1e3},
                  "defects": [d.number for d in defects], "verdict": verdict}
        write_result(path, out, result)
        return result

    one(paths[0])  # warm-up
    walls, results = [], []
    t_all = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        results.append(one(p))
        walls.append((time.perf_counter() - t) * 1e3)
    seconds = time.perf_counter() - t_all
    s = generator.settings
    return {
        "images_per_s": round(len(paths) / seconds, 3),
        "per_image_ms": stats(walls), "stages_ms": mean_stages(results),
        "model_load_ms": round(load_ms, 1),
        "defects_per_image": round(statistics.fmean(len(r["defects"]) for r in results), 2),
        "verdicts": {v: sum(r["verdict"]["status"] == v for r in results)
                     for v in ("PASS", "FAIL")},
        "engine": engine.info.describe(), "points_per_side": s.points_per_side,
        "torch_threads": threads,
        "note": "auto masks have class 'defect', which the recipe does not list: every image "
                "with one FAILs (as `batch --auto` judges them)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="images (default %(default)s)")
    ap.add_argument("--size", type=int, default=1000, help="image side (default %(default)s)")
    ap.add_argument("--finder", type=Path, help="trained finder: model folder or export")
    ap.add_argument("--threads", type=int, default=2,
                    help="onnxruntime (and the auto path's torch/OpenCV) threads "
                         "(default %(default)s, as the line runs)")
    ap.add_argument("--no-auto", action="store_true", help="time the zero-click path only")
    ap.add_argument("--train-steps", type=int, default=400,
                    help="without --finder: train one on synthetic parts this many steps "
                         "(0: a random-initialised finder; default %(default)s)")
    ap.add_argument("--json", type=Path, help="write the figures here (atomically)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")

    import onnxruntime as ort

    from app.inspection.recipe import load_recipe
    from app.outputs import atomic_write

    recipe = load_recipe(DEMO_RECIPE)
    with tempfile.TemporaryDirectory(prefix="line_find_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        paths = write_images(work, args.n, args.size)
        print(f"{args.n} images of {args.size}x{args.size} written in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        export, about = finder_export(args.finder, recipe.class_names, work, args.train_steps)
        (work / "zero").mkdir()
        zero = time_zero_click(paths, export, recipe, args.threads, work / "zero")
        print(f"zero-click: {zero['images_per_s']} images/s", file=sys.stderr)
        auto = None
        if not args.no_auto:
            (work / "auto").mkdir()
            auto = time_auto(paths, recipe, args.threads, work / "auto")
            print(f"auto: {auto['images_per_s']} images/s", file=sys.stderr)
    figures = {
        "benchmark": "line_find",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "images": {"n": args.n, "size": [args.size, args.size],
                   "generator": "sam_engine.synthetic.hard.make_hard_part(seed, size), "
                                f"seeds 0..{args.n - 1}, PNG files",
                   "recipe": str(DEMO_RECIPE.relative_to(REPO))},
        "finder": about,
        "zero_click": zero,
        "auto": auto,
        "speedup_zero_click_over_auto": (round(zero["images_per_s"] / auto["images_per_s"], 2)
                                         if auto else None),
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "onnxruntime": ort.__version__,
                    "note": "a shared machine adds noise: compare figures of one run only"},
    }
    print(json.dumps(figures, indent=2))
    if args.json is not None:
        atomic_write.write_text(args.json, json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
