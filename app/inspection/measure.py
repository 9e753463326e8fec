"""Measurements of one defect mask: area, box, centroid, Feret diameters, thickness, perimeter.

Pixel geometry: pixel (row r, column c) is the unit square [c, c+1) x [r, r+1); coordinates are x, y
in pixels with the origin at the image's top-left corner, so the centroid of pixel (0, 0) is
(0.5, 0.5). Millimetre values are the pixel values times the calibration's mm per px (squared for
areas); they are None when no calibration is known.

Tolerances (tested in tests/test_measure.py on rasterised shapes with known answers):
- area_px: exact pixel count.
- bbox, n_parts: exact (parts are 8-connected, as cv2.connectedComponents with connectivity 8).
- centroid: the mean of the pixel centres, exact for the pixel set; within 0.5 px of the true
  centre of a rasterised disc or rectangle.
- feret_max_px (maximum length) and min_width_px (minimum caliper width): exact for the polygon made
  of the pixel squares (rotating calipers on the convex hull of the pixel corners); within 1.5 px of
  the true diameter / length / width of a rasterised disc, rectangle or rotated bar.
- thickness_px (perpendicular thickness: twice the largest inscribed radius, from the Euclidean
  distance transform): within 1.5 px of a bar's width or a ring's radial width.
- perimeter_px: outer plus hole boundaries: cv2.arcLength of each contour after
  cv2.approxPolyDP (1 px) to undo the pixel staircase, moved out by half a pixel (contours run
  through boundary pixel centres); within 5 % for discs of radius >= 5 px, rectangles, rotated
  bars and rings.
- edge_distance_px / datum_distance_px: between pixel centres, within 1 px of the true gap.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

# The field of view (mm_per_px times the image's longer side) of a plausible part photo: from a
# tenth of a millimetre (a microscope) to two metres (a large panel). A calibration outside it
# is almost surely a unit slip (px per mm given as mm per px, mm given as um) and would turn
# every size into nonsense; a recipe widens it with [calibration] field_of_view_mm = [lo, hi].
FIELD_OF_VIEW_MM = (0.1, 2000.0)


class CalibrationError(ValueError):
    """A calibration that cannot be right for the image it is used on (the message says why)."""


@dataclass(frozen=True)
class Calibration:
    """Scale of an image: millimetres per pixel (None when the image is not calibrated).

    field_of_view_mm: the plausible range of mm_per_px times the image's longer side, checked
    (check_image) wherever the calibration measures an image; None checks nothing."""

    mm_per_px: float | None = None
    field_of_view_mm: tuple[float, float] | None = FIELD_OF_VIEW_MM

    def __post_init__(self) -> None:
        if self.mm_per_px is not None and not (
            self.mm_per_px > 0 and math.isfinite(self.mm_per_px)
        ):
            raise ValueError(f"mm_per_px must be a positive number; got {self.mm_per_px!r}")

    def check_image(self, image_size: tuple[int, int]) -> None:
        """Raise CalibrationError when this scale makes the (H, W) image's field of view
        implausible for a part photo (FIELD_OF_VIEW_MM)."""
        if self.mm_per_px is None or self.field_of_view_mm is None:
            return
        lo, hi = self.field_of_view_mm
        h, w = int(image_size[0]), int(image_size[1])
        fov = self.mm_per_px * max(h, w)
        if lo <= fov <= hi:
            return
        side = "more" if fov > hi else "less"
        raise CalibrationError(
            f"calibration {self.mm_per_px:g} mm/px makes the {w}x{h} image {fov:.4g} mm "
            f"across, {side} than a part photo's plausible {lo:g}..{hi:g} mm: check the "
            "value and its unit (mm per pixel, not pixels per mm); if it is right, state the "
            "range in the recipe as [calibration] field_of_view_mm = [lo, hi]")

    @classmethod
    def from_fiducial(cls, fiducial_mask: np.ndarray, diameter_mm: float) -> Calibration:
        """Scale from the mask of a round fiducial of known diameter (its equivalent diameter)."""
        area = int(np.count_nonzero(fiducial_mask))
        if area == 0:
            raise ValueError("the fiducial mask is empty: segment the fiducial first")
        if not diameter_mm > 0:
            raise ValueError(f"fiducial diameter must be > 0 mm; got {diameter_mm!r}")
        return cls(mm_per_px=diameter_mm / math.sqrt(4.0 * area / math.pi))

    def mm(self, px: float | None) -> float | None:
        return None if px is None or self.mm_per_px is None else px * self.mm_per_px

    def mm2(self, px2: float | None) -> float | None:
        return None if px2 is None or self.mm_per_px is None else px2 * self.mm_per_px**2


@dataclass(frozen=True)
class Datum:
    """A reference feature in image pixels: a point (one xy) or a line (through two xy)."""

    kind: str  # "point" or "line"
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        want = {"point": 1, "line": 2}.get(self.kind)
        if want is None:
            raise ValueError(f"datum kind must be 'point' or 'line'; got {self.kind!r}")
        if len(self.points) != want:
            raise ValueError(f"a {self.kind} datum needs {want} point(s); got {len(self.points)}")

    def distance(self, xy: np.ndarray) -> np.ndarray:
        """Distance of each (N, 2) xy to the datum (a line is infinite)."""
        p0 = np.asarray(self.points[0], dtype=np.float64)
        if self.kind == "point":
            return np.hypot(*(xy - p0).T)
        d = np.asarray(self.points[1], dtype=np.float64) - p0
        norm = math.hypot(*d)
        if norm == 0:
            raise ValueError("a line datum needs two distinct points")
        return np.abs(d[0] * (xy[:, 1] - p0[1]) - d[1] * (xy[:, 0] - p0[0])) / norm


@dataclass(frozen=True)
class Measurements:
    """What measure() finds for one mask; px values always, mm values when calibrated."""

    area_px: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1: pixel edges, x1/y1 exclusive
    centroid: tuple[float, float]  # x, y
    feret_max_px: float  # maximum length
    min_width_px: float  # minimum caliper width of the whole mask
    thickness_px: float  # perpendicular thickness: twice the largest inscribed radius
    perimeter_px: float
    n_parts: int
    edge_distance_px: float | None = None  # to the part's edge (0 when touching or outside)
    datum_distance_px: float | None = None
    mm_per_px: float | None = None

    @property
    def area_mm2(self) -> float | None:
        return None if self.mm_per_px is None else self.area_px * self.mm_per_px**2

    def _mm(self, px: float | None) -> float | None:
        return None if px is None or self.mm_per_px is None else px * self.mm_per_px

    @property
    def feret_max_mm(self) -> float | None:
        return self._mm(self.feret_max_px)

    @property
    def min_width_mm(self) -> float | None:
        return self._mm(self.min_width_px)

    @property
    def thickness_mm(self) -> float | None:
        return self._mm(self.thickness_px)

    @property
    def perimeter_mm(self) -> float | None:
        return self._mm(self.perimeter_px)

    @property
    def edge_distance_mm(self) -> float | None:
        return self._mm(self.edge_distance_px)

    @property
    def datum_distance_mm(self) -> float | None:
        return self._mm(self.datum_distance_px)

    def to_dict(self) -> dict:
        """Plain JSON types; the mm values are included for readers (from_dict ignores them)."""
        d = asdict(self)
        d["bbox"] = list(self.bbox)
        d["centroid"] = list(self.centroid)
        for name in MM_FIELDS:
            d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Measurements:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["bbox"] = tuple(int(v) for v in kw["bbox"])
        kw["centroid"] = tuple(float(v) for v in kw["centroid"])
        return cls(**kw)


MM_FIELDS = (
    "area_mm2",
    "feret_max_mm",
    "min_width_mm",
    "thickness_mm",
    "perimeter_mm",
    "edge_distance_mm",
    "datum_distance_mm",
)


def _contours(mask: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Every boundary of the mask (outer ones and holes, all boundary pixels) and, per boundary,
    whether it is an outer one: what both the hull and the perimeter are computed from."""
    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE
    )
    if hierarchy is None:
        return (), np.zeros(0, bool)
    return contours, hierarchy[0][:, 3] < 0


def _hull_of_pixels(mask: np.ndarray, contours=None) -> np.ndarray:
    """Convex hull vertices (M, 2) xy of the union of the mask's pixel squares."""
    contours, _ = _contours(mask) if contours is None else contours
    points = np.concatenate(contours).reshape(-1, 2)  # holes lie inside: they change nothing
    # hull(pixel squares) = hull(corners of the squares at the hull vertices of their points)
    # (the Minkowski sum of two hulls): cv2's integer hull first keeps qhull's input small
    centres = cv2.convexHull(points).reshape(-1, 2).astype(np.float64)
    corners = (centres[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]])).reshape(-1, 2)
    return corners[ConvexHull(corners).vertices]


def feret_diameters(mask: np.ndarray, contours=None) -> tuple[float, float]:
    """(maximum, minimum) caliper diameters of the mask's pixel squares, in px.

    Rotating calipers written out with numpy: neither OpenCV nor scikit-image gives both exact
    diameters of a convex polygon (cv2.minAreaRect minimises area, not width).
    """
    hull = _hull_of_pixels(mask, contours)
    diff = hull[:, None, :] - hull[None, :, :]
    feret_max = float(np.sqrt((diff**2).sum(-1)).max())
    edges = np.roll(hull, -1, axis=0) - hull
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    proj = normals @ hull.T  # (edges, vertices): the hull's extent across each edge direction
    feret_min = float((proj.max(1) - proj.min(1)).min())
    return feret_max, feret_min


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the mask's pixels (end-exclusive), or None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def thickness(mask: np.ndarray) -> float:
    """Twice the largest inscribed radius, in px.

    The distance transform measures pixel centre to background pixel centre, half a pixel to one
    pixel more than to the true boundary; 0.25 px per side is taken off (the middle of that range).
    OpenCV's exact Euclidean transform (DIST_MASK_PRECISE) gives scipy's distance_transform_edt
    result ten times faster.
    """
    box = _box(mask)
    if box is None:
        return 1.0
    # only the mask's box (and a ring of background) matters: the same answer, far less work
    # than a distance transform of the whole image
    crop = mask[box[1]:box[3], box[0]:box[2]]
    dist = cv2.distanceTransform(np.pad(crop, 1).astype(np.uint8), cv2.DIST_L2,
                                 cv2.DIST_MASK_PRECISE)
    # The largest distance is sqrt(k) for an integer k (pixel centres on a grid): recover k from
    # OpenCV's float32 value and take the root in float64, so the figure is scipy's exactly and
    # the same on every run (OpenCV's float32 rounding varied by one ulp between runs, and a
    # resumed batch must reproduce an uninterrupted one to the bit).
    d = math.sqrt(round(float(dist.max()) ** 2))
    return float(max(2.0 * d - 0.5, 1.0))


def perimeter(mask: np.ndarray, contours=None) -> float:
    """Length of the outer and hole boundaries, in px (see the module docstring)."""
    contours, outer = _contours(mask) if contours is None else contours
    total = sum(cv2.arcLength(cv2.approxPolyDP(c, 1.0, True), True) for c in contours)
    # a boundary offset outward by d grows by 2*pi*d: +pi outside, -pi for a hole
    n_outer = int(np.count_nonzero(outer))
    total += math.pi * (n_outer - (len(contours) - n_outer))
    return max(total, 0.0)


def measure(
    mask: np.ndarray,
    calibration: Calibration | None = None,
    *,
    part_mask: np.ndarray | None = None,
    datum: Datum | None = None,
) -> Measurements:
    """Measure a bool (H, W) mask. part_mask: the part's region (for the distance to its edge);
    datum: a reference point/line from the recipe. Raises ValueError for an empty mask."""
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W); got shape {mask.shape}")
    if calibration is not None:
        calibration.check_image(mask.shape)
    bbox = _box(mask)
    if bbox is None:
        raise ValueError("cannot measure an empty mask")
    # Everything below but the edge distance works on the mask's box and a one-pixel ring of
    # the image around it (contours see the same neighbourhood): a defect is small next to the
    # frame, and the full-frame scans dominated the cost.
    y0, x0 = max(bbox[1] - 1, 0), max(bbox[0] - 1, 0)
    full, mask = mask, mask[y0:bbox[3] + 1, x0:bbox[2] + 1]
    per_col, per_row = mask.sum(0), mask.sum(1)  # pixel counts: area and centroid, exactly
    area = int(per_row.sum())
    centroid = (float(per_col @ np.arange(per_col.size)) / area + x0 + 0.5,
                float(per_row @ np.arange(per_row.size)) / area + y0 + 0.5)
    contours = _contours(mask)
    feret_max, feret_min = feret_diameters(mask, contours)
    n_labels, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)

    edge = None
    if part_mask is not None:
        part = np.asarray(part_mask).astype(bool)
        if part.shape != full.shape:
            raise ValueError(f"part mask shape {part.shape} differs from the mask's {full.shape}")
        if (full & ~part).any():
            edge = 0.0
        else:
            # distance from each part pixel centre to the nearest non-part pixel centre, less the
            # half pixel on each side, so a defect on the edge pixel is 0 px from the edge
            inside = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
            edge = float(max(inside[full].min() - 1.0, 0.0))

    datum_dist = None
    if datum is not None:
        ys, xs = np.nonzero(mask)
        centres = np.stack([xs + x0, ys + y0], axis=1).astype(np.float64) + 0.5
        datum_dist = float(datum.distance(centres).min())

    return Measurements(
        area_px=area,
        bbox=bbox,
        centroid=centroid,
        feret_max_px=feret_max,
        min_width_px=feret_min,
        thickness_px=thickness(mask),
        perimeter_px=perimeter(mask, contours),
        n_parts=int(n_labels) - 1,
        edge_distance_px=edge,
        datum_distance_px=datum_dist,
        mm_per_px=None if calibration is None else calibration.mm_per_px,
    )
