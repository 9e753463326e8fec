"""`sam-inspect tune --base vit_b`: a SAM checkpoint tuned into a delta in the tuned-model
registry, gated like the learned models, and loaded back as SAM wherever a model is named.

The base is a tiny random SAM (tests/sam_factory.tiny_sam) saved as a checkpoint file and
built in place of vit_b (checkpoint.build_arch is replaced); the data are easy ellipses that
it learns in a few steps (held-out IoU ~0.08 -> ~0.8 after 6 steps). One tuning run is shared
(module fixture, its own registry root); tests copy its model folder into their own registry.
Torch runs on one thread (see tests/test_sam_tune.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.tuning import run as tuning
from app.tuning.run import TuneRequest, tune
from sam_engine.errors import SamEngineError
from sam_engine.factory import load_engine, load_sam_delta
from sam_engine.learned import registry
from sam_engine.learned.data import Dataset
from sam_engine.learned.sam_tune import DeltaBaseMismatchError, SamTuneSettings
from sam_engine.learned.weights import read_manifest
from sam_engine.prompts import Prompts
from sam_engine.weights import checkpoint
from sam_engine.weights import registry as weights_registry
from tests.learned_support import easy_image
from tests.sam_factory import save_state_dict, tiny_sam

QUICK = SamTuneSettings(steps=6, lr=1e-3, images_per_step=1, instances_per_image=1,
                        warmup_steps=1, p_corrective=0.0, checkpoint_every=2, device="cpu")
OFFICIAL_VIT_B = "sam_vit_b_01ec64.pth"


DATA = Dataset([easy_image(i) for i in range(10)], source="easy ellipses")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def request(base_checkpoint: Path, root: Path, **kw) -> TuneRequest:
    return TuneRequest(data=DATA, name="site", recipe="partA", base="vit_b",
                       base_checkpoint=base_checkpoint, held_out=0.3,
                       sam_settings=kw.pop("sam_settings", QUICK), root=root,
                       checkpoint_dir=root / ".checkpoints", **kw)


def _isolate(mp: pytest.MonkeyPatch, models: Path, cache: Path) -> None:
    """No installed checkpoint but those in `models`; a tiny SAM built for any architecture."""
    mp.setattr(weights_registry, "model_dirs", lambda: [models])
    mp.setattr(checkpoint, "build_arch", lambda arch: tiny_sam(seed=1))
    mp.setenv("SAM_INSPECT_CACHE", str(cache))  # sha256 records and embeddings


def _no_rivals(mp) -> None:
    """Gate against the current model only: on these easy ellipses the classic engine (a rival
    the real gate also weighs, tested in test_tune.py) would outscore a few steps of tuning."""
    import app.tuning.run as run_mod

    mp.setattr(run_mod, "rivals", lambda *a, **k: {})


@pytest.fixture(autouse=True)
def no_rivals(monkeypatch):
    _no_rivals(monkeypatch)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tuning run from a tiny checkpoint: (outcome, registry root, checkpoint file)."""
    tmp = tmp_path_factory.mktemp("sam_tune_run")
    base = save_state_dict(tiny_sam(seed=0), tmp / "ckpt" / "tiny_vit_b.pth")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp / "models", tmp / "cache")
        _no_rivals(mp)
        out = tune(request(base, tmp / "tuned"), progress=False)
    torch.set_num_threads(n)
    return out, tmp / "tuned", base


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    _isolate(monkeypatch, models, tmp_path / "cache")
    return models


@pytest.fixture
def installed(tuned, tuned_registry, isolated):
    """The shared run's model folder and promotions copied into this test's registry."""
    out, root, _ = tuned
    shutil.copytree(out.folder, registry.model_dir("site", "1"))
    shutil.copy(root / registry.PROMOTED, tuned_registry / registry.PROMOTED)
    return registry.model_dir("site", "1")


# ------------------------------------------------------------------ tuning and the gate
def test_a_tuned_sam_is_a_registered_delta_and_promoted_when_better(tuned):
    out, root, base = tuned
    assert out.promoted and out.current == "vit_b" and out.manifest.model_id == "site@1"
    assert "held-out mean IoU" in out.reason
    assert out.after.mean("box") > out.before.mean("box") + 0.2
    assert out.folder == registry.model_dir("site", "1", root)
    assert sorted(p.name for p in out.folder.iterdir()) == [
        "delta.json", "delta.safetensors", "manifest.json"]
    raw = json.loads((out.folder / "manifest.json").read_text())
    assert raw["kind"] == "sam-delta" and raw["net"]["kind"] == "sam-delta"
    m = read_manifest(out.folder)
    assert registry.is_sam_delta(m) and registry.is_sam_delta(out.folder)
    assert m.weights_sha256 == sha256(out.folder / "delta.safetensors")
    assert m.base == "vit_b" and m.base_sha256 == sha256(base)
    assert m.net["delta"] == "decoder" and m.net["base_checkpoint"] == str(base)
    assert m.data["digest"] == DATA.digest() and m.data["classes"] == ["blob"]
    assert len(m.split["held_out_images"]) == len(out.after.box_fill) == 3
    assert set(m.split["train_images"]).isdisjoint(m.split["held_out_images"])
    assert m.settings == QUICK.to_dict() and m.metrics["steps"] == QUICK.steps
    gate = m.metrics["gate"]
    assert gate["promoted"] and gate["gain"] > 0.2
    assert m.metrics["current"]["model"] == "vit_b"
    delta = json.loads((out.folder / "delta.json").read_text())
    assert delta["base_sha256"] == m.base_sha256 and delta["delta_sha256"] == m.weights_sha256
    assert all(n.startswith("mask_decoder.") for n in delta["tensors"])
    assert delta["held_out"]["after"] == m.metrics["held_out"]
    # the registry's tools work on it unchanged
    assert [x.model_id for x in registry.list_models(root)] == ["site@1"]
    assert registry.resolve("site@1", root) == out.folder
    p = registry.promoted_for("partA", root)
    assert p.model_id == "site@1" and p.sha256 == m.weights_sha256
    assert not list((root / ".checkpoints").iterdir())  # the training checkpoint is gone


def test_the_gate_refuses_a_worse_delta_compared_with_the_promoted_one(
        tuned, installed, tuned_registry, monkeypatch):
    real = tuning.tune_sam_decoder

    def ruin(sam, train, held, settings, **kw):
        result = real(sam, train, held, replace(settings, steps=0), **kw)
        with torch.no_grad():
            for p in sam.mask_decoder.parameters():
                p.zero_()  # every logit 0: empty masks
        return result

    monkeypatch.setattr(tuning, "tune_sam_decoder", ruin)
    _, _, base = tuned
    out = tune(request(base, tuned_registry), progress=False)
    # the current engine is the promoted delta of the same base, measured as it is used
    assert out.current == "site@1" and out.before.mean("box") > 0.5
    assert not out.promoted and "not above the margin" in out.reason
    assert out.after.mean("box") == 0.0
    assert out.manifest.model_id == "site@2" and (out.folder / "delta.safetensors").is_file()
    assert registry.promoted_for("partA").model_id == "site@1"
    assert read_manifest(out.folder).metrics["gate"]["promoted"] is False


def test_the_learned_family_measures_a_promoted_delta_and_refuses_it_as_a_base(
        installed, tmp_path):
    from sam_engine.learned.train import TrainSettings
    from tests.learned_support import save_tiny

    learned = TuneRequest(data=DATA, name="crops", recipe="partA", held_out=0.3,
                          settings=TrainSettings(steps=2, batch=4))
    with pytest.raises(SamEngineError, match="tuned SAM checkpoint.*--base vit_b"):
        tune(replace(learned, base="site@1"), progress=False)
    save_tiny(tmp_path / "crop-base", name="crop-base")
    out = tune(replace(learned, base=str(tmp_path / "crop-base")), progress=False)
    assert out.current == "site@1" and out.before.mean("box") > 0.5  # the delta, as used
    assert not out.promoted and registry.promoted_for("partA").model_id == "site@1"


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_delta(tuned, tuned_registry, isolated):
    out, _, base = tuned

    def stop(step, total):
        if step == 3:
            raise KeyboardInterrupt

    req = request(base, tuned_registry)
    with pytest.raises(KeyboardInterrupt):
        tune(req, progress=False, on_step=stop)
    assert len(list(req.checkpoint_dir.glob("site.*.sam.ckpt"))) == 1
    assert registry.versions("site") == []  # nothing registered by an interrupted run
    again = tune(req, progress=False)
    # the same tensors as the uninterrupted run (the files' bytes may differ: safetensors
    # writes its metadata entries in no fixed order)
    a, b = (load_file(o.folder / "delta.safetensors") for o in (out, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(req.checkpoint_dir.glob("*.ckpt"))


# ------------------------------------------------------------------ loading
def _box_masks(eng, image):
    h = eng.set_image(image.rgb)
    x0, y0, x1, y1 = image.instances[0].bbox
    return h, eng.predict(h, Prompts.from_boxes([[x0, y0, x1, y1]]), multimask_output=True)


def test_a_delta_loads_as_sam_wherever_a_model_is_named(tuned, installed):
    out, _, base = tuned
    m = read_manifest(installed)
    tuned_eng = load_engine("learned", model="site@1", device="cpu", disk_cache=False)
    info = tuned_eng.info
    assert info.name == "sam" and info.model_id == "site@1"
    assert info.checkpoint_sha256 == m.weights_sha256 and info.checkpoint_verified is True
    assert info.checkpoint.endswith("delta.safetensors")
    assert "vit_b" in info.note and sha256(base) in info.note
    base_eng = load_engine("sam", model="vit_b", checkpoint=base, device="cpu",
                           disk_cache=False)
    image = DATA.images[0]
    h_tuned, tuned_masks = _box_masks(tuned_eng, image)
    h_base, base_masks = _box_masks(base_eng, image)
    assert not np.array_equal(tuned_masks.low_res_logits, base_masks.low_res_logits)
    # a decoder-only delta keeps the base's encoder, so its embeddings are the base's
    assert h_tuned.key == h_base.key
    # auto: as named, and as the recipe's promoted model
    named = load_engine("auto", model="site@1", device="cpu", disk_cache=False)
    assert named.info.model_id == "site@1" and "as named" in named.info.note
    auto = load_engine("auto", recipe="partA", device="cpu", disk_cache=False)
    assert auto.info.model_id == "site@1" and "promoted for recipe 'partA'" in auto.info.note


def test_the_base_is_found_installed_and_another_base_is_refused(tuned, installed, isolated):
    out, _, base = tuned
    manifest = json.loads((installed / "manifest.json").read_text())
    manifest["net"]["base_checkpoint"] = str(installed / "gone.pth")  # tuned elsewhere
    (installed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SamEngineError, match="not installed.*models download vit_b.*gone.pth"):
        load_engine("learned", model="site@1", device="cpu")
    official = isolated / OFFICIAL_VIT_B
    save_state_dict(tiny_sam(seed=5), official)  # another vit_b checkpoint than its base
    with pytest.raises(DeltaBaseMismatchError) as err:
        load_engine("learned", model="site@1", device="cpu")
    want, got = sha256(base), sha256(official)
    assert want in str(err.value) and got in str(err.value) and str(official) in str(err.value)
    assert err.value.expected_sha256 == want and err.value.actual_sha256 == got
    official.write_bytes(base.read_bytes())  # the base it was tuned from, installed
    eng = load_engine("learned", model="site@1", device="cpu", disk_cache=False)
    assert eng.info.model_id == "site@1" and str(official) in eng.info.note


def test_an_altered_delta_is_refused(installed):
    path = installed / "delta.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SamEngineError, match="truncated or altered"):
        load_engine("learned", model="site@1", device="cpu")


@pytest.mark.slow
def test_a_lora_delta_gets_embedding_keys_of_its_own(tuned, tuned_registry, isolated):
    _, _, base = tuned
    s = replace(QUICK, steps=1, lora=True, lora_rank=2, checkpoint_every=0)
    out = tune(request(base, tuned_registry, sam_settings=s, margin=1.0), progress=False)
    assert not out.promoted  # nothing beats the base by an IoU of 1
    m = read_manifest(out.folder)
    assert m.net["delta"] == "lora+decoder" and m.settings["lora"] is True
    tensors = json.loads((out.folder / "delta.json").read_text())["tensors"]
    assert any(n.startswith("image_encoder.") for n in tensors)
    eng = load_engine("learned", model=out.manifest.model_id, device="cpu", disk_cache=False)
    base_eng = load_engine("sam", model="vit_b", checkpoint=base, device="cpu",
                           disk_cache=False)
    image = DATA.images[0].rgb
    assert eng.set_image(image).key != base_eng.set_image(image).key
    assert m.weights_sha256[:16] in eng.set_image(image).key


# ------------------------------------------------------------------ ONNX
@pytest.mark.slow
def test_a_delta_exports_to_onnx_and_verifies(installed, tmp_path):
    from sam_engine.onnx.export import ExportOptions, export_onnx

    d = load_sam_delta(installed)
    result = export_onnx(d.model, d.manifest.model_id, tmp_path / "onnx",
                         checkpoint_sha256=d.manifest.weights_sha256,
                         options=ExportOptions(verify_cases=2))
    assert result.passed and result.manifest.model_id == "site@1"
    assert result.manifest.checkpoint_sha256 == d.manifest.weights_sha256


# ------------------------------------------------------------------ the command
def _captured(monkeypatch) -> list[TuneRequest]:
    seen: list[TuneRequest] = []

    def fake(req, **kw):
        seen.append(req)
        raise SystemExit(9)

    monkeypatch.setattr(tuning, "tune", fake)
    return seen


def test_command_options_choose_the_family_and_its_settings(tmp_path, monkeypatch):
    from app.shell.cli import main as cli_main
    from app.shell.commands import tune as cmd
    from sam_engine.learned.train import TrainSettings
    from tests.learned_support import write_pairs

    folder = write_pairs(tmp_path / "site", DATA.images[:4])
    seen = _captured(monkeypatch)
    ck = save_state_dict(tiny_sam(seed=0), tmp_path / "mine.pth")
    args = ["tune", "--folder", str(folder), "--no-progress"]
    with pytest.raises(SystemExit):
        cli_main([*args, "--base", "vit_l", "--base-checkpoint", str(ck), "--lora",
                  "--lora-rank", "4", "--steps", "7", "--batch", "3", "--lr", "0.002",
                  "--seed", "5", "--device", "cpu"])
    req = seen[-1]
    assert req.base == "vit_l" and req.base_checkpoint == ck and tuning.is_sam_request(req)
    assert req.sam_settings == SamTuneSettings(steps=7, images_per_step=3, lr=0.002, seed=5,
                                               lora=True, lora_rank=4, device="cpu")
    with pytest.raises(SystemExit):
        cli_main([*args, "--base", "vit_b"])
    assert seen[-1].sam_settings == SamTuneSettings()
    assert (cmd.SamDefaults.steps, cmd.SamDefaults.images_per_step, cmd.SamDefaults.lr) == (
        SamTuneSettings().steps, SamTuneSettings().images_per_step, SamTuneSettings().lr)
    official = save_state_dict(tiny_sam(seed=0), tmp_path / "dl" / OFFICIAL_VIT_B)
    with pytest.raises(SystemExit):
        cli_main([*args, "--base-checkpoint", str(official)])
    assert seen[-1].base == "vit_b"  # known by its official file name
    assert cli_main([*args, "--base-checkpoint", str(ck)]) != 0  # which architecture?
    assert cli_main([*args, "--lora"]) != 0  # LoRA is for SAM
    with pytest.raises(SystemExit):
        cli_main(args)
    req = seen[-1]
    assert req.base == registry.BASE_NAME and not tuning.is_sam_request(req)
    assert req.settings == TrainSettings(steps=800, batch=24, lr=1e-3, seed=0)


def test_command_tunes_a_checkpoint_end_to_end(tuned, tmp_path, isolated, capsys):
    from app.shell.cli import main as cli_main
    from tests.learned_support import write_pairs

    _, _, base = tuned
    folder = write_pairs(tmp_path / "site", DATA.images)
    code = cli_main(["tune", "--folder", str(folder), "--base", "vit_b", "--base-checkpoint",
                     str(base), "--recipe", "partB", "--steps", "1", "--device", "cpu",
                     "--held-out", "0.3", "--no-progress", "--json", str(tmp_path / "o.json")])
    doc = json.loads((tmp_path / "o.json").read_text())
    assert code == (0 if doc["promoted"] else 3)
    assert doc["model"] == "partB@1" and doc["current"] == "vit_b"
    assert registry.is_sam_delta(registry.resolve("partB@1"))
    text = capsys.readouterr().out
    assert "current: vit_b" in text and "tuned: partB@1" in text
    assert cli_main(["tune", "--list"]) == 0
    assert "SAM delta" in capsys.readouterr().out
