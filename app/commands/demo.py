"""`sam-inspect demo`: inspect the bundled sample images with the default engine."""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import cv2
import numpy as np

from app import atomic_write
from app.findings import Finding, Inspection, prompts_to_dict
from app.measure import measure
from app.overlay import draw_overlay, label_map
from app.recipe import load_recipe
from app.store import InspectionStore
from app.verdict import judge
from sam_engine.factory import ENGINE_NAMES, load_engine
from sam_engine.image_io import image_digest, load_image
from sam_engine.prompts import Prompts

REPO = Path(__file__).resolve().parents[2]
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
    p.set_defaults(func=run)


def read_sidecar(path: Path) -> list[dict]:
    """The defects listed in a sample's JSON sidecar (a list, or {"defects": [...]})."""
    data = json.loads(path.read_text())
    return data["defects"] if isinstance(data, dict) else data


def run(args: argparse.Namespace) -> int:
    engine = load_engine(args.engine, model=args.model, checkpoint=args.checkpoint)
    print(f"engine: {engine.info.describe()}")
    images = sorted(p for p in args.samples.glob("*.png"))
    if not images:
        print(f"no sample images in {args.samples}")
        return 1
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(args.recipe)
    calibration = recipe.calibrate()
    db = out / "inspections.db"  # the demo's own results: each run starts a fresh database
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        f.unlink(missing_ok=True)
    store = InspectionStore(db)
    rows, ious, failed, verdicts = [], [], 0, {}
    for path in images:
        try:
            rgb = load_image(path)
            defects = read_sidecar(path.with_suffix(".json"))
        except Exception as exc:  # one bad sample must not stop the rest
            print(f"  {path.name}: skipped: {exc}")
            failed += 1
            continue
        gt_path = args.samples / "gt" / path.name
        gt = cv2.imread(str(gt_path), cv2.IMREAD_UNCHANGED) if gt_path.exists() else None
        t0 = time.perf_counter()
        handle = engine.set_image(rgb)
        boxes = np.array([d["box"] for d in defects], dtype=np.float64)
        result = engine.predict(handle, Prompts.from_boxes(boxes), multimask_output=False)
        masks = [result.best(b) for b in range(len(boxes))]
        ms = (time.perf_counter() - t0) * 1e3
        findings = []
        for i, (d, mask) in enumerate(zip(defects, masks, strict=True)):
            iou = _iou(mask, gt == i + 1) if gt is not None else float("nan")
            ious.append(iou)
            m = measure(mask, calibration, datum=recipe.datum) if mask.any() else None
            score = float(result.scores[i].max())
            findings.append(Finding(d.get("kind", "defect"), mask, m, score,
                                    prompts_to_dict(Prompts.from_boxes([d["box"]])),
                                    source=engine.info.name))
            rows.append([path.name, i + 1, d.get("kind", ""), *[int(v) for v in d["box"]],
                         int(mask.sum()), _fmt(m and m.area_mm2), _fmt(m and m.feret_max_mm),
                         _fmt(m and m.thickness_mm), f"{score:.3f}", f"{iou:.3f}"])
        verdict = judge(findings, recipe)
        verdicts[path.name] = verdict.status
        store.add_inspection(Inspection(
            image_path=str(path), image_sha256=image_digest(rgb), part_id=path.stem,
            lot="demo", station="demo", operator="demo", engine=engine.info.name,
            model_id=engine.info.model_id, checkpoint_sha256=engine.info.checkpoint_sha256,
            recipe_name=recipe.name, recipe_version=recipe.version, findings=findings,
            verdict=verdict), actor="sam-inspect demo")
        atomic_write.write_png(out / f"{path.stem}_mask.png", label_map(masks, rgb.shape[:2]))
        atomic_write.write_png(out / f"{path.stem}_overlay.png", draw_overlay(rgb, masks, boxes))
        why = "; ".join(r.message for r in verdict.reasons[:2])
        print(f"  {path.name}: {len(masks)} defects, {ms:.0f} ms, mean IoU vs truth "
              f"{_mean(ious[len(ious) - len(masks):])}, {verdict.status}"
              + (f" ({why})" if why else ""))
    store.close()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "defect", "kind", "x0", "y0", "x1", "y1", "area_px", "area_mm2",
                "length_mm", "width_mm", "score", "iou_gt"])
    w.writerows(rows)
    atomic_write.write_text(out / "findings.csv", buf.getvalue())
    known = [v for v in ious if not np.isnan(v)]
    summary = {"engine": engine.info.describe(), "images": len(images) - failed,
               "failed": failed, "defects": len(rows), "recipe": f"{recipe.name} {recipe.version}",
               "verdicts": verdicts,
               "mean_iou_gt": float(np.mean(known)) if known else None}
    atomic_write.write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"{len(rows)} defects in {len(images) - failed} images ({failed} failed), "
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
