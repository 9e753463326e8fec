"""Export the inspection database: CSV (one row per defect) and COCO (instance segmentation).

Files are written whole or not at all (app.outputs.atomic_write): a database that fails to read
midway
leaves no half-written export behind, and a CSV for stdout is printed only once complete.
COCO comes from the one writer (app.outputs.coco): file names relative to the image root (the
images'
common folder unless given), width and height always set (read from the image file when the
inspection has no masks), stable category ids, RLE or polygon masks.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from app.inspection.findings import Inspection, defect_numbers
from app.inspection.measure import MM_FIELDS
from app.outputs import atomic_write
from app.outputs.coco import CocoBuilder, CocoImage
from app.store.store import InspectionStore, StoreError
from sam_engine.errors import ImageError
from sam_engine.image_io import header_size, load_image

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
    "defect_number",
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


def csv_text(store: InspectionStore, *, lot: str | None = None) -> tuple[str, int]:
    """The CSV export (one row per defect; an inspection without defects gets one row with
    empty defect columns) and its number of rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
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
        for number, f in zip(defect_numbers(insp.findings), insp.findings, strict=True):
            m = {} if f.measurements is None else f.measurements.to_dict()
            vals = [f.id, number, f.defect_class, f.score, f.accepted_by, f.source]
            for col in DEFECT_COLUMNS[6:]:
                v = m.get(col)
                vals.append(json.dumps(v) if isinstance(v, list) else v)
            w.writerow(head + ["" if v is None else v for v in vals])
            n += 1
    return buf.getvalue(), n


def export_csv(store: InspectionStore, out: TextIO, *, lot: str | None = None) -> int:
    """Write the CSV export to a stream once it is complete; returns the number of rows."""
    text, n = csv_text(store, lot=lot)
    out.write(text)
    return n


def export_csv_file(store: InspectionStore, path: str | Path, *, lot: str | None = None) -> int:
    """Write the CSV export to path atomically; returns the number of rows."""
    text, n = csv_text(store, lot=lot)
    atomic_write.write_text(path, text)
    return n


def _mask_size(insp: Inspection) -> tuple[int, int] | None:
    size = next((f.mask.shape for f in insp.findings if f.mask is not None), None)
    return None if size is None else (int(size[0]), int(size[1]))


def _file_size(insp: Inspection, path: Path) -> tuple[int, int]:
    """(height, width) read from the image file: PNG and BMP headers; other formats are
    decoded, as the JPEG EXIF orientation may swap the sides."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
        if head.startswith((b"\x89PNG", b"BM")):
            wh = header_size(head)
            if wh is not None:
                return int(wh[1]), int(wh[0])
        h, w = load_image(path).shape[:2]
        return int(h), int(w)
    except (OSError, ImageError) as exc:
        raise StoreError(
            f"inspection {insp.id}: the size of {insp.image_path} is unknown (no defect masks, "
            f"and the image cannot be read: {exc}); run the export where the images are, or "
            "give --root with the folder the image paths are relative to") from None


def _locate(image_path: str, root: Path | None) -> Path:
    """The image file: the stored path, else (relative paths) under root."""
    p = Path(image_path)
    if root is not None and not p.is_absolute() and not p.is_file():
        p = root / p
    return Path(os.path.abspath(p))


def _relative(path: str | Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        raise StoreError(f"image {path} is not under the image root {root}; give a --root "
                         "that contains every exported image")
    return Path(rel).as_posix()


def coco_from_inspections(inspections: Iterable[Inspection], *, root: str | Path | None = None,
                          class_order: Sequence[str] = (), polygons: bool = False) -> dict:
    """The COCO dict (app.outputs.coco) of stored inspections: file names relative to root (default:
    the images' common folder, kept in info["image_root"]); inspection metadata under each
    image's "sam_inspect" key; annotation "defect_id" is the database id."""
    base = None if root is None else Path(os.path.abspath(root))
    b = CocoBuilder(class_order=class_order, polygons=polygons,
                    description="sam-inspect inspection database export")
    paths: list[Path] = []
    by_digest: dict[str, tuple[int, int]] = {}  # the same pixels have the same size
    unsized: list[tuple[int, Inspection]] = []
    for insp in inspections:
        size = _mask_size(insp)
        if size is not None:
            by_digest[insp.image_sha256] = size
        else:
            unsized.append((len(b.images), insp))
        meta = {k: v for k, v in insp.to_dict().items() if k != "findings"}
        b.add(CocoImage(insp.image_path, *(size or (0, 0)), insp.findings, {"sam_inspect": meta}))
        paths.append(_locate(insp.image_path, base))
    for k, insp in unsized:  # defect-free images: the size from another inspection, or the file
        size = by_digest.get(insp.image_sha256) or _file_size(insp, paths[k])
        b.images[k]["height"], b.images[k]["width"] = size
    if base is None and paths:
        try:
            base = Path(os.path.commonpath([p.parent for p in paths]))
        except ValueError:  # Windows: images on different drives
            raise StoreError("the images have no common folder (different drives); give "
                             "--root and export one drive's images at a time") from None
    for im, p in zip(b.images, paths, strict=True):
        im["file_name"] = _relative(p, base)
    data = b.dataset()
    data["info"]["image_root"] = None if base is None else str(base)
    return data


def coco_dataset(store: InspectionStore, *, lot: str | None = None,
                 root: str | Path | None = None, class_order: Sequence[str] = (),
                 polygons: bool = False) -> dict:
    """coco_from_inspections of the stored inspections (of one lot)."""
    return coco_from_inspections(store.iter_inspections(lot=lot), root=root,
                                 class_order=class_order, polygons=polygons)


def export_coco(store: InspectionStore, path: str | Path, *, lot: str | None = None,
                root: str | Path | None = None, class_order: Sequence[str] = (),
                polygons: bool = False) -> dict:
    """Write coco_dataset to path atomically; returns the dict."""
    data = coco_dataset(store, lot=lot, root=root, class_order=class_order, polygons=polygons)
    atomic_write.write_text(path, json.dumps(data, indent=1))
    return data
