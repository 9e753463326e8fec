"""Export one folder's stored annotations: COCO JSON (RLE masks) and one PNG label map per image.

The inspection store is the source of truth; these files are views of it (no Qt here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from app.inspection.findings import Inspection
from app.outputs import atomic_write
from app.outputs.overlay import write_label_png
from app.store.export import coco_from_inspections

COCO_NAME = "annotations_coco.json"
MASKS_DIR = "masks"


@dataclass(frozen=True)
class ExportSummary:
    coco_path: Path
    masks_dir: Path
    images: int
    defects: int


def export_folder(inspections: list[Inspection], out_dir: str | Path) -> ExportSummary:
    """Write out_dir/annotations_coco.json and out_dir/masks/<image stem>.png (label map: 0
    background, the defect's number on its pixels, the same number as in the window, the report
    and the store)."""
    out = Path(out_dir)
    data = coco_from_inspections(inspections)
    coco_path = atomic_write.write_text(out / COCO_NAME, json.dumps(data, indent=1))
    n_defects = 0
    for insp in inspections:
        masks = [f.mask for f in insp.findings if f.mask is not None]
        if not masks:
            continue
        n_defects += len(masks)
        write_label_png(out / MASKS_DIR / f"{Path(insp.image_path).stem}.png", insp.findings,
                        masks[0].shape)
    return ExportSummary(coco_path, out / MASKS_DIR, len(inspections), n_defects)
