"""Golden samples (sam_engine.finder.anomaly) and `sam-inspect golden`.

Good parts: hard synthetic parts of one texture without defects (each with its own lighting
and camera); held out from the fit, they must give no finds; the same parts with a drawn
defect (a dark scratch, a dark spot) must give a find overlapping it. A small feature grid
and bank keep each test to about a second.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.shell import cli
from sam_engine.errors import CheckpointError
from sam_engine.finder.anomaly import GoldenError, GoldenSettings, fit_golden, load_golden
from sam_engine.finder.features import FeatureSettings
from sam_engine.finder.types import SOURCE_ANOMALY, UNKNOWN_CLASS
from sam_engine.learned import registry
from sam_engine.synthetic.hard import make_hard_part

SIZE = (120, 160)
TEXTURE = "brushed"
SMALL = GoldenSettings(features=FeatureSettings(grid_side=80), bank_size=4000)


def good(seed: int) -> np.ndarray:
    return make_hard_part(seed, size=SIZE, n_defects=0, texture=TEXTURE, colour=False).image


def with_defect(rgb: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """rgb with a drawn defect (70 grey levels darker), and the defect's mask."""
    mask = np.zeros(SIZE, np.uint8)
    if kind == "scratch":
        cv2.line(mask, (30, 30), (120, 80), 1, 3)
    else:
        cv2.circle(mask, (110, 40), 7, 1, -1)
    out = rgb.astype(np.int16)
    out[mask > 0] -= 70
    return np.clip(out, 0, 255).astype(np.uint8), mask > 0


@pytest.fixture(scope="module")
def model():
    return fit_golden([good(300 + i) for i in range(6)], SMALL)


def test_held_out_good_parts_give_no_finds(model):
    assert model.n_good == 6 and model.threshold > 0
    assert len(model.calibration["peaks"]) == 6
    for i in range(6):
        assert model.find(good(400 + i)) == []


def test_a_part_with_a_defect_gets_a_find_overlapping_it(model):
    for i, kind in [(i, k) for i in range(3) for k in ("scratch", "spot")]:
        img, truth = with_defect(good(400 + i), kind)
        found = model.find(img)
        assert found, kind
        assert any((f.mask & truth).any() for f in found), kind
        top = found[0]
        assert top.cls == UNKNOWN_CLASS and top.source == SOURCE_ANOMALY
        assert 0.0 < top.score < 1.0 and top.mask.shape == SIZE
        scores = model.score_map(img)
        assert scores.shape == SIZE and scores[truth].max() > 1.0


def test_uniform_images_give_no_finds(model):
    for value in (0, 128, 255):
        assert model.find(np.full(SIZE, value, np.uint8)[..., None].repeat(3, 2)) == []


def test_too_few_good_parts_are_refused():
    with pytest.raises(GoldenError, match="at least 2"):
        fit_golden([good(300)], SMALL)


def test_save_load_round_trip_and_tampering_refused(model, tmp_path):
    manifest = model.save(tmp_path / "g", "bracket-golden", "1")
    assert manifest.net["kind"] == "golden" and len(manifest.weights_sha256) == 64
    back = load_golden(tmp_path / "g")
    img, _ = with_defect(good(401), "spot")
    assert np.array_equal(back.score_map(img), model.score_map(img))
    assert back.threshold == model.threshold and back.model_id == "bracket-golden@1"
    weights = tmp_path / "g" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_golden(tmp_path / "g")


def test_a_fewshot_model_is_not_a_golden_one(tmp_path):
    from sam_engine.finder.fewshot import Example, teach

    img, mask = with_defect(good(300), "spot")
    teach([Example(img, mask, "spot")]).save(tmp_path / "e", "e", "1")
    with pytest.raises(CheckpointError, match="not 'golden'"):
        load_golden(tmp_path / "e")


# ---------------------------------------------------------------- the CLI
def test_cli_golden_fits_saves_and_promotes(tmp_path, capsys):
    folder = tmp_path / "good"
    folder.mkdir()
    for i in range(3):  # small parts: the command fits with the default (finer) settings
        rgb = make_hard_part(300 + i, size=(60, 80), n_defects=0, texture=TEXTURE).image
        cv2.imwrite(str(folder / f"part{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    rc = cli.main(["golden", "--good", str(folder), "--recipe-name", "bracket"])
    out = capsys.readouterr().out
    assert rc == 0 and "bracket-golden@1" in out and "3 good parts" in out
    promo = registry.promoted_for("bracket", section="golden")
    assert promo is not None and promo.model_id == "bracket-golden@1"
    assert load_golden(registry.model_dir("bracket-golden", "1")).n_good == 3


def test_cli_golden_refuses_bad_input(tmp_path, capsys):
    assert cli.main(["golden", "--good", str(tmp_path / "nope"), "--recipe-name", "p"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert cli.main(["golden", "--good", str(tmp_path), "--recipe-name", "p"]) == 2
    assert "no images" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "one.png"), good(300))
    assert cli.main(["golden", "--good", str(tmp_path), "--recipe-name", "p"]) == 2
    assert "at least 2" in capsys.readouterr().err
