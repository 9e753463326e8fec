"""The one COCO instance-segmentation writer, shared by batch results and `db export`.

- images: `file_name` relative to the dataset root (forward slashes; tools such as datumaro
  refuse absolute paths outside their base), `height` and `width` always set.
- categories: stable ids: the recipe's classes in recipe order (1..k, listed even when absent),
  then any other class sorted by name; without a recipe, sorted names.
- annotations: the mask as COCO RLE (exact, overlaps kept) or, with polygons=True, as polygons
  traced with OpenCV (for tools that read only polygons, e.g. Label Studio's converter; holes
  are filled). `defect_number` is the defect's number (Finding.number), the same as in the
  label-map PNGs, findings.csv and reports; `defect_id` its database id when stored.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from app.inspection.findings import Finding, defect_numbers


@dataclass(frozen=True)
class CocoImage:
    """One image of a COCO dataset: its path relative to the dataset root, its size, its
    findings, and extra image-level keys (e.g. the verdict)."""

    file_name: str
    height: int
    width: int
    findings: Sequence[Finding] = ()
    extra: dict = field(default_factory=dict)


def category_ids(names: Iterable[str], class_order: Sequence[str] = ()) -> dict[str, int]:
    """Class name -> category id: class_order first (1..k), then the other names sorted."""
    order = list(dict.fromkeys(class_order))
    order += sorted(set(names) - set(order))
    return {n: i for i, n in enumerate(order, 1)}


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons ([x0, y0, x1, y1, ...] in pixel-edge coordinates) of each outer outline of
    mask; pycocotools rasterises them back to the same pixels (holes are filled)."""
    m = np.asarray(mask, bool)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return []
    x0, y0 = int(xs.min()), int(ys.min())
    crop = m[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1].astype(np.uint8)
    # Traced at twice the resolution, the outline's points (pixel centres there) lie a quarter
    # pixel inside the original pixels' edges: the polygon covers exactly the mask's pixels.
    up = np.kron(crop, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2 + (x0, y0)
        out.append([round(float(v), 2) for v in pts.ravel()])
    return out


def _rle(mask: np.ndarray) -> dict:
    enc = coco_mask.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"]}


class CocoBuilder:
    """Builds a COCO dict one image at a time, keeping only the encoded masks (so exporting a
    large database never holds all its masks); category ids are assigned in dataset()."""

    def __init__(self, *, class_order: Sequence[str] = (), polygons: bool = False,
                 description: str = "sam-inspect results") -> None:
        self.class_order = tuple(class_order)
        self.polygons = polygons
        self.description = description
        self.images: list[dict] = []
        self.annotations: list[dict] = []  # category_id is set in dataset()
        self._classes: list[str] = []  # the class of each annotation

    def add(self, im: CocoImage) -> int:
        """Add one image and its findings' masks; returns its image id (1, 2, ...)."""
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": im.file_name, "height": int(im.height),
                            "width": int(im.width), **im.extra})
        for number, f in zip(defect_numbers(im.findings), im.findings, strict=True):
            if f.mask is None:
                continue
            if f.mask.shape != (im.height, im.width):
                raise ValueError(f"{im.file_name}: defect #{number} has a {f.mask.shape} mask "
                                 f"on a {im.height}x{im.width} image")
            rle = _rle(f.mask)
            with warnings.catch_warnings():  # pycocotools vs numpy 2 deprecation noise
                warnings.simplefilter("ignore", DeprecationWarning)
                area = int(coco_mask.area(rle))
                bbox = [float(v) for v in coco_mask.toBbox(rle)]
            seg = (mask_polygons(f.mask) if self.polygons
                   else {"size": rle["size"], "counts": rle["counts"].decode("ascii")})
            ann = {"id": len(self.annotations) + 1, "image_id": image_id,
                   "category_id": None, "segmentation": seg, "area": area,
                   "bbox": bbox, "iscrowd": 0, "score": f.score, "defect_number": number,
                   "defect_id": f.id}
            if f.measurements is not None:
                ann["measurements"] = f.measurements.to_dict()
            self.annotations.append(ann)
            self._classes.append(f.defect_class)
        return image_id

    def dataset(self) -> dict:
        """The COCO dict of the images added so far."""
        cats = category_ids(self._classes, self.class_order)
        anns = [{**a, "category_id": cats[c]}
                for a, c in zip(self.annotations, self._classes, strict=True)]
        return {"info": {"description": self.description}, "images": list(self.images),
                "annotations": anns,
                "categories": [{"id": i, "name": n, "supercategory": "defect"}
                               for n, i in cats.items()]}


def coco_dataset(images: Iterable[CocoImage], *, class_order: Sequence[str] = (),
                 polygons: bool = False, description: str = "sam-inspect results") -> dict:
    """The COCO dict of images (ids 1..n in the given order; annotation ids 1..m)."""
    b = CocoBuilder(class_order=class_order, polygons=polygons, description=description)
    for im in images:
        b.add(im)
    return b.dataset()
