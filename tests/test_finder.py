"""The zero-click finder: pre/post-processing, grouping, metrics, training and resume, the
plan of which model finds which class, `segment --find` and `tune --finder`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sam_engine.finder.metrics import Tally, Truth
from sam_engine.finder.preprocess import (
    FinderGeometry,
    InputInfo,
    PostSettings,
    finder_input,
    group_components,
    postprocess,
)
from sam_engine.finder.types import Found
from tests.finder_support import (
    CLASSES,
    blob_dataset,
    blob_image,
    tiny_config,
    tiny_settings,
    train_tiny_finder,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread) -> Path:
    return train_tiny_finder(tmp_path_factory.mktemp("reg") / "tiny-finder" / "1")


# ------------------------------------------------------------------ pre/post-processing
def test_input_is_resized_standardised_and_padded():
    rgb = np.random.default_rng(0).integers(0, 255, (480, 630, 3), np.uint8)
    x, info = finder_input(rgb, FinderGeometry(long_side=256, multiple=16))
    assert info.resized == (195, 256) and info.padded == (208, 256)
    assert x.shape == (1, 3, 208, 256)
    inside = x[0, :, :195]
    assert abs(float(inside.mean())) < 0.05 and abs(float(inside.std()) - 1) < 0.05
    assert not x[0, :, 195:].any()  # padding is zero


def test_flat_image_is_not_amplified():
    x, _ = finder_input(np.full((50, 50, 3), 77, np.uint8), FinderGeometry(64))
    assert np.abs(x).max() == 0


def _reference(probs, info, threshold=0.5):
    fg = probs[1:].sum(0)[:info.resized[0], :info.resized[1]]
    full = cv2.resize(fg, info.image_size[::-1], interpolation=cv2.INTER_LINEAR)
    return full > threshold


def test_windowed_postprocess_equals_full_resolution_threshold():
    rng = np.random.default_rng(1)
    info = InputInfo((700, 900), (199, 256), (208, 256))
    p = np.zeros((3, 208, 256), np.float32)
    p[0] = 1
    for k in range(10):
        y, x = rng.integers(0, 185, 1)[0], rng.integers(0, 240, 1)[0]
        p[0, y:y + 9, x:x + 13] = 0.3
        p[1 + k % 2, y:y + 9, x:x + 13] = 0.7
    found = postprocess(p, info, ("a", "b"), settings=PostSettings(min_area=1, min_score=0))
    union = np.logical_or.reduce([f.mask for f in found])
    assert np.array_equal(union, _reference(p, info))
    for f in found:
        ys, xs = np.nonzero(f.mask)
        assert f.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_postprocess_looks_only_for_wanted_classes_and_names_unknown_ones():
    info = InputInfo((64, 64), (64, 64), (64, 64))
    p = np.zeros((3, 64, 64), np.float32)
    p[0] = 1
    p[0, 10:20, 10:20], p[1, 10:20, 10:20] = 0, 1  # class a
    p[0, 40:50, 40:50], p[2, 40:50, 40:50] = 0, 1  # class b
    assert [f.cls for f in postprocess(p, info, ("a", "b"), ["b"])] == ["b"]
    assert sorted(f.cls for f in postprocess(p, info, ("a", "b"))) == ["a", "b"]
    with pytest.raises(ValueError, match="crack"):
        postprocess(p, info, ("a", "b"), ["crack"])


def test_fragments_within_the_radius_are_one_defect():
    m = np.zeros((100, 100), bool)
    m[10:14, 10:14] = m[10:14, 17:21] = True  # 3 px apart
    m[60:64, 60:64] = True  # far away
    assert len(group_components(m, 0)) == 3
    groups = group_components(m, 3)
    assert sorted(int(g.sum()) for g in groups) == [16, 32]


def test_tally_counts_recall_precision_and_false_alarms():
    gt = np.zeros((50, 50), bool)
    gt[5:15, 5:15] = True
    hit = Found("a", 0.9, gt.copy(), (5, 5, 15, 15))
    stray = np.zeros((50, 50), bool)
    stray[30:35, 30:35] = True
    miss = Found("a", 0.8, stray, (30, 30, 35, 35))
    t = Tally()
    t.add([hit, miss], Truth({"a": gt}, (50, 50)), ["a"])
    t.add([miss], Truth({}, (50, 50)), ["a"])  # a clean part with an alarm
    s = t.summary()
    assert s["per_class"]["a"]["recall"] == 1.0
    assert s["per_class"]["a"]["precision"] == pytest.approx(1 / 3, abs=1e-3)
    assert s["false_alarm_rate"] == 1.0 and s["class_accuracy"] == 1.0


# ------------------------------------------------------------------ training
def test_a_trained_finder_finds_both_classes_and_nothing_on_a_uniform_image(tiny):
    from sam_engine.finder.finder import load_finder

    f = load_finder(tiny)
    rng = np.random.default_rng(42)
    t = Tally()
    for _ in range(8):
        rgb, lab = blob_image(rng, (128, 160))
        r = f.find(rgb)
        t.add(r.found, Truth({"scratch": lab == 1, "pit": lab == 2}, lab.shape), CLASSES)
    s = t.summary()["per_class"]
    assert s["scratch"]["pixel_iou"] > 0.6 and s["pit"]["pixel_iou"] > 0.6
    assert f.find(np.full((120, 90, 3), 128, np.uint8)).found == ()
    assert f.find(np.zeros((120, 90, 3), np.uint8)).found == ()


def test_a_killed_training_resumes_to_the_same_weights(tmp_path, one_thread):
    from sam_engine.finder.model import FinderNet
    from sam_engine.finder.train import train_finder
    from sam_engine.learned.train import TrainingInterrupted

    data = blob_dataset(8).images
    s = tiny_settings(30)
    torch.manual_seed(0)
    ref = FinderNet(tiny_config())
    train_finder(ref, data, (), s, progress=False)

    ck = tmp_path / "f.ckpt"
    torch.manual_seed(0)
    net = FinderNet(tiny_config())

    def stop(step, _loss):
        if step == 21:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="resume"):
        train_finder(net, data, (), s, checkpoint=ck, progress=False, on_step=stop)
    torch.manual_seed(123)  # resuming restores the random state from the checkpoint
    again = FinderNet(tiny_config())
    train_finder(again, data, (), s, checkpoint=ck, progress=False)
    for k, v in ref.state_dict().items():
        assert torch.allclose(v.float(), again.state_dict()[k].float(), atol=1e-5), k


def test_training_without_defects_of_the_classes_says_so(one_thread):
    from sam_engine.errors import SamEngineError
    from sam_engine.finder.model import FinderNet
    from sam_engine.finder.train import train_finder

    with pytest.raises(SamEngineError, match="no defects of the classes"):
        train_finder(FinderNet(tiny_config(("crack",))), blob_dataset(2).images, (),
                     tiny_settings(2), progress=False)


# ------------------------------------------------------------------ plan and CLI
def test_a_class_no_model_knows_gets_the_way_to_teach_it(tiny):
    from app.finding.plan import FindError, plan_find

    with pytest.raises(FindError) as e:
        plan_find(["crack"], finder=str(tiny))
    msg = str(e.value)
    assert "'crack'" in msg and "scratch, pit" in msg
    assert "sam-inspect teach --class crack" in msg and "tune --finder" in msg


def test_nothing_trained_for_the_recipe_says_what_to_do():
    from app.finding.plan import FindError, plan_find
    from app.inspection.recipe import load_recipe

    with pytest.raises(FindError, match="no finder, taught examples or golden samples"):
        plan_find(None, load_recipe(DEMO_RECIPE))


def test_recipe_classes_the_finder_does_not_know_are_left_out_and_named(tiny):
    from app.finding.plan import plan_find
    from app.inspection.recipe import load_recipe

    plan = plan_find(None, load_recipe(DEMO_RECIPE), finder=str(tiny))
    assert plan.wanted == ("scratch", "pit")
    assert "crack" in plan.not_looked_for and "stain" in plan.not_looked_for
    assert "not looked for" in plan.describe()


def test_segment_find_writes_defects_measurements_and_a_verdict(tiny, tmp_path, capsys):
    from app.shell.cli import main

    rgb, lab = blob_image(np.random.default_rng(7), (480, 640))
    img = tmp_path / "part.png"
    cv2.imwrite(str(img), rgb[..., ::-1])
    code = main(["segment", str(img), "--find", "scratch,pit", "--finder", str(tiny),
                 "--recipe", str(DEMO_RECIPE), "--out", str(tmp_path)])
    assert code == 0
    res = json.loads((tmp_path / "part_result.json").read_text())
    assert sorted(d["class"] for d in res["defects"]) == ["pit", "scratch"]
    assert all(d["measurements"]["area_mm2"] > 0 for d in res["defects"])
    assert res["verdict"]["status"] in ("PASS", "FAIL")
    label = cv2.imread(str(tmp_path / "part_mask.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(label)) == {0, 1, 2}


def test_segment_find_on_an_unknown_class_exits_with_the_message(tiny, tmp_path, capsys):
    from app.shell.cli import main

    img = tmp_path / "u.png"
    cv2.imwrite(str(img), np.full((64, 64, 3), 128, np.uint8))
    assert main(["segment", str(img), "--find", "crack", "--finder", str(tiny)]) != 0
    assert "sam-inspect teach --class crack" in capsys.readouterr().err


def test_tune_finder_trains_gates_and_promotes(tmp_path, one_thread, monkeypatch):
    from app.tuning import finder_run
    from app.tuning.finder_run import FinderTuneRequest, tune_finder
    from sam_engine.learned import registry

    monkeypatch.setattr(finder_run, "CLEAN_TRAIN_SEEDS", range(0))
    monkeypatch.setattr(finder_run, "CLEAN_TEST_SEEDS", range(0))
    monkeypatch.setattr(finder_run, "default_config", lambda classes, images: tiny_config(classes))
    monkeypatch.setattr(finder_run, "default_settings", lambda seed, steps: tiny_settings(60))
    root = tmp_path / "reg"
    req = FinderTuneRequest(blob_dataset(30), "blobs", recipe="demo_part", held_out=0.3,
                            root=root)
    out = tune_finder(req, progress=False)
    assert out.promoted, out.reason
    assert registry.promoted_for("demo_part", root, section="finders").model_id == "blobs@1"
    m = json.loads((out.folder / "manifest.json").read_text())
    assert m["net"]["kind"] == "finder" and m["split"]["held_out_images"]
    # the same again is no better than the one promoted: kept, not used
    again = tune_finder(req, progress=False)
    assert not again.promoted and "blobs@1" in again.reason
    assert registry.promoted_for("demo_part", root, section="finders").model_id == "blobs@1"


def test_the_finder_works_at_the_scale_of_the_site_images():
    from app.tuning.finder_run import geometry_for

    def ims(side):
        return blob_dataset(3, size=(side, side)).images

    assert geometry_for(ims(200)).long_side == 224  # NEU-Seg's 200 px
    assert geometry_for(ims(100)).long_side == 160
    assert geometry_for(ims(1000)).long_side == 320  # a megapixel photo is shrunk


def test_batch_find_inspects_a_folder_without_prompts(tiny, tmp_path):
    from app.batch.config import BatchConfig
    from app.batch.runner import run_batch
    from app.store import InspectionStore

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(11)
    for i in range(2):
        rgb, _ = blob_image(rng, (240, 320))
        cv2.imwrite(str(src / f"p{i}.png"), rgb[..., ::-1])
    cv2.imwrite(str(src / "clean.png"), np.full((240, 320, 3), 128, np.uint8))
    res = run_batch(BatchConfig(input=src, out=tmp_path / "out", recipe=DEMO_RECIPE,
                                find=("scratch", "pit"), finder=str(tiny), engine="classic",
                                quiet=True))
    assert res.exit_code == 0
    by = {Path(r.rel).stem: r.inspection for r in res.records}
    assert by["clean"].findings == [] and by["clean"].verdict.passed
    found = by["p0"].findings + by["p1"].findings
    assert {f.defect_class for f in found} == {"pit", "scratch"}
    assert {f.source for f in found} == {"finder"}
    assert all(f.measurements.area_px > 0 for f in found)
    with InspectionStore(tmp_path / "out" / "inspections.db") as store:
        assert len(list(store.iter_inspections())) == 3


def test_batch_find_with_a_class_nobody_knows_stops_before_the_run(tiny, tmp_path):
    from app.batch.config import BatchConfig
    from app.batch.runner import run_batch
    from sam_engine.errors import SamEngineError

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(SamEngineError, match="teach --class crack"):
        run_batch(BatchConfig(input=src, out=tmp_path / "out", find=("crack",),
                              finder=str(tiny), engine="classic", quiet=True))


def test_golden_samples_alone_do_not_stand_in_for_a_class_asked_for(tmp_path):
    from app.finding.plan import FindError, plan_find
    from sam_engine.finder.anomaly import fit_golden

    rng = np.random.default_rng(0)
    good = [rng.normal(128, 4, (64, 64, 3)).clip(0, 255).astype(np.uint8) for _ in range(3)]
    folder = tmp_path / "gold" / "1"
    fit_golden(good).save(folder, "gold", "1")
    with pytest.raises(FindError, match="teach --class crack"):
        plan_find(["crack"], golden=str(folder))
    plan = plan_find(None, golden=str(folder))
    assert plan.golden is not None and plan.wanted == ()
