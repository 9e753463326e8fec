"""Automatic mask generation (sam_engine.auto_masks) and `batch --auto`.

The filters are tested with an engine whose answers are known (the connected region under the
click, from a label image); the SAM path with a tiny random SAM for plumbing."""

from __future__ import annotations

import numpy as np
import pytest

from app.batch import BatchConfig, run_batch
from app.batch.runner import BatchError
from sam_engine.auto_masks import AutoMaskGenerator, AutoMaskSettings
from sam_engine.classic.logits import low_res_logits
from sam_engine.results import EngineInfo, ImageHandle, Masks
from tests.batch_data import write_parts


class LabelEngine:
    """predict(click) = the label region under the click (score 0.95), a shrunken copy
    (score 0.5, below the IoU filter) and a ring-shaped unstable candidate (logits near 0)."""

    info = EngineInfo("label", "label-v1", "cpu", "float32")

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def set_image(self, image) -> ImageHandle:
        h, w = self.labels.shape
        return ImageHandle("label", (h, w), (h, w), self.labels)

    def predict(self, handle, prompts, multimask_output=True) -> Masks:
        x, y = prompts.points[0]
        h, w = self.labels.shape
        lab = self.labels[min(int(y), h - 1), min(int(x), w - 1)]
        region = self.labels == lab
        small = region.copy()
        small[: small.shape[0] // 2] = False
        masks = np.stack([region, small, region])[None]
        logits = np.stack([low_res_logits(region), low_res_logits(small),
                           low_res_logits(region) * 0.01])[None]
        return Masks(masks, np.array([[0.95, 0.5, 0.97]], np.float32), logits)


def label_image() -> np.ndarray:
    lab = np.zeros((200, 300), np.int32)  # 0: the part (background, too large for a defect)
    lab[40:60, 40:70] = 1  # 600 px defect, hit by several grid clicks
    lab[114:117, 200:212] = 2  # 36 px defect, too small for min_area_px=40
    lab[100:112, 100:115] = 3  # 180 px defect
    return lab


def test_filters_and_nms_keep_each_defect_once():
    lab = label_image()
    eng = LabelEngine(lab)
    gen = AutoMaskGenerator(eng, AutoMaskSettings(points_per_side=20, min_area_px=40,
                                                  max_area_fraction=0.05, min_region_px=0))
    masks = gen.generate(eng.set_image(None))
    regions = sorted(int(lab[m.mask][0]) for m in masks)
    assert regions == [1, 3]  # background (too large) and region 2 (too small) dropped, no dupes
    for m in masks:
        assert np.array_equal(m.mask, lab == lab[m.mask][0])
        assert m.score == pytest.approx(0.95) and m.stability > 0.9
        x0, y0, x1, y1 = m.box
        assert m.mask[y0:y1, x0:x1].sum() == m.area


def test_size_filters_are_settings():
    lab = label_image()
    eng = LabelEngine(lab)
    # a 3 px thin region is unstable at the 256 px logit resolution: no stability filter here
    loose = AutoMaskGenerator(eng, AutoMaskSettings(points_per_side=20, min_area_px=10,
                                                    max_area_fraction=1.0, min_region_px=0,
                                                    stability_score_thresh=0.0))
    assert sorted(int(lab[m.mask][0]) for m in loose.generate(eng.set_image(None))) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="max_area_fraction"):
        AutoMaskSettings(max_area_fraction=0)


def test_grid_covers_the_image():
    gen = AutoMaskGenerator(None, AutoMaskSettings(points_per_side=4))
    grid = gen.point_grid((100, 200))
    assert grid.shape == (16, 2)
    assert grid[:, 0].min() == pytest.approx(25) and grid[:, 0].max() == pytest.approx(175)
    assert grid[:, 1].min() == pytest.approx(12.5) and grid[:, 1].max() == pytest.approx(87.5)


def test_batch_auto_with_a_tiny_random_sam(tmp_path):
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.sam.backend import SamEngine
    from tests.sam_factory import tiny_sam

    write_parts(tmp_path / "in", 1)
    eng = SamEngine(tiny_sam(1), "tiny", device="cpu", cache=EmbeddingCache())
    settings = AutoMaskSettings(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                min_area_px=1, max_area_fraction=1.0)
    cfg = BatchConfig(tmp_path / "in", tmp_path / "out", auto=True, auto_settings=settings,
                      auto_class="blob", quiet=True, no_store=True)
    result = run_batch(cfg, engine=eng)
    assert result.exit_code == 0
    found = result.records[0].inspection.findings
    assert 1 <= len(found) <= 9 * 3  # no filter left: at most every candidate of every click
    assert all(f.defect_class == "blob" and f.mask.any() for f in found)
    assert all(len(f.prompts["points"]) == 1 for f in found)


def test_auto_class_must_be_in_the_recipe(tmp_path):
    write_parts(tmp_path / "in", 1)
    recipe = tmp_path / "r.toml"
    recipe.write_text('schema_version = 1\n[part]\nname = "p"\nversion = "1"\n[classes.pit]\n')
    with pytest.raises(BatchError, match="--auto-class"):
        run_batch(BatchConfig(tmp_path / "in", tmp_path / "out", auto=True, recipe=recipe,
                              engine="classic", quiet=True))
