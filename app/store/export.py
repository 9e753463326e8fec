"""Export the inspection database: CSV (one row per defect) and COCO (instance segmentation)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from pycocotools import mask as coco_mask

from app.findings import Inspection
from app.measure import MM_FIELDS
from app.store.store import InspectionStore

INSPECTION_COLUMNS = (
    "inspection_id",
    "image_path",
    "image_sha256",
    "part_id",
    "serial",
    "lot",
    "station",
    "operator",
    "time",
    "engine",
    "model_id",
    "checkpoint_sha256",
    "recipe_name",
    "recipe_version",
    "verdict",
    "reasons",
)
DEFECT_COLUMNS = (
    "defect_id",
    "defect_class",
    "score",
    "accepted_by",
    "source",
    "area_px",
    "bbox",
    "centroid",
    "feret_max_px",
    "min_width_px",
    "thickness_px",
    "perimeter_px",
    "n_parts",
    "edge_distance_px",
    "datum_distance_px",
    "mm_per_px",
    *MM_FIELDS,
)


def export_csv(store: InspectionStore, out: TextIO, *, lot: str | None = None) -> int:
    """One row per defect (an inspection without defects gets one row with empty defect
    columns); returns the number of rows written."""
    w = csv.writer(out)
    w.writerow(INSPECTION_COLUMNS + DEFECT_COLUMNS)
    n = 0
    for insp in store.iter_inspections(lot=lot):
        head = [
            insp.id,
            insp.image_path,
            insp.image_sha256,
            insp.part_id,
            insp.serial,
            insp.lot,
            insp.station,
            insp.operator,
            insp.time.isoformat(),
            insp.engine,
            insp.model_id,
            insp.checkpoint_sha256 or "",
            insp.recipe_name,
            insp.recipe_version,
            "" if insp.verdict is None else insp.verdict.status,
            "" if insp.verdict is None else "; ".join(r.message for r in insp.verdict.reasons),
        ]
        if not insp.findings:
            w.writerow(head + [""] * len(DEFECT_COLUMNS))
            n += 1
        for f in insp.findings:
            m = {} if f.measurements is None else f.measurements.to_dict()
            vals = [f.id, f.defect_class, f.score, f.accepted_by, f.source]
            for col in DEFECT_COLUMNS[5:]:
                v = m.get(col)
                vals.append(json.dumps(v) if isinstance(v, list) else v)
            w.writerow(head + ["" if v is None else v for v in vals])
            n += 1
    return n


def coco_dataset(store: InspectionStore, *, lot: str | None = None) -> dict:
    """COCO instance-segmentation dict: images, categories (defect classes), annotations with
    RLE segmentations; inspection metadata is kept under each image's "sam_inspect" key."""
    return coco_from_inspections(store.iter_inspections(lot=lot))


def coco_from_inspections(inspections: Iterable[Inspection]) -> dict:
    """The COCO dict of coco_dataset for any stored inspections (e.g. one folder's, in the GUI)."""
    images, annotations, categories = [], [], {}
    for insp in inspections:
        size = next((f.mask.shape for f in insp.findings if f.mask is not None), None)
        images.append(
            {
                "id": insp.id,
                "file_name": insp.image_path,
                "height": None if size is None else int(size[0]),
                "width": None if size is None else int(size[1]),
                "sam_inspect": {k: v for k, v in insp.to_dict().items() if k != "findings"},
            }
        )
        for f in insp.findings:
            if f.mask is None:
                continue
            cat = categories.setdefault(f.defect_class, len(categories) + 1)
            rle = f.to_dict()["mask_rle"]
            enc = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            annotations.append(
                {
                    "id": f.id,
                    "image_id": insp.id,
                    "category_id": cat,
                    "segmentation": rle,
                    "area": int(coco_mask.area(enc)),
                    "bbox": [float(v) for v in coco_mask.toBbox(enc)],
                    "iscrowd": 0,
                    "score": f.score,
                }
            )
    return {
        "info": {"description": "sam-inspect inspection database export"},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": n, "supercategory": "defect"} for n, i in categories.items()
        ],
    }


def export_coco(store: InspectionStore, path: Path, *, lot: str | None = None) -> dict:
    data = coco_dataset(store, lot=lot)
    Path(path).write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data
