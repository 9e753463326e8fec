"""The learned engine: crop geometry, the Engine contract, weights, training and resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_engine.errors import CheckpointError, PromptError, SamEngineError
from sam_engine.learned import crops
from sam_engine.learned.engine import LearnedEngine, load_learned, load_model
from sam_engine.learned.heldout import evaluate
from sam_engine.learned.model import CropUNet, NetConfig
from sam_engine.learned.train import TrainingInterrupted, TrainSettings, train
from sam_engine.learned.weights import WEIGHTS_NAME, ModelManifest
from sam_engine.prompts import Prompts
from tests.learned_support import TINY, blob_images, save_tiny, tiny_model

G = crops.CropGeometry()


def _engine(model: CropUNet | None = None) -> LearnedEngine:
    m = model if model is not None else tiny_model()
    return LearnedEngine(m, ModelManifest("tiny", "1", m.config.to_dict()))


# ------------------------------------------------------------------ geometry
def test_box_window_holds_the_box_with_a_margin_and_bounded_aspect():
    w = crops.box_window(np.array([100.0, 50.0, 400.0, 56.0]), 0.2, G)
    assert w.x0 <= 100 - 0.2 * 300 and w.x1 >= 400 + 0.2 * 300
    assert w.y0 <= 50 and w.y1 >= 56
    assert max(w.width, w.height) / min(w.width, w.height) <= G.max_aspect + 0.1


def test_click_windows_grow_with_the_candidate_and_hold_all_clicks():
    pts = np.array([[50.0, 60.0], [90.0, 65.0]])
    ws = crops.prompt_windows((200, 300), None, pts, np.array([1, 1]), None, 3, G)
    sides = [w.width for w in ws]
    assert sides[1] < sides[0] < sides[2]
    for w in ws:
        assert w.x0 <= 50 and w.x1 >= 90


def test_a_mask_survives_crop_and_back():
    mask = np.zeros((150, 220), bool)
    mask[40:90, 60:170] = True
    win = crops.box_window(np.array([60.0, 40.0, 170.0, 90.0]), 0.2, G)
    logits = (crops.crop_mask(mask, win, G.size) - 0.5) * 20
    back = crops.logits_to_image(logits, win, mask.shape) > 0
    assert (back & mask).sum() / (back | mask).sum() > 0.97
    low = crops.logits_to_low_res(logits, win, mask.shape)
    again = crops.low_res_to_mask(low, mask.shape)
    assert (again & mask).sum() / (again | mask).sum() > 0.9


def test_network_input_planes():
    rgb = np.full((100, 100, 3), 128, np.uint8)
    win = crops.box_window(np.array([30.0, 30.0, 60.0, 60.0]), 0.2, G)
    x = crops.network_input(rgb, win, G, np.array([30.0, 30.0, 60.0, 60.0]),
                            np.array([[45.0, 45.0], [10.0, 10.0]]), np.array([1, 0]), None)
    assert x.shape == (crops.IN_CHANNELS, G.size, G.size)
    assert np.abs(x[:3]).max() == 0  # a flat crop normalises to zeros
    assert 0.2 < x[3].mean() < 0.8  # the box covers the middle of the crop
    assert x[4].max() > 0.9  # the positive click is in the window
    assert x[5].max() < 1e-3  # the negative click is outside it
    assert x[7].min() == 1.0  # the window lies inside the image


# ------------------------------------------------------------------ the Engine contract
def test_engine_contract_shapes_and_refinement():
    eng = _engine()
    h = eng.set_image(np.random.default_rng(0).integers(0, 255, (90, 130, 3), np.uint8))
    m = eng.predict(h, Prompts.from_boxes([[10, 10, 50, 40], [60, 20, 120, 80]]))
    assert m.shape == (2, 3) and m.low_res_logits.shape == (2, 3, 256, 256)
    assert m.best(1).shape == (90, 130) and m.masks.dtype == bool
    one = eng.predict(h, Prompts.from_points([[30, 30]]), multimask_output=False)
    assert one.shape == (1, 1)
    ref = eng.predict(h, Prompts.from_points([[30, 30], [5, 5]], labels=[1, 0],
                                             mask_input=one.low_res_logits[0, :1]))
    assert ref.shape == (1, 3)
    with pytest.raises(PromptError, match="outside"):
        eng.predict(h, Prompts.from_points([[500, 5]]))
    with pytest.raises(PromptError):
        eng.predict(h, Prompts())


def test_engine_records_the_model_version_and_hash(tmp_path):
    man = save_tiny(tmp_path / "m", name="site", version="4")
    eng = load_learned(tmp_path / "m", device="cpu")
    assert eng.info.name == "learned" and eng.info.model_id == "site@4"
    assert eng.info.checkpoint_sha256 == man.weights_sha256 and eng.info.checkpoint_verified


def test_altered_weights_are_refused_naming_the_file(tmp_path):
    save_tiny(tmp_path / "m")
    path = tmp_path / "m" / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no manifest.json"):
        load_model(tmp_path)


# ------------------------------------------------------------------ training
def test_training_raises_held_out_iou_on_easy_data():
    data = blob_images(24, seed=1)
    test = blob_images(8, seed=2)
    model = tiny_model(seed=3)
    before = evaluate(_engine(model), test, kinds=("box",)).mean("box")
    report = train(model, data, TrainSettings(steps=60, batch=8, lr=3e-3, seed=0),
                   progress=False)
    after = evaluate(_engine(model), test, kinds=("box",)).mean("box")
    assert report.steps == 60
    assert np.mean(report.losses[-10:]) < np.mean(report.losses[:10])
    assert after > before + 0.2 and after > 0.6


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    data = blob_images(6, seed=4)
    s = TrainSettings(steps=8, batch=4, seed=5, checkpoint_every=50)
    whole = tiny_model(seed=1)
    train(whole, data, s, progress=False)

    ck = tmp_path / "run.ckpt"
    killed = tiny_model(seed=1)

    def kill(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="resume"):
        train(killed, data, s, checkpoint=ck, progress=False, on_step=kill)
    assert ck.is_file()
    resumed = tiny_model(seed=9)  # a fresh process: the checkpoint brings the weights back
    report = train(resumed, data, s, checkpoint=ck, progress=False)
    assert report.resumed_from == 5 and report.steps == 8
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    with pytest.raises(SamEngineError, match="other settings"):
        train(tiny_model(), data, TrainSettings(steps=9, batch=4, seed=5), checkpoint=ck,
              progress=False)


def test_training_without_instances_says_so():
    with pytest.raises(SamEngineError, match="no defect instances"):
        train(tiny_model(), [], TrainSettings(steps=1), progress=False)


def test_model_config_round_trips_and_rejects_unknown_architectures():
    cfg = NetConfig.from_dict(TINY.to_dict())
    assert cfg == TINY
    with pytest.raises(ValueError, match="architecture"):
        NetConfig.from_dict({**TINY.to_dict(), "arch": "other"})


def test_the_base_is_made_by_one_command_from_synthetic_parts(tmp_path):
    from sam_engine.learned.base import main
    from sam_engine.learned.weights import read_manifest

    out = tmp_path / "base"
    assert main(["--out", str(out), "--parts", "6", "--test-parts", "3", "--steps", "2",
                 "--batch", "4"]) == 0
    man = read_manifest(out)
    assert man.data["source"].startswith("sam_engine.synthetic") and man.data["parts"] == 6
    assert man.data["command"].endswith("--steps 2 --batch 4")
    assert {"synthetic_test", "classic_synthetic_test"} <= man.metrics.keys()
    assert not (out / "train.ckpt").exists()  # the resume file goes once the model is written
    load_model(out)


def test_the_shipped_base_beats_box_fill_on_real_steel_defects():
    """The base never saw a real image; on NEU-Seg's boxes it must still do better than the
    box itself (research-only data, read in place; skipped when absent)."""
    from pathlib import Path

    from sam_engine.learned.data import read_folder

    data_dir = Path(__file__).resolve().parents[2] / "shared" / "data" / "defects"
    if not (data_dir / "manifest.csv").is_file():
        pytest.skip(f"real-defect folder not found at {data_dir}")
    images = read_folder(data_dir, dataset="neu_seg").images[::9]  # every class, ~100 images
    h = evaluate(load_learned(device="cpu"), images, kinds=("box",))
    assert len(h.classes) > 150
    assert h.mean("box") > h.box_fill_mean() + 0.03
