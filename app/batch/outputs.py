"""Writing batch results, every file atomically (app.outputs.atomic_write: temp file + fsync +
rename).

Per image, under OUT: masks/<stem>.png (label map: 0 background, the defect number on each
defect's pixels, later defects winning overlaps; uint8 up to defect 255, else uint16),
overlays/<stem>.png (with --overlays) and records/<stem>.json (the full record: inspection,
findings with RLE masks, measurements, verdict). The job's reports are rebuilt from the records
at the end of every run, so a resumed run reports the images of earlier runs too:
coco.json (app.outputs.coco: RLE masks, or polygons with --coco-polygons; file names relative to
INPUT), findings.csv and findings.jsonl (one row per defect; "defect" is the defect number).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from app.batch.inspect_image import ImageRecord
from app.inspection.findings import defect_numbers
from app.outputs import atomic_write, coco
from app.outputs.overlay import draw_overlay, findings_label_map

FINDING_COLUMNS = (
    "image", "defect", "class", "score", "area_px", "area_mm2", "x0", "y0", "x1", "y1",
    "length_px", "length_mm", "width_px", "width_mm", "verdict",
)


def record_path(out: Path, out_stem: str) -> Path:
    return out / "records" / f"{out_stem}.json"


def write_image_outputs(out: Path, record: ImageRecord, rgb: np.ndarray | None = None) -> None:
    """Mask PNG, optional overlay, then the record (written last: it marks the set complete)."""
    findings = record.inspection.findings
    atomic_write.write_png(out / "masks" / f"{record.out_stem}.png",
                           findings_label_map(findings, record.size))
    if rgb is not None:
        masks = [f.mask for f in findings]
        boxes = [f.measurements.bbox for f in findings]
        atomic_write.write_png(out / "overlays" / f"{record.out_stem}.png",
                               draw_overlay(rgb, masks, boxes, numbers=defect_numbers(findings)))
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
        findings = r.inspection.findings
        for number, f in zip(defect_numbers(findings), findings, strict=True):
            m = f.measurements
            x0, y0, x1, y1 = m.bbox
            rows.append({
                "image": r.rel, "defect": number, "class": f.defect_class, "score": f.score,
                "area_px": m.area_px, "area_mm2": m.area_mm2, "x0": x0, "y0": y0, "x1": x1,
                "y1": y1, "length_px": m.feret_max_px, "length_mm": m.feret_max_mm,
                "width_px": m.thickness_px, "width_mm": m.thickness_mm, "verdict": verdict,
            })
    return rows


def coco_dataset(records: list[ImageRecord], class_order: tuple[str, ...] = (),
                 polygons: bool = False) -> dict:
    """COCO instance segmentation of the records (app.outputs.coco): file names relative to the
    input
    folder, the verdict per image, score and measurements per annotation."""
    images = [coco.CocoImage(Path(r.rel).as_posix(), r.size[0], r.size[1], r.inspection.findings,
                             {"verdict": None if r.inspection.verdict is None
                              else r.inspection.verdict.status})
              for r in records]
    return coco.coco_dataset(images, class_order=class_order, polygons=polygons,
                             description="sam-inspect batch results")


def write_reports(out: Path, records: list[ImageRecord], class_order: tuple[str, ...] = (),
                  polygons: bool = False) -> None:
    """coco.json (polygons: polygon segmentations instead of RLE), findings.csv and
    findings.jsonl from the records (atomically)."""
    rows = finding_rows(records)
    buf = io.StringIO()
    w = csv.DictWriter(buf, FINDING_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: _v(v) for k, v in row.items()} for row in rows)
    atomic_write.write_text(out / "findings.csv", buf.getvalue())
    atomic_write.write_text(out / "findings.jsonl",
                            "".join(json.dumps(row) + "\n" for row in rows))
    atomic_write.write_text(out / "coco.json",
                            json.dumps(coco_dataset(records, class_order, polygons)))
