"""The GUI's Qt-free parts: image loading for display, prompt snapshots, mask geometry,
autosave to the inspection store, folder export; and the store methods the GUI added."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.gui.autosave import IN_PROGRESS, NOT_STARTED, Autosave, Station, image_key
from app.gui.export import export_folder
from app.gui.images import (
    apply_window,
    auto_window,
    from_array,
    list_images,
    load_for_display,
    make_thumbnail,
    pyramid,
    window_lut,
)
from app.gui.mask_geometry import mask_shape
from app.gui.options import GuiOptions, add_arguments
from app.gui.session import PromptSession, RegionResult, add_box, add_point
from app.inspection.findings import Finding
from app.inspection.recipe import load_recipe
from app.store import InspectionStore
from sam_engine.errors import ImageError
from sam_engine.results import Masks

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"


# ---------------------------------------------------------------- images


def test_sixteen_bit_png_keeps_raw_values_for_display(tmp_path):
    raw = np.linspace(1000, 3000, 200 * 300).reshape(200, 300).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), raw)
    img = load_for_display(tmp_path / "a.png")
    assert img.is16bit and np.array_equal(img.display, raw)
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == (200, 300, 3)
    window, level = auto_window(img.display)
    assert 1000 <= level - window / 2 < 1100 and 2900 < level + window / 2 <= 3000
    shown = apply_window(raw, window_lut(window, level))
    assert shown.dtype == np.uint8 and shown[0, 0] == 0 and shown[-1, -1] == 255


def test_sixteen_bit_rgb_tiff_is_shown_in_rgb_order(tmp_path):
    raw = np.zeros((20, 30, 3), np.uint16)
    raw[..., 0] = 40000  # red in RGB order
    cv2.imwrite(str(tmp_path / "c.tif"), cv2.cvtColor(raw, cv2.COLOR_RGB2BGR))
    img = load_for_display(tmp_path / "c.tif")
    assert img.is16bit and img.display.shape == (20, 30, 3)
    assert img.display[0, 0, 0] == 40000 and img.display[0, 0, 2] == 0


def test_eight_bit_image_is_displayed_from_the_engine_array(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    img = load_for_display(tmp_path / "b.png")
    assert img.display is img.rgb and np.array_equal(img.rgb, rgb) and len(img.levels) == 1


def test_pyramid_of_a_large_image_ends_small():
    levels = pyramid(np.zeros((6000, 8000), np.uint16))
    assert [lv.shape for lv in levels] == [(6000, 8000), (3000, 4000), (1500, 2000)]
    assert levels[1].dtype == np.uint16


def test_grey_array_and_thumbnail(tmp_path):
    img = from_array(np.full((40, 80), 7, np.uint16))
    assert img.is16bit and img.rgb.shape == (40, 80, 3)
    cv2.imwrite(str(tmp_path / "t.png"), np.zeros((300, 600, 3), np.uint8))
    assert make_thumbnail(tmp_path / "t.png").shape == (48, 96, 3)


def test_list_images_and_unreadable_file(tmp_path):
    (tmp_path / "b.PNG").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    with pytest.raises(ImageError, match="empty"):
        load_for_display(tmp_path / "a.jpg")


# ---------------------------------------------------------------- prompts


def _masks(logits_value: float) -> Masks:
    masks = np.zeros((1, 3, 8, 8), bool)
    masks[0, 1, 2:4, 2:4] = True
    logits = np.full((1, 3, 256, 256), logits_value, np.float32)
    logits[0, 1] += 1
    return Masks(masks, np.array([[0.2, 0.9, 0.5]]), logits)


def test_clicks_refine_the_active_region_and_feed_back_its_chosen_mask():
    s1 = add_point((), 10, 20, 1)
    s2 = add_point(s1, 30, 40, 0)
    assert len(s2) == 1 and s2[0].points == ((10.0, 20.0, 1), (30.0, 40.0, 0))
    assert s2[0].parent is s1[0]
    session = PromptSession()
    assert session.prompts(s2[0]).mask_input is None  # nothing decoded yet
    session.results[s1[0].uid] = RegionResult(_masks(3.0), 1.0)
    assert session.candidate(s1[0]) == 1  # best score
    fed = session.prompts(s2[0]).mask_input
    assert fed.shape == (1, 256, 256) and np.all(fed == 4.0)  # candidate 1's logits
    session.choose(s1[0], 2)
    assert np.all(session.prompts(s2[0]).mask_input == 3.0)
    assert session.cycle(s1[0]) == 0 and session.cycle(s1[0], -1) == 2
    # a box starts a new region; the clicks that follow refine it, not the first one
    s3 = add_box(s2, (0, 0, 5, 5))
    s4 = add_point(s3, 2, 2, 1)
    assert len(s4) == 2 and s4[0] is s2[0] and s4[1].box == (0.0, 0.0, 5.0, 5.0)
    p = session.prompts(s4[1])
    assert p.boxes.tolist() == [[0, 0, 5, 5]] and p.points.tolist() == [[2, 2]]


def test_mask_shape_crops_and_outlines():
    mask = np.zeros((100, 200), bool)
    mask[10:20, 50:80] = True
    shape = mask_shape(mask)
    assert shape.bbox == (50, 10, 80, 20) and shape.area_px == 300
    assert shape.crop.shape == (10, 30) and shape.crop.flags["C_CONTIGUOUS"]
    (outline,) = shape.outlines
    assert outline[:, 0].min() == 50.5 and outline[:, 1].max() == 19.5
    assert mask_shape(np.zeros((5, 5), bool)) is None
    assert shape.edge is None


def test_mask_shape_of_a_ragged_mask_is_edge_pixels():
    # a random mask (what random-weight models give) has a boundary far too long to trace
    rng = np.random.default_rng(0)
    mask = np.zeros((400, 700), bool)
    mask[5:395, 10:690] = rng.random((390, 680)) < 0.8
    shape = mask_shape(mask)
    assert shape.outlines == () and shape.area_px == int(mask.sum())
    assert shape.bbox == (10, 5, 690, 395)
    crop = mask[5:395, 10:690]
    inner = np.zeros_like(crop)  # pixels whose 3x3 neighbourhood lies inside the mask
    inner[1:-1, 1:-1] = np.all([crop[1 + dy:crop.shape[0] - 1 + dy, 1 + dx:crop.shape[1] - 1 + dx]
                                for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    assert np.array_equal(shape.edge.astype(bool), crop & ~inner)


# ---------------------------------------------------------------- autosave, store, export


@pytest.fixture
def autosave(tmp_path):
    store = InspectionStore(tmp_path / "i.db")
    yield Autosave(store, load_recipe(RECIPE), Station("ann", "st1", "lot7"))
    store.close()


def _mask(x0, y0, x1, y1, shape=(480, 640)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_each_accepted_defect_is_stored_and_a_new_store_sees_it(autosave, tmp_path):
    path = tmp_path / "part.png"
    insp = autosave.new_inspection(path, "digest")
    f1 = autosave.make_finding(_mask(100, 100, 120, 104), "scratch", 0.9, {"boxes": None})
    assert f1.measurements.area_px == 80 and f1.measurements.area_mm2 == pytest.approx(0.2)
    autosave.add(insp, [f1])
    f2 = autosave.make_finding(_mask(300, 300, 310, 310), "pit", 0.8, None)
    autosave.add(insp, [f2])
    assert insp.id is not None and f2.id is not None and insp.verdict is None
    with InspectionStore(tmp_path / "i.db") as other:  # another process, e.g. after a crash
        again = other.latest_inspection(image_key(path))
    assert [f.defect_class for f in again.findings] == ["scratch", "pit"]
    assert again.operator == "ann" and again.lot == "lot7" and again.recipe_name == "demo_part"
    assert np.array_equal(again.findings[1].mask, f2.mask)
    assert autosave.statuses([path, tmp_path / "other.png"]) == {
        path: IN_PROGRESS, tmp_path / "other.png": NOT_STARTED}
    trail = autosave.store.audit_trail(inspection_id=insp.id)
    assert [a.action for a in trail] == ["add_inspection", "add_defect"]


def test_finish_stores_the_verdict_and_later_changes_keep_it_current(autosave, tmp_path):
    path = tmp_path / "part.png"
    insp = autosave.new_inspection(path, "digest")
    assert autosave.finish(insp).status == "PASS"  # no defects
    assert autosave.statuses([path]) == {path: "PASS"}
    crack = autosave.make_finding(_mask(10, 100, 60, 103), "crack", 0.7, None)
    autosave.add(insp, [crack])
    assert autosave.load(path).verdict.status == "FAIL"  # any crack fails the part
    autosave.remove(insp, [crack])
    stored = autosave.load(path)
    assert stored.findings == [] and stored.verdict.status == "PASS"
    autosave.add(insp, [crack])
    autosave.set_class(insp, crack, "stain")
    assert autosave.load(path).findings[0].defect_class == "stain"
    assert autosave.statuses([path]) == {path: "PASS"}


def test_without_a_recipe_sizes_are_in_pixels_and_any_defect_fails(tmp_path):
    with InspectionStore(tmp_path / "i.db") as store:
        a = Autosave(store, None, Station())
        f = a.make_finding(_mask(0, 0, 4, 4, (10, 10)), "defect", None, None)
        assert a.class_names == ("defect",) and f.measurements.area_mm2 is None
        assert a.verdict([]).status == "PASS" and a.verdict([f]).status == "FAIL"


def test_latest_verdicts_reads_the_newest_inspection_per_image(tmp_path):
    from app.inspection.findings import Inspection, Verdict

    with InspectionStore(tmp_path / "i.db") as store:
        store.add_inspection(Inspection("a.png", "x", verdict=Verdict("FAIL")))
        store.add_inspection(Inspection("a.png", "x", verdict=Verdict("PASS")))
        store.add_inspection(Inspection("b.png", "y"))
        assert store.latest_verdicts(["a.png", "b.png", "c.png"]) == {"a.png": "PASS",
                                                                       "b.png": None}
        assert store.latest_inspection("c.png") is None
        with pytest.raises(Exception, match="no inspection"):
            store.add_defect(999, Finding("pit"), actor="t")


def test_export_folder_writes_coco_and_label_maps(autosave, tmp_path):
    insp = autosave.new_inspection(tmp_path / "p1.png", "d")
    masks = [_mask(10, 10, 20, 20), _mask(15, 15, 40, 30)]
    autosave.add(insp, [autosave.make_finding(m, "pit", 0.5, None) for m in masks])
    summary = export_folder([autosave.load(tmp_path / "p1.png")], tmp_path / "out")
    coco = json.loads(summary.coco_path.read_text())
    assert [a["area"] for a in coco["annotations"]] == [100, 375]
    assert coco["categories"] == [{"id": 1, "name": "pit", "supercategory": "defect"}]
    labels = cv2.imread(str(summary.masks_dir / "p1.png"), cv2.IMREAD_UNCHANGED)
    # label value = defect number (uint8 up to 255 defects); later masks win overlaps
    assert labels.dtype == np.uint8 and (labels == 2).sum() == 375
    assert (labels == 1).sum() == 100 - 25


def test_cli_registers_gui_without_importing_qt():
    import subprocess
    import sys

    from app.shell.cli import COMMANDS

    assert "gui" in COMMANDS
    code = ("import argparse, sys; from app.shell.commands import gui; "
            "p = argparse.ArgumentParser(); "
            "gui.add_parser(p.add_subparsers(dest='command')); "
            "a = p.parse_args(['gui', 'f', '--prefetch', '3']); "
            "print(a.command, a.folder, a.prefetch, 'PySide6' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.split() == ["gui", "f", "3", "False"]


def test_gui_options_from_args():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    opts = GuiOptions.from_args(p.parse_args(["--db", "x.db", "--engine", "classic"]))
    assert opts.db == "x.db" and opts.engine == "classic" and opts.folder is None


def test_a_failed_save_leaves_nothing_shown_as_saved(tmp_path):
    from app.store import StoreError

    class BrokenStore:
        def add_inspection(self, inspection, actor=None):
            raise StoreError("disk full")

    a = Autosave(BrokenStore(), None, Station())
    insp = a.new_inspection(tmp_path / "p.png", "d")
    f = a.make_finding(_mask(0, 0, 3, 3, (8, 8)), "defect", None, None)
    with pytest.raises(StoreError, match="disk full"):
        a.add(insp, [f])
    assert insp.findings == [] and insp.id is None
