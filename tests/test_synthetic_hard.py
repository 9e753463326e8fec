"""Tests of the hard synthetic generator (sam_engine.synthetic.hard): the learned engine's diet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sam_engine.synthetic.generator import KINDS, MATERIALS, MIN_AREA
from sam_engine.synthetic.hard import (
    HARD_KINDS,
    HARD_TEXTURES,
    SIZE_RANGE,
    make_hard_part,
    training_part,
)
from sam_engine.synthetic.noise import normal

SEEDS = range(50)


@pytest.fixture(scope="module")
def parts():
    return [training_part(s) for s in SEEDS]


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _same(a, b) -> bool:
    return (a.image.tobytes() == b.image.tobytes() and a.material == b.material
            and [d.kind for d in a.instances] == [d.kind for d in b.instances]
            and all(np.array_equal(x.mask, y.mask)
                    for x, y in zip(a.instances, b.instances, strict=True)))


def test_same_seed_gives_identical_bytes(parts):
    """Same seed, same part, whatever was generated in between (no hidden global state)."""
    for s in (0, 7, 31):
        assert _same(training_part(s), parts[s])
    a = make_hard_part(5, (96, 128), kinds=["crack", "blob"], n_defects=3, texture="asphalt")
    make_hard_part(6, (96, 128))
    b = make_hard_part(5, (96, 128), kinds=["crack", "blob"], n_defects=3, texture="asphalt")
    assert _same(a, b) and a.seed == 5


def test_different_seeds_differ(parts):
    assert len({p.image.tobytes() for p in parts}) == len(parts)


def test_variety_of_sizes_textures_colours_and_kinds(parts):
    shapes = {p.image.shape[:2] for p in parts}
    lo, hi = SIZE_RANGE
    assert len(shapes) >= 20
    assert all(lo <= min(s) and max(s) <= hi for s in shapes)
    assert len({p.material for p in parts}) >= 6 and {p.material for p in parts} <= set(
        HARD_TEXTURES)
    grey = [bool((p.image[..., 0] == p.image[..., 1]).all()
                 and (p.image[..., 1] == p.image[..., 2]).all()) for p in parts]
    assert 10 <= sum(grey) <= 40  # both grey and colour parts
    assert {d.kind for p in parts for d in p.instances} == set(HARD_KINDS)
    assert any(not p.instances for p in parts)  # some clean parts by default
    means = [p.image.mean() for p in parts]
    assert min(means) < 70 and max(means) > 170  # under- and over-exposed parts


def test_masks_honest_shapes_nonempty_and_disjoint(parts):
    for p in parts:
        assert p.image.dtype == np.uint8 and p.image.ndim == 3 and p.image.shape[2] == 3
        cover = np.zeros(p.image.shape[:2], np.int32)
        for inst in p.instances:
            assert inst.kind in HARD_KINDS
            assert inst.mask.dtype == bool and inst.mask.shape == p.image.shape[:2]
            assert inst.area >= MIN_AREA
            cover += inst.mask
        assert cover.max(initial=0) <= 1


def test_defects_are_visible(parts):
    """Inside each mask the image differs from a ring around it by more than the local noise."""
    ratios = []
    for p in parts:
        grey = p.image.astype(np.float32).mean(axis=2)
        noise = grey - cv2.GaussianBlur(grey, (0, 0), 2)
        taken = p.label_map() > 0
        for inst in p.instances:
            m = inst.mask.astype(np.uint8)
            band = inst.mask & ~cv2.erode(m, _disk(6)).astype(bool)
            ring = (cv2.dilate(m, _disk(8)) > 0) & ~(cv2.dilate(m, _disk(2)) > 0) & ~taken
            if ring.sum() >= 20:
                ratios.append(abs(grey[band].mean() - grey[ring].mean()) / noise[ring].std())
    assert len(ratios) > 60
    assert np.percentile(ratios, 5) > 1.5 and min(ratios) > 1.0, sorted(ratios)[:5]


def test_cracks_are_thin(parts):
    """Crack masks are 1-5 px wide: twice the distance to the background along the centre line."""
    skeletonize = pytest.importorskip("skimage.morphology").skeletonize
    widths = []
    for p in parts:
        for inst in p.instances:
            if inst.kind == "crack":
                m = np.pad(inst.mask.astype(np.uint8), 1)
                dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
                widths.append(2 * float(np.median(dist[skeletonize(m > 0)])) - 1)
    assert len(widths) >= 15
    assert np.median(widths) <= 5 and np.percentile(widths, 90) <= 6, sorted(widths)


def test_some_defects_fill_their_box_and_blobs_have_several_parts(parts):
    fills, pieces = [], []
    for p in parts:
        for inst in p.instances:
            x0, y0, x1, y1 = inst.bbox
            fills.append(inst.area / ((x1 - x0) * (y1 - y0)))
            if inst.kind == "blob":
                pieces.append(cv2.connectedComponents(inst.mask.astype(np.uint8))[0] - 1)
    assert sum(f >= 0.6 for f in fills) >= 10
    assert pieces and max(pieces) >= 3


def test_areas_come_in_few_pieces(parts):
    """Patches, regions and stains are mostly one piece: their own texture never punches holes
    (only highlights that swallow the change may)."""
    pieces = [cv2.connectedComponents(d.mask.astype(np.uint8))[0] - 1
              for p in parts for d in p.instances if d.kind in ("patch", "region", "stain")]
    assert len(pieces) >= 15
    assert np.mean([n <= 3 for n in pieces]) >= 0.8, pieces


def test_clean_parts_have_no_instances():
    for s in range(3):
        p = make_hard_part(s, (128, 160), n_defects=0)
        assert p.instances == () and not p.label_map().any()
        assert p.image.shape == (128, 160, 3)


def test_arguments_are_honoured():
    p = make_hard_part(2, (100, 300), kinds=["scratch"], n_defects=3, texture="concrete",
                       colour=False)
    assert p.image.shape == (100, 300, 3) and p.material == "concrete"
    assert p.instances and {d.kind for d in p.instances} == {"scratch"}
    assert (p.image[..., 0] == p.image[..., 2]).all()
    assert training_part(4, size=(64, 80)).image.shape == (64, 80, 3)


@pytest.mark.parametrize("kind", HARD_KINDS)
def test_every_kind_can_be_made_alone(kind):
    found = {d.kind for s in range(3)
             for d in make_hard_part(s, (160, 160), kinds=[kind], n_defects=2).instances}
    assert found == {kind}


def test_classic_training_part_comes_from_make_part():
    p = training_part(3, hard=False)
    lo, hi = SIZE_RANGE
    assert lo <= min(p.image.shape[:2]) and max(p.image.shape[:2]) <= hi
    assert p.material in MATERIALS and all(d.kind in KINDS for d in p.instances)
    assert training_part(3, hard=False, size=(64, 96)).image.shape == (64, 96, 3)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="kinds"):
        make_hard_part(0, kinds=["dent"])
    with pytest.raises(ValueError, match="texture"):
        make_hard_part(0, texture="wood")
    with pytest.raises(ValueError, match="size"):
        make_hard_part(0, (8, 8))
    with pytest.raises(ValueError, match="n_defects"):
        make_hard_part(0, n_defects=-1)


def test_banked_noise_is_standard_normal_and_varies():
    rng = np.random.default_rng(1)
    a, b = normal(rng, (200, 300)), normal(rng, (200, 300))
    assert a.dtype == np.float32 and a.shape == (200, 300) and a.flags.c_contiguous
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1) < 0.05
    assert not np.array_equal(a, b)
    assert normal(rng, (1100, 40)).shape == (1100, 40)  # larger than the bank: fresh draws
