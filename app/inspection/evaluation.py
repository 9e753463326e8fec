"""Quality evaluation: prompt any Engine with each ground-truth defect instance, score by IoU.

Reads a `manifest_components.csv` (one row per 8-connected defect component: image_path,
mask_path, class, area_px, bbox_x0, bbox_y0, bbox_x1, bbox_y1 with an INCLUSIVE bbox; paths
relative to the CSV's folder), prompts the engine with the instance's box (exclusive xyxy) or one
positive click at its most interior pixel, and compares the best predicted mask with the
instance's own mask. The box-fill baseline (the whole box as the mask) is scored on the same rows.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sam_engine.engine import Engine
from sam_engine.errors import ImageError, SamEngineError
from sam_engine.learned.heldout import interior_point, iou
from sam_engine.prompts import Prompts

MANIFEST_NAME = "manifest_components.csv"
PROMPT_KINDS = ("box", "point")
_REQUIRED = ("image_path", "mask_path", "class", "area_px",
             "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")


@dataclass(frozen=True)
class InstanceRow:
    """One defect instance of the manifest; bbox is inclusive (x1, y1 = last foreground pixel)."""

    image_path: Path
    mask_path: Path
    cls: str
    area_px: int
    bbox: tuple[int, int, int, int]
    dataset: str = ""

    @property
    def box_xyxy(self) -> tuple[int, int, int, int]:
        """The exclusive xyxy box prompt (x1 + 1, y1 + 1)."""
        x0, y0, x1, y1 = self.bbox
        return x0, y0, x1 + 1, y1 + 1


@dataclass(frozen=True)
class RowResult:
    row: InstanceRow
    iou: float
    box_fill_iou: float


@dataclass(frozen=True)
class ClassSummary:
    cls: str
    n: int
    mean_iou: float
    box_fill_iou: float


@dataclass
class EvalResult:
    """Per-row IoUs plus per-class and overall means (means are over rows, not classes)."""

    engine: str
    prompt: str
    rows: list[RowResult] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def mean_iou(self) -> float:
        return float(np.mean([r.iou for r in self.rows])) if self.rows else float("nan")

    @property
    def box_fill_iou(self) -> float:
        return float(np.mean([r.box_fill_iou for r in self.rows])) if self.rows else float("nan")

    def per_class(self) -> list[ClassSummary]:
        out = []
        for cls in sorted({r.row.cls for r in self.rows}):
            rs = [r for r in self.rows if r.row.cls == cls]
            out.append(ClassSummary(cls, len(rs), float(np.mean([r.iou for r in rs])),
                                    float(np.mean([r.box_fill_iou for r in rs]))))
        return out

    def summary_line(self) -> str:
        """The machine-readable last line of `sam-inspect eval`."""
        return f"mean_iou={self.mean_iou:.4f} baseline_box_fill={self.box_fill_iou:.4f} n={self.n}"


# ---------------------------------------------------------------- geometry helpers
def box_fill_mask(shape: tuple[int, int], box_xyxy: Iterable[int]) -> np.ndarray:
    """The whole (exclusive xyxy) box as a mask."""
    x0, y0, x1, y1 = (int(v) for v in box_xyxy)
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def instance_mask(mask: np.ndarray, bbox_inclusive: tuple[int, int, int, int]) -> np.ndarray:
    """The 8-connected component of `mask` whose inclusive bbox equals the given one.

    When none does but the whole mask has that bbox (a per-instance mask file whose instance
    is in several pieces, as the synthetic generator writes), the whole mask. Raises ValueError
    when neither matches (manifest and mask disagree).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        np.asarray(mask, bool).astype(np.uint8), connectivity=8)
    x0, y0, x1, y1 = bbox_inclusive
    want = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    for i in range(1, n):
        if tuple(int(v) for v in stats[i, :4]) == want:
            return labels == i
    ys, xs = np.nonzero(mask)
    if len(xs) and (xs.min(), ys.min(), xs.max(), ys.max()) == tuple(bbox_inclusive):
        return np.asarray(mask, bool)
    raise ValueError(f"no 8-connected mask component has bbox {bbox_inclusive}")


def prompt_for(row: InstanceRow, inst: np.ndarray, kind: str) -> Prompts:
    """The box or single positive click that evaluates one instance."""
    if kind == "box":
        return Prompts.from_boxes([row.box_xyxy])
    if kind == "point":
        return Prompts.from_points([interior_point(inst)], [1])
    raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}; got {kind!r}")


# ---------------------------------------------------------------- manifest
def read_manifest(
    data_dir: str | Path,
    *,
    min_area: int = 20,
    dataset: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[InstanceRow]:
    """Rows of DATA_DIR/manifest_components.csv with area >= min_area.

    dataset: keep only rows whose `dataset` column (or class) equals it. limit: a reproducible
    random subsample of that many rows (seeded), kept in manifest order.
    """
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        raise SamEngineError(
            f"{data_dir} has no {MANIFEST_NAME}; point at a folder laid out like "
            "shared/data/defects (images/, masks/ and a components manifest)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise SamEngineError(f"{path} lacks the column(s) {', '.join(missing)}")
        rows = []
        for rec in reader:
            try:
                area = int(rec["area_px"])
                bbox = tuple(int(rec[k]) for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))
            except ValueError as exc:
                raise SamEngineError(f"{path}: bad number in row {rec}: {exc}") from None
            ds = rec.get("dataset", "") or ""
            if area < min_area or (dataset is not None and dataset not in (ds, rec["class"])):
                continue
            rows.append(InstanceRow(data_dir / rec["image_path"], data_dir / rec["mask_path"],
                                    rec["class"], area, bbox, ds))
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
        rows = [rows[i] for i in keep]
    return rows


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ImageError(f"cannot read mask {path}")
    return m > 127


def _grouped(rows: list[InstanceRow]) -> Iterator[tuple[Path, list[InstanceRow]]]:
    """Rows grouped by image (set_image once per image), keeping first-seen order."""
    groups: dict[Path, list[InstanceRow]] = {}
    for r in rows:
        groups.setdefault(r.image_path, []).append(r)
    yield from groups.items()


def evaluate(
    engine: Engine,
    rows: list[InstanceRow],
    prompt: str = "box",
    *,
    progress: bool = True,
) -> EvalResult:
    """Prompt `engine` once per row and score its best mask against the instance mask."""
    if prompt not in PROMPT_KINDS:
        raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}; got {prompt!r}")
    from tqdm import tqdm

    result = EvalResult(engine=engine.info.describe(), prompt=prompt)
    bar = tqdm(total=len(rows), disable=not progress, unit="inst", desc=f"eval {prompt}")
    for image_path, group in _grouped(rows):
        handle = engine.set_image(_read_rgb(image_path))
        masks_by_file: dict[Path, np.ndarray] = {}
        for row in group:
            if row.mask_path not in masks_by_file:
                masks_by_file[row.mask_path] = _read_mask(row.mask_path)
            inst = instance_mask(masks_by_file[row.mask_path], row.bbox)
            pred = engine.predict(handle, prompt_for(row, inst, prompt), multimask_output=True)
            fill = box_fill_mask(inst.shape, row.box_xyxy)
            result.rows.append(RowResult(row, iou(pred.best(0), inst), iou(fill, inst)))
            bar.update(1)
    bar.close()
    return result
