"""Writing batch results, every file atomically (app.atomic_write: temp file + fsync + rename).

Per image, under OUT: masks/<stem>.png (uint16 label map: 0 background, i + 1 = finding i),
overlays/<stem>.png (with --overlays) and records/<stem>.json (the full record: inspection,
findings with RLE masks, measurements, verdict). The job's reports are rebuilt from the records
at the end of every run, so a resumed run reports the images of earlier runs too:
coco.json (instance segmentation, RLE masks), findings.csv and findings.jsonl (one row per
defect).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from app import atomic_write
from app.batch.inspect_image import ImageRecord
from app.overlay import draw_overlay, label_map

FINDING_COLUMNS = (
    "image", "defect", "class", "score", "area_px", "area_mm2", "x0", "y0", "x1", "y1",
    "length_px", "length_mm", "width_px", "width_mm", "verdict",
)


def record_path(out: Path, out_stem: str) -> Path:
    return out / "records" / f"{out_stem}.json"


def write_image_outputs(out: Path, record: ImageRecord, rgb: np.ndarray | None = None) -> None:
    """Mask PNG, optional overlay, then the record (written last: it marks the set complete)."""
    masks = [f.mask for f in record.inspection.findings]
    atomic_write.write_png(out / "masks" / f"{record.out_stem}.png", label_map(masks, record.size))
    if rgb is not None:
        boxes = [f.measurements.bbox for f in record.inspection.findings]
        atomic_write.write_png(out / "overlays" / f"{record.out_stem}.png",
                               draw_overlay(rgb, masks, boxes))
    atomic_write.write_text(record_path(out, record.out_stem), json.dumps(record.to_dict()))


def read_record(out: Path, out_stem: str) -> ImageRecord | None:
    """The stored record of an image, None when missing or unreadable."""
    p = record_path(out, out_stem)
    try:
        return ImageRecord.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _v(x):
    return "" if x is None else (round(x, 4) if isinstance(x, float) else x)


def finding_rows(records: list[ImageRecord]) -> list[dict]:
    """One dict per defect, in image order (the rows of findings.csv / findings.jsonl)."""
    rows = []
    for r in records:
        verdict = r.inspection.verdict.status if r.inspection.verdict is not None else ""
        for i, f in enumerate(r.inspection.findings):
            m = f.measurements
            x0, y0, x1, y1 = m.bbox
            rows.append({
                "image": r.rel, "defect": i + 1, "class": f.defect_class, "score": f.score,
                "area_px": m.area_px, "area_mm2": m.area_mm2, "x0": x0, "y0": y0, "x1": x1,
                "y1": y1, "length_px": m.feret_max_px, "length_mm": m.feret_max_mm,
                "width_px": m.thickness_px, "width_mm": m.thickness_mm, "verdict": verdict,
            })
    return rows


def coco_dataset(records: list[ImageRecord], class_order: tuple[str, ...] = ()) -> dict:
    """COCO instance segmentation: images, categories (recipe classes first), annotations with
    RLE masks, score and measurements."""
    names = list(class_order)
    for r in records:
        for f in r.inspection.findings:
            if f.defect_class not in names:
                names.append(f.defect_class)
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, anns = [], []
    for image_id, r in enumerate(records, 1):
        ins = r.inspection
        images.append({"id": image_id, "file_name": r.rel, "height": r.size[0],
                       "width": r.size[1],
                       "verdict": None if ins.verdict is None else ins.verdict.status})
        for f in ins.findings:
            rle = f.to_dict()["mask_rle"]
            enc = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            with warnings.catch_warnings():  # pycocotools vs numpy 2 deprecation noise
                warnings.simplefilter("ignore", DeprecationWarning)
                area, bbox = int(coco_mask.area(enc)), [float(v) for v in coco_mask.toBbox(enc)]
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "category_id": cat[f.defect_class], "segmentation": rle, "area": area,
                         "bbox": bbox, "iscrowd": 0, "score": f.score,
                         "measurements": f.measurements.to_dict()})
    return {"info": {"description": "sam-inspect batch results"}, "images": images,
            "annotations": anns,
            "categories": [{"id": i, "name": n, "supercategory": "defect"}
                           for n, i in cat.items()]}


def write_reports(out: Path, records: list[ImageRecord], class_order: tuple[str, ...] = ()
                  ) -> None:
    """coco.json, findings.csv and findings.jsonl from the records (atomically)."""
    rows = finding_rows(records)
    buf = io.StringIO()
    w = csv.DictWriter(buf, FINDING_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: _v(v) for k, v in row.items()} for row in rows)
    atomic_write.write_text(out / "findings.csv", buf.getvalue())
    atomic_write.write_text(out / "findings.jsonl",
                            "".join(json.dumps(row) + "\n" for row in rows))
    atomic_write.write_text(out / "coco.json", json.dumps(coco_dataset(records, class_order)))
