"""A tuned model is a first-class engine: load_engine("learned"), --engine learned --model in
segment/eval/batch, auto's choice (promoted model, SAM, learned base vs classic) said with its
reason, a recipe's pinned model checked by sha256, and the model version in the store."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app.batch import BatchConfig, run_batch
from app.inspection.recipe import RecipeError
from app.shell.cli import main
from app.store import InspectionStore
from sam_engine.errors import CheckpointError, SamEngineError
from sam_engine.factory import load_engine
from sam_engine.learned import registry
from sam_engine.learned.model import CropUNet, NetConfig
from sam_engine.learned.weights import ModelManifest, save_model
from sam_engine.prompts import Prompts
from sam_engine.weights import registry as sam_registry
from tests.batch_data import RECIPE_BASE, write_parts

ROOT = Path(__file__).resolve().parents[1]
RECIPE = (RECIPE_BASE
          + '[[prompts]]\nclass = "pit"\nbox = [0.2, 0.2, 0.6, 0.6]\nframe = "relative"\n')


def save_tiny(folder: Path, name: str, version: str, seed: int = 0,
              metrics: dict | None = None) -> ModelManifest:
    """A freshly initialised crop network saved as a model folder (weights + manifest); its
    head's bias makes it answer every prompt with a non-empty mask."""
    torch.manual_seed(seed)
    model = CropUNet(NetConfig())
    with torch.no_grad():
        model.head.bias.fill_(4.0)
    return save_model(folder, model.state_dict(),
                      ModelManifest(name, version, net=model.config.to_dict(),
                                    metrics=metrics or {}))


def figures(base: float, classic: float | None) -> dict:
    out = {"synthetic_test": {"all": {"n": 10, "box": base}}}
    if classic is not None:
        out["classic_synthetic_test"] = {"all": {"n": 10, "box": classic}}
    return out


@pytest.fixture
def tuned(tmp_path, monkeypatch) -> Path:
    """An empty tuned-model registry ($SAM_INSPECT_TUNED), no SAM checkpoint anywhere, and no
    learned base (its folder is tmp_path/base, created by the tests that want one)."""
    root = tmp_path / "tuned"
    monkeypatch.setenv(registry.ENV_TUNED, str(root))
    empty = tmp_path / "sam-models"
    empty.mkdir()
    monkeypatch.setattr(sam_registry, "model_dirs", lambda: [empty])
    monkeypatch.setattr(registry, "BASE_DIR", tmp_path / "base")
    return root


@pytest.fixture
def site(tuned) -> ModelManifest:
    """Tuned model "site" in two versions; returns version 1's manifest."""
    first = save_tiny(registry.model_dir("site", "1"), "site", "1", seed=1)
    save_tiny(registry.model_dir("site", "2"), "site", "2", seed=2)
    return first


def part_image(path: Path) -> Path:
    img = np.full((80, 100, 3), 200, np.uint8)
    img[30:50, 40:70] = 40
    cv2.imwrite(str(path), img)
    return path


# ------------------------------------------------------------------ load_engine("learned")
def test_learned_engine_by_name_version_latest_and_base(site, tuned):
    eng = load_engine("learned", model="site@1", device="cpu")
    assert (eng.info.name, eng.info.model_id) == ("learned", "site@1")
    assert eng.info.checkpoint_sha256 == site.weights_sha256
    assert eng.info.checkpoint == str(registry.model_dir("site", "1"))
    assert load_engine("learned", model="site", device="cpu").info.model_id == "site@2"
    base = save_tiny(registry.BASE_DIR, registry.BASE_NAME, "1")
    eng = load_engine("learned", device="cpu")  # the default: the base
    assert eng.info.model_id == "learned-base@1"
    assert eng.info.checkpoint_sha256 == base.weights_sha256
    h = eng.set_image(np.full((64, 80, 3), 128, np.uint8))
    res = eng.predict(h, Prompts.from_boxes([[10, 10, 40, 30]]), multimask_output=False)
    assert res.best(0).shape == (64, 80)


def test_unknown_model_lists_the_known_ones(site):
    with pytest.raises(CheckpointError, match=r"no tuned model named 'nope'.*known: site.*"
                                              r"learned-base"):
        load_engine("learned", model="nope")
    with pytest.raises(CheckpointError, match="site has no version 9; it has 1, 2"):
        load_engine("learned", model="site@9")


def test_missing_base_says_how_to_get_one(tuned):
    with pytest.raises(CheckpointError, match="learned model learned-base is not installed"):
        load_engine("learned")


def test_damaged_weights_are_named_with_their_sha256(site):
    path = registry.model_dir("site", "1") / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        load_engine("learned", model="site@1")
    msg = str(info.value)
    assert str(path) in msg and hashlib.sha256(bytes(data)).hexdigest() in msg
    assert site.weights_sha256 in msg


def test_expected_sha256_is_checked_for_learned_models(site):
    with pytest.raises(CheckpointError, match="not the expected " + "0" * 64):
        load_engine("learned", model="site@1", checkpoint_sha256="0" * 64)
    eng = load_engine("learned", model="site@1", checkpoint_sha256="0" * 64,
                      allow_unverified=True)
    assert eng.info.checkpoint_verified is False and "unverified" in eng.info.note


# ------------------------------------------------------------------ auto: which and why
def test_auto_picks_the_model_promoted_for_the_recipe_and_says_why(site, caplog):
    registry.promote("bracket", site, reason="beat the classic engine on held-out masks")
    with caplog.at_level(logging.INFO, logger="sam_engine.factory"):
        eng = load_engine("auto", recipe="bracket", device="cpu")
    assert (eng.info.name, eng.info.model_id) == ("learned", "site@1")
    assert "promoted for recipe 'bracket'" in eng.info.note
    assert "beat the classic engine" in eng.info.note
    assert eng.info.note in caplog.text
    other = load_engine("auto", recipe="other")  # nothing promoted, no SAM, no base
    assert other.info.name == "classic"
    assert "no model is promoted for recipe 'other'" in other.info.note
    assert "no SAM checkpoint installed" in other.info.note


def test_a_promoted_model_whose_weights_changed_is_refused(site):
    registry.promote("bracket", site)
    save_tiny(registry.model_dir("site", "1"), "site", "1", seed=7)  # other bytes, same id
    with pytest.raises(CheckpointError, match="not the expected " + site.weights_sha256):
        load_engine("auto", recipe="bracket")


@pytest.mark.parametrize(
    ("state", "engine", "words"),
    [("missing", "classic", "learned base is not installed"),
     ("bad_manifest", "classic", "learned base is damaged"),
     ("no_comparison", "classic", "records no held-out comparison with the classic engine"),
     ("classic_better", "classic", "does at least as well as the learned base"),
     ("base_better", "learned", "the learned base beats the classic engine"),
     ("bad_weights", "classic", "learned base is damaged")])
def test_auto_without_sam_weighs_the_base_against_classic(tuned, state, engine, words):
    base = registry.BASE_DIR
    if state != "missing":
        metrics = {"no_comparison": figures(0.8, None),
                   "classic_better": figures(0.6, 0.7)}.get(state, figures(0.8, 0.6))
        save_tiny(base, registry.BASE_NAME, "1", metrics=metrics)
    if state == "bad_manifest":
        (base / "manifest.json").write_text("{ not json")
    if state == "bad_weights":
        (base / "model.safetensors").write_bytes(b"truncated")
    eng = load_engine("auto", device="cpu")
    assert eng.info.name == engine
    assert words in eng.info.note and "no SAM checkpoint installed" in eng.info.note
    if state == "base_better":
        assert eng.info.model_id == "learned-base@1" and "0.800" in eng.info.note


def test_auto_with_a_named_learned_model_loads_it(site):
    eng = load_engine("auto", model="site@2")
    assert eng.info.model_id == "site@2" and "as named" in eng.info.note


# ------------------------------------------------------------------ CLI: segment, eval
def test_segment_with_a_tuned_model(site, tmp_path, capsys):
    img = part_image(tmp_path / "part.png")
    rc = main(["segment", str(img), "--box", "36,26,74,54", "--engine", "learned",
               "--model", "site@1", "--out", str(tmp_path / "o")])
    assert rc == 0
    info = json.loads((tmp_path / "o" / "part_result.json").read_text())
    assert info["engine"].startswith("learned:site@1") and len(info["areas_px"]) == 1


def test_segment_auto_with_a_recipe_says_on_stderr_which_model_and_why(site, tmp_path):
    registry.promote("synthetic", site, reason="passed the gate")
    (tmp_path / "r.toml").write_text(RECIPE)
    img = part_image(tmp_path / "part.png")
    env = {**os.environ, registry.ENV_TUNED: str(registry.registry_root())}
    proc = subprocess.run(
        [sys.executable, "-m", "app.shell.cli", "segment", str(img), "--box", "36,26,74,54",
         "--recipe", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "auto: site@1, promoted for recipe 'synthetic'" in proc.stderr
    assert "passed the gate" in proc.stderr


def test_eval_with_a_tuned_model(site, tmp_path, capsys):
    from tests.test_evaluation import write_tiny_dataset

    write_tiny_dataset(tmp_path)
    assert main(["eval", str(tmp_path), "--model", "site@1", "--limit", "3",
                 "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("engine: learned:site@1")
    assert lines[-1].startswith("mean_iou=") and "n=3" in lines[-1]
    assert main(["eval", str(tmp_path), "--engine", "classic", "--model", "site@1"]) == 2
    assert "the classic engine has no model" in capsys.readouterr().err


# ------------------------------------------------------------------ a recipe pins its model
def pinned_recipe(tmp_path: Path, name: str, sha256: str) -> Path:
    path = tmp_path / "pinned.toml"
    path.write_text(RECIPE + f'\n[model]\nname = "{name}"\nsha256 = "{sha256}"\n')
    return path


def test_a_recipe_pin_with_another_sha256_is_refused(site, tmp_path, capsys):
    wrong = "0" * 64
    recipe = pinned_recipe(tmp_path, "site@1", wrong)
    write_parts(tmp_path / "in", 1)
    with pytest.raises(RecipeError) as info:
        run_batch(BatchConfig(tmp_path / "in", tmp_path / "out", recipe=recipe, quiet=True))
    msg = str(info.value)
    assert str(recipe) in msg and wrong in msg and site.weights_sha256 in msg
    img = part_image(tmp_path / "part.png")
    assert main(["segment", str(img), "--box", "36,26,74,54", "--recipe", str(recipe),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and wrong in err and site.weights_sha256 in err
    assert not (tmp_path / "o" / "part_mask.png").exists()


def test_a_recipe_pin_conflicting_with_engine_options_is_refused(site, tmp_path):
    recipe = pinned_recipe(tmp_path, "site@1", site.weights_sha256)
    write_parts(tmp_path / "in", 1)
    with pytest.raises(RecipeError, match="pins site@1 .*--engine classic"):
        run_batch(BatchConfig(tmp_path / "in", tmp_path / "out", recipe=recipe,
                              engine="classic", quiet=True))
    assert not (tmp_path / "out").exists()  # refused before any work


def test_batch_with_a_pinned_model_records_its_version_in_the_store(site, tmp_path):
    recipe = pinned_recipe(tmp_path, "site@1", site.weights_sha256)
    write_parts(tmp_path / "in", 2)
    result = run_batch(BatchConfig(tmp_path / "in", tmp_path / "out", recipe=recipe,
                                   quiet=True, device="cpu"))
    assert result.exit_code == 0 and len(result.records) == 2
    assert result.summary["engine"].startswith("learned:site@1")
    with InspectionStore(tmp_path / "out" / "inspections.db") as store:
        stored = list(store.iter_inspections())
    assert len(stored) == 2
    for ins in stored:
        assert (ins.engine, ins.model_id) == ("learned", "site@1")
        assert ins.checkpoint_sha256 == site.weights_sha256
        assert ins.findings and all(f.source == "learned" for f in ins.findings)


def test_segment_with_a_pinned_model_uses_it(site, tmp_path):
    recipe = pinned_recipe(tmp_path, "site@2", _sha(registry.resolve("site@2")))
    img = part_image(tmp_path / "part.png")
    assert main(["segment", str(img), "--box", "36,26,74,54", "--recipe", str(recipe),
                 "--out", str(tmp_path / "o")]) == 0
    info = json.loads((tmp_path / "o" / "part_result.json").read_text())
    assert info["engine"].startswith("learned:site@2")


def _sha(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_classic_and_unknown_engines_are_unchanged():
    assert load_engine("classic").info.name == "classic"
    with pytest.raises(SamEngineError, match="unknown engine 'bogus'"):
        load_engine("bogus")
