"""Measurements of rasterised shapes with known answers, within the tolerances in
app.inspection.measure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.inspection.measure import Calibration, Datum, Measurements, measure


def grid(size=(300, 300)):
    yy, xx = np.mgrid[: size[0], : size[1]] + 0.5  # pixel centres
    return xx, yy


def disc(r, c=(150.3, 149.8), size=(300, 300)):
    xx, yy = grid(size)
    return np.hypot(xx - c[0], yy - c[1]) <= r


def bar(width, length, angle_deg, c=(150.0, 150.0), size=(300, 300)):
    xx, yy = grid(size)
    t = math.radians(angle_deg)
    u = (xx - c[0]) * math.cos(t) + (yy - c[1]) * math.sin(t)
    v = -(xx - c[0]) * math.sin(t) + (yy - c[1]) * math.cos(t)
    return (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)


@pytest.mark.parametrize("r", [5, 10, 25, 60.3])
def test_disc(r):
    m = measure(disc(r))
    assert m.area_px == pytest.approx(math.pi * r * r, rel=0.05)
    assert m.feret_max_px == pytest.approx(2 * r, abs=1.5)
    assert m.min_width_px == pytest.approx(2 * r, abs=1.5)
    assert m.thickness_px == pytest.approx(2 * r, abs=1.5)
    assert m.perimeter_px == pytest.approx(2 * math.pi * r, rel=0.05)
    assert m.centroid == pytest.approx((150.3, 149.8), abs=0.5)
    assert m.n_parts == 1


@pytest.mark.parametrize(("w", "h"), [(10, 20), (33, 57), (1, 40)])
def test_axis_aligned_rectangle_exact(w, h):
    mask = np.zeros((100, 100), bool)
    mask[5 : 5 + h, 7 : 7 + w] = True
    m = measure(mask)
    assert m.area_px == w * h
    assert m.bbox == (7, 5, 7 + w, 5 + h)
    assert m.centroid == pytest.approx((7 + w / 2, 5 + h / 2))
    assert m.feret_max_px == pytest.approx(math.hypot(w, h))
    assert m.min_width_px == pytest.approx(w)
    assert m.thickness_px == pytest.approx(w, abs=1.0)
    assert m.perimeter_px == pytest.approx(2 * (w + h), rel=0.05)


@pytest.mark.parametrize("angle", [0, 13, 30, 45, 62, 90, 135])
@pytest.mark.parametrize("w", [4, 9, 20])
def test_rotated_bar(angle, w):
    m = measure(bar(w, 120, angle))
    assert m.feret_max_px == pytest.approx(math.hypot(w, 120), abs=1.5)
    assert m.min_width_px == pytest.approx(w, abs=1.5)
    assert m.thickness_px == pytest.approx(w, abs=1.5)
    assert m.perimeter_px == pytest.approx(2 * (w + 120), rel=0.05)
    assert m.n_parts == 1


def test_ring_thickness_and_perimeter_with_hole():
    xx, yy = grid((200, 200))
    d = np.hypot(xx - 100, yy - 100)
    m = measure((d <= 60) & (d >= 48))
    assert m.thickness_px == pytest.approx(12, abs=1.5)  # radial width, not the diameter
    assert m.feret_max_px == pytest.approx(120, abs=1.5)
    assert m.min_width_px == pytest.approx(120, abs=1.5)
    assert m.perimeter_px == pytest.approx(2 * math.pi * (60 + 48), rel=0.05)
    assert m.area_px == pytest.approx(math.pi * (60**2 - 48**2), rel=0.02)
    assert m.n_parts == 1
    assert m.centroid == pytest.approx((100, 100), abs=0.5)


def test_parts_are_8_connected():
    mask = np.zeros((20, 20), bool)
    mask[2, 2] = mask[3, 3] = True  # diagonal neighbours: one part
    mask[10:12, 10:12] = True
    assert measure(mask).n_parts == 2


def test_calibration_and_mm_values():
    mask = np.zeros((100, 100), bool)
    mask[10:30, 10:20] = True
    m = measure(mask, Calibration(mm_per_px=0.1))
    assert m.area_mm2 == pytest.approx(2.0)
    assert m.min_width_mm == pytest.approx(1.0)
    assert m.feret_max_mm == pytest.approx(math.hypot(1.0, 2.0))
    assert measure(mask).area_mm2 is None


def test_fiducial_calibration():
    cal = Calibration.from_fiducial(disc(40), diameter_mm=8.0)
    assert cal.mm_per_px == pytest.approx(0.1, rel=0.01)
    with pytest.raises(ValueError, match="empty"):
        Calibration.from_fiducial(np.zeros((5, 5), bool), 1.0)
    with pytest.raises(ValueError, match="positive"):
        Calibration(mm_per_px=0)


def test_edge_and_datum_distance():
    part = np.zeros((100, 100), bool)
    part[10:90, 10:90] = True
    mask = np.zeros_like(part)
    mask[30:40, 20:25] = True  # 10 px gap to the part's left edge (columns 10..19)
    m = measure(mask, part_mask=part, datum=Datum("line", ((0, 80), (100, 80))))
    assert m.edge_distance_px == pytest.approx(10, abs=1)
    assert m.datum_distance_px == pytest.approx(80 - 40, abs=1)
    touching = np.zeros_like(part)
    touching[5:15, 50:55] = True
    assert measure(touching, part_mask=part).edge_distance_px == 0
    pt = measure(mask, datum=Datum("point", ((22.5, 50.0),)))
    assert pt.datum_distance_px == pytest.approx(10.5, abs=1)


def test_invalid_masks():
    with pytest.raises(ValueError, match="empty"):
        measure(np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="2-D"):
        measure(np.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match="datum"):
        Datum("circle", ((0, 0),))


def test_round_trip_dict():
    m = measure(disc(10), Calibration(0.05))
    d = m.to_dict()
    assert d["area_mm2"] == pytest.approx(m.area_mm2)
    assert Measurements.from_dict(d) == m


def _noisy_blob(seed: int, size=(60, 80)) -> np.ndarray:
    """A ragged blob with holes and islands: many contours, like a poor segmentation."""
    rng = np.random.default_rng(seed)
    return (rng.random(size) < 0.55) | disc(18, c=(40.0, 30.0), size=size)


@pytest.mark.parametrize("offset", [(0, 0), (0, 37), (23, 0), (23, 37), (140, 220)])
def test_measuring_the_box_equals_measuring_the_frame(offset):
    """measure() works on the mask's box: a blob placed anywhere in a larger frame (touching
    its border or not) measures as the blob alone, its position shifted by the offset."""
    blob = _noisy_blob(3)
    frame = np.zeros((200, 300), bool)
    dy, dx = offset
    frame[dy:dy + blob.shape[0], dx:dx + blob.shape[1]] = blob
    datum = Datum("point", ((5.0, 7.0),))
    alone = measure(blob, datum=Datum("point", ((5.0 - dx, 7.0 - dy),)))
    placed = measure(frame, datum=datum)
    assert placed.area_px == alone.area_px and placed.n_parts == alone.n_parts
    x0, y0, x1, y1 = alone.bbox
    assert placed.bbox == (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    assert placed.centroid == pytest.approx((alone.centroid[0] + dx, alone.centroid[1] + dy))
    for name in ("feret_max_px", "min_width_px", "thickness_px", "perimeter_px",
                 "datum_distance_px"):
        assert getattr(placed, name) == pytest.approx(getattr(alone, name), rel=1e-9), name


def test_thickness_and_perimeter_match_their_reference_computations():
    """cv2's exact distance transform gives scipy's EDT values; the shared contours give the
    per-contour perimeter sum."""
    import cv2
    from scipy import ndimage

    from app.inspection.measure import perimeter, thickness

    for seed in range(4):
        blob = _noisy_blob(seed)
        ref = float(max(2.0 * ndimage.distance_transform_edt(np.pad(blob, 1)).max() - 0.5, 1.0))
        assert thickness(blob) == pytest.approx(ref, abs=1e-4)
        contours, hierarchy = cv2.findContours(blob.astype(np.uint8), cv2.RETR_CCOMP,
                                               cv2.CHAIN_APPROX_NONE)
        total = 0.0
        for c, (_, _, _, parent) in zip(contours, hierarchy[0], strict=True):
            total += cv2.arcLength(cv2.approxPolyDP(c, 1.0, True), True)
            total += math.pi if parent < 0 else -math.pi
        assert len(contours) > 10  # the case the shared contours are for
        assert perimeter(blob) == pytest.approx(max(total, 0.0), rel=1e-9)
