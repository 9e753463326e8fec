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
from app.overlay import draw_overlay, label_map
from sam_engine.factory import ENGINE_NAMES, load_engine
from sam_engine.image_io import load_image
from sam_engine.prompts import Prompts

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="segment the bundled sample parts and write the results")
    p.add_argument("--samples", type=Path, default=SAMPLES, help="folder of sample images")
    p.add_argument("--out", type=Path, default=REPO / "results" / "demo", help="results folder")
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
    rows, ious, failed = [], [], 0
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
        for i, (d, mask) in enumerate(zip(defects, masks, strict=True)):
            iou = _iou(mask, gt == i + 1) if gt is not None else float("nan")
            ious.append(iou)
            rows.append([path.name, i + 1, d.get("kind", ""), *[int(v) for v in d["box"]],
                         int(mask.sum()), f"{float(result.scores[i].max()):.3f}", f"{iou:.3f}"])
        atomic_write.write_png(out / f"{path.stem}_mask.png", label_map(masks, rgb.shape[:2]))
        atomic_write.write_png(out / f"{path.stem}_overlay.png", draw_overlay(rgb, masks, boxes))
        print(f"  {path.name}: {len(masks)} defects, {ms:.0f} ms, "
              f"mean IoU vs truth {_mean(ious[len(ious) - len(masks):])}")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "defect", "kind", "x0", "y0", "x1", "y1", "area_px", "score", "iou_gt"])
    w.writerows(rows)
    atomic_write.write_text(out / "findings.csv", buf.getvalue())
    known = [v for v in ious if not np.isnan(v)]
    summary = {"engine": engine.info.describe(), "images": len(images) - failed,
               "failed": failed, "defects": len(rows),
               "mean_iou_gt": float(np.mean(known)) if known else None}
    atomic_write.write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"{len(rows)} defects in {len(images) - failed} images ({failed} failed), "
          f"mean IoU vs ground truth {_mean(ious)}")
    print(f"results: {out.resolve()} (masks, overlays, findings.csv, summary.json)")
    return 1 if failed else 0


def _mean(values: list[float]) -> str:
    known = [v for v in values if not np.isnan(v)]
    return f"{np.mean(known):.3f}" if known else "n/a (no ground truth)"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
