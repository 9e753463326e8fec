"""Engine choice: SAM when a checkpoint is installed, else the default engine, said plainly."""

import hashlib

import pytest
import torch
from segment_anything import sam_model_registry

from sam_engine.errors import CheckpointError, SamEngineError
from sam_engine.factory import load_engine
from sam_engine.prompts import Prompts
from sam_engine.weights import registry


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setattr(registry, "model_dirs", lambda: [d])
    monkeypatch.setenv("SAM_INSPECT_CACHE", str(tmp_path / "cache"))
    return d


def test_classic_is_always_available():
    eng = load_engine("classic")
    assert eng.info.name == "classic"


def test_auto_without_checkpoint_falls_back_and_says_so(models_dir):
    eng = load_engine("auto")  # the shipped base's manifest: classic wins on sample-style parts
    assert eng.info.name == "classic"
    assert "no SAM checkpoint installed" in eng.info.describe()
    assert "does at least as well as the learned base" in eng.info.note
    assert "sample-style synthetic parts" in eng.info.note


def test_auto_with_missing_named_model_falls_back(models_dir):
    eng = load_engine("auto", model="vit_h")
    assert eng.info.name == "classic" and "vit_h is not installed" in eng.info.note


def test_sam_without_checkpoint_is_a_clear_error(models_dir):
    with pytest.raises(SamEngineError, match="models download vit_b"):
        load_engine("sam")


def test_unknown_engine_name():
    with pytest.raises(SamEngineError, match="unknown engine 'bogus'"):
        load_engine("bogus")


def test_wrong_file_is_a_checkpoint_error_naming_it(models_dir):
    bad = models_dir / "sam_vit_b_01ec64.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="sam_vit_b_01ec64.pth"):
        load_engine("auto")


@pytest.mark.slow
def test_installed_vit_b_is_found_and_used(models_dir):
    """A random-weight vit_b saved under the official file name is picked up by auto."""
    torch.manual_seed(0)
    path = models_dir / "sam_vit_b_01ec64.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    with pytest.raises(CheckpointError, match="allow-unverified-checkpoint"):
        load_engine("auto", device="cpu")  # official name, other bytes: not the official vit_b
    eng = load_engine("auto", device="cpu", allow_unverified=True)
    assert eng.info.name == "sam" and eng.info.model_id == "vit_b"
    assert eng.info.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert eng.info.checkpoint_verified is False and "unverified" in eng.info.note
    assert eng.info.checkpoint.endswith("sam_vit_b_01ec64.pth")
    assert eng.cache.disk_dir == models_dir.parent / "cache"  # $SAM_INSPECT_CACHE
    # (the vit_b encoder takes seconds on a CPU: decode from a given embedding instead)
    h = eng.handle_from_embedding(torch.randn(1, 256, 64, 64).numpy(), (64, 96))
    res = eng.predict(h, Prompts.from_boxes([[30, 20, 60, 40]]), multimask_output=False)
    assert res.masks.shape == (1, 1, 64, 96)
