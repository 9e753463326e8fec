"""`sam-inspect demo`: inspect the bundled sample images (batch pipeline, demo outputs)."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np

from app.batch.discovery import find_images
from app.batch.inspect_image import ImageRecord, Job, Loaded, Task
from app.batch.local_backend import run_local
from app.batch.prompt_sources import FilePrompts
from app.inspection.recipe import load_recipe
from app.outputs import atomic_write
from app.outputs.overlay import draw_overlay, label_map
from app.shell.cli_args import check_writable_dir
from app.shell.commands.models import add_checkpoint_check_args, checkpoint_check_options
from app.store import InspectionStore
from sam_engine.factory import ENGINE_NAMES, load_engine

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "samples"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled sample parts and write the results")
    p.add_argument("--samples", type=Path, default=SAMPLES, help="folder of sample images")
    p.add_argument("--out", type=Path, default=REPO / "results" / "demo", help="results folder")
    p.add_argument("--recipe", type=Path, default=SAMPLES / "recipes" / "demo_part.toml",
                   help="recipe with calibration and tolerances")
    p.add_argument("--engine", choices=ENGINE_NAMES, default="auto")
    p.add_argument("--model", help="SAM model id (vit_b, vit_h, ...)")
    p.add_argument("--checkpoint", help="SAM checkpoint file")
    add_checkpoint_check_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The samples through the batch pipeline (app.batch: pipelined load / encode / finish),
    with the demo's own outputs: IoU against the samples' ground truth, overlays, a fresh
    database each run."""
    out: Path = args.out
    check_writable_dir(out)  # unwritable --out and a bad recipe: said before the engine loads
    recipe = load_recipe(args.recipe)
    engine = load_engine(args.engine, model=args.model, checkpoint=args.checkpoint,
                         **checkpoint_check_options(args))
    print(f"engine: {engine.info.describe()}")
    images = [f for f in find_images(args.samples) if "/" not in f.rel]  # not gt/
    if not images:
        print(f"no sample images in {args.samples}")
        return 1
    db = out / "inspections.db"  # the demo's own results: each run starts a fresh database
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        f.unlink(missing_ok=True)
    store = InspectionStore(db)
    job = Job(FilePrompts.open(args.samples), recipe, lot="demo", station="demo",
              operator="demo")
    rows, ious, failed, verdicts = [], [], [], {}

    def on_record(record: ImageRecord, loaded: Loaded) -> None:
        ins = record.inspection
        path = Path(ins.image_path)
        boxes = [f.prompts["boxes"][0] for f in ins.findings]
        masks = [f.mask for f in ins.findings]
        gt_path = args.samples / "gt" / path.name
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED) if gt_path.exists() else None
        specs = loaded.specs  # label k + 1 of the ground truth is sidecar defect k
        here = []
        for f, box in zip(ins.findings, boxes, strict=True):
            k = next(i for i, s in enumerate(specs) if s.box is not None and
                     np.allclose(s.box, box))
            iou = _iou(f.mask, gt == k + 1) if gt is not None else float("nan")
            here.append(iou)
            m = f.measurements
            rows.append([path.name, k + 1, f.defect_class, *[int(v) for v in box], m.area_px,
                         _fmt(m.area_mm2), _fmt(m.feret_max_mm), _fmt(m.thickness_mm),
                         f"{f.score:.3f}", f"{iou:.3f}"])
        ious.extend(here)
        verdicts[path.name] = ins.verdict.status
        store.add_inspection(ins, actor="sam-inspect demo")
        atomic_write.write_png(out / f"{path.stem}_mask.png", label_map(masks, record.size))
        atomic_write.write_png(out / f"{path.stem}_overlay.png",
                               draw_overlay(loaded.rgb, masks, boxes))
        why = "; ".join(r.message for r in ins.verdict.reasons[:2])
        ms = 1e3 * sum(record.seconds.get(k, 0.0) for k in ("encode", "segment"))
        n = f"{len(masks)} defect" + ("" if len(masks) == 1 else "s")
        print(f"  {path.name}: {n}, {ms:.0f} ms, mean IoU vs truth "
              f"{_mean(here)}, {ins.verdict.status}" + (f" ({why})" if why else ""))

    def on_failure(task: Task, exc: BaseException) -> None:
        print(f"  {task.image.path.name}: skipped: {exc}")
        failed.append(task.image.rel)

    try:
        run_local(engine, [Task(f, "") for f in images], job, on_record, on_failure)
    finally:
        store.close()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "defect", "kind", "x0", "y0", "x1", "y1", "area_px", "area_mm2",
                "length_mm", "width_mm", "score", "iou_gt"])
    w.writerows(rows)
    atomic_write.write_text(out / "findings.csv", buf.getvalue())
    known = [v for v in ious if not np.isnan(v)]
    n_ok = len(images) - len(failed)
    summary = {"engine": engine.info.describe(), "images": n_ok,
               "failed": len(failed), "defects": len(rows),
               "recipe": f"{recipe.name} {recipe.version}", "verdicts": verdicts,
               "mean_iou_gt": float(np.mean(known)) if known else None}
    atomic_write.write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"{len(rows)} defects in {n_ok} images ({len(failed)} failed), "
          f"mean IoU vs ground truth {_mean(ious)}")
    n_fail = sum(v != "PASS" for v in verdicts.values())
    print(f"verdicts: {len(verdicts) - n_fail} PASS, {n_fail} FAIL (recipe {recipe.name} "
          f"{recipe.version})")
    print(f"results: {out.resolve()} (masks, overlays, findings.csv, summary.json, "
          "inspections.db)")
    return 1 if failed else 0


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _mean(values: list[float]) -> str:
    known = [v for v in values if not np.isnan(v)]
    return f"{np.mean(known):.3f}" if known else "n/a (no ground truth)"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
