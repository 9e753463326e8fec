"""The learned engine's ONNX export and its torch-free runtime: agreement with PyTorch, integrity,
wiring (load_engine, export-onnx, sam-inspect-line)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_engine.errors import CheckpointError
from sam_engine.learned.engine import load_learned
from sam_engine.learned.model import CropUNet, NetConfig
from sam_engine.learned.weights import ModelManifest, save_model
from sam_engine.onnx.learned_export import (
    LearnedExportError,
    LearnedExportOptions,
    export_learned,
)
from sam_engine.onnx.learned_runtime import GRAPH_NAME, OnnxLearnedEngine, is_learned_export
from sam_engine.onnx.manifest import LearnedOnnxManifest, OnnxManifest
from sam_engine.prompts import Prompts
from sam_engine.synthetic.generator import make_part

SHAPES = ((120, 200), (480, 640), (333, 517))
QUICK = LearnedExportOptions(sizes=((120, 200), (333, 517)), instances_per_part=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, one_thread) -> Path:
    """A CropUNet with random weights saved as a learned model folder."""
    torch.manual_seed(0)
    model = CropUNet(NetConfig())
    folder = tmp_path_factory.mktemp("learned") / "tiny-learned" / "1"
    save_model(folder, model.state_dict(),
               ModelManifest("tiny-learned", "1", model.config.to_dict(), base="learned-base@1"))
    return folder


@pytest.fixture(scope="module")
def export(model_dir, tmp_path_factory):
    return export_learned(model_dir, tmp_path_factory.mktemp("learned_onnx"), options=QUICK)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# ------------------------------------------------------------------ export
def test_export_writes_the_graph_and_manifest(export, model_dir):
    m = export.manifest
    src = json.loads((model_dir / "manifest.json").read_text())
    assert (m.name, m.version, m.model_id, m.base) == ("tiny-learned", "1", "tiny-learned@1",
                                                       "learned-base@1")
    assert m.weights_sha256 == src["weights_sha256"] and m.net == src["net"]
    assert m.net["geometry"]["size"] == 96
    (f,) = m.files
    data = (export.out_dir / GRAPH_NAME).read_bytes()
    assert f.path == GRAPH_NAME and f.sha256 == hashlib.sha256(data).hexdigest()
    assert f.size_bytes == len(data)
    assert [(t.name, t.shape) for t in f.inputs] == [("crops", ("n", 8, 96, 96))]
    assert [(t.name, t.shape) for t in f.outputs] == [("logits", ("n", 1, 96, 96)),
                                                      ("iou", ("n", 1))]
    (v,) = m.verification
    assert v.passed and v.min_mask_iou >= 0.99 and v.cases > 0
    assert LearnedOnnxManifest.load(export.out_dir) == m
    assert is_learned_export(export.out_dir)
    assert json.loads((export.out_dir / "manifest.json").read_text())["kind"] == "learned"


def _cases(part):
    d = next(d for d in part.instances if d.mask.any())
    ys, xs = np.nonzero(d.mask)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return {"box": Prompts.from_boxes([d.bbox]),
            "click": Prompts.from_points([[xs[k] + 0.5, ys[k] + 0.5]])}


def test_onnx_masks_match_pytorch_on_several_shapes(export, model_dir):
    torch_engine = load_learned(model_dir, device="cpu")
    onnx_engine = OnnxLearnedEngine(export.out_dir, threads=2)
    ious = {"box": [], "click": []}
    for seed, shape in enumerate(SHAPES):
        part = make_part(100 + seed, size=shape)
        ht, ho = torch_engine.set_image(part.image), onnx_engine.set_image(part.image)
        for kind, p in _cases(part).items():
            a = torch_engine.predict(ht, p)
            b = onnx_engine.predict(ho, p)
            assert a.shape == b.shape == (1, 3)
            np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
            ious[kind] += [_iou(a.mask(0, c), b.mask(0, c)) for c in range(3)]
    assert min(ious["box"]) >= 0.99 and min(ious["click"]) >= 0.99, ious


def test_batch_is_dynamic_and_chunks_agree(export):
    x = np.random.default_rng(0).normal(size=(7, 8, 96, 96)).astype(np.float32)
    whole = OnnxLearnedEngine(export.out_dir).forward_batch(x)
    parts = OnnxLearnedEngine(export.out_dir, chunk=3).forward_batch(x)
    assert whole[0].shape == (7, 96, 96) and whole[1].shape == (7,)
    np.testing.assert_allclose(parts[0], whole[0], atol=1e-5)
    np.testing.assert_allclose(parts[1], whole[1], atol=1e-6)


def test_a_failing_check_refuses_the_export(model_dir, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(LearnedExportError, match="does not reproduce PyTorch"):
        export_learned(model_dir, out, options=dataclasses.replace(
            QUICK, sizes=((120, 200),), min_iou=1.01))
    (v,) = LearnedOnnxManifest.load(out).verification
    assert not v.passed and v.min_mask_iou >= 0.99  # written for diagnosis, marked failed
    with pytest.raises(CheckpointError, match="failed the export's verification"):
        OnnxLearnedEngine(out)
    eng = OnnxLearnedEngine(out, allow_unverified=True)
    assert eng.info.checkpoint_verified is False and "unverified" in eng.info.note


# ------------------------------------------------------------------ runtime
def test_runtime_info_and_threads(export):
    eng = OnnxLearnedEngine(export.out_dir, threads=2)
    f = export.manifest.files[0]
    assert (eng.info.name, eng.info.model_id, eng.info.dtype) == ("learned", "tiny-learned@1",
                                                                  "float32")
    assert eng.info.checkpoint_sha256 == f.sha256 and eng.info.checkpoint_verified is True
    assert eng.session.get_session_options().intra_op_num_threads == 2
    assert eng.files == {"learned": f} and eng.precisions == {"learned": "float32"}
    with pytest.raises(CheckpointError, match="no int8"):
        OnnxLearnedEngine(export.out_dir, quantized=True)


def test_a_tampered_graph_is_refused_naming_the_file(export, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(export.out_dir, folder)
    path = folder / GRAPH_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as err:
        OnnxLearnedEngine(folder)
    assert str(path) in str(err.value)
    path.write_bytes(bytes(data[:1000]))  # truncated
    with pytest.raises(CheckpointError, match="truncated") as err:
        OnnxLearnedEngine(folder)
    assert str(path) in str(err.value)


def test_the_runtime_imports_no_torch():
    code = ("import sys; import sam_engine.onnx.learned_runtime; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_sam_runtime_and_learned_runtime_tell_the_exports_apart(export, tmp_path):
    from sam_engine.onnx.runtime import OnnxEngine

    with pytest.raises(CheckpointError, match="learned export"):
        OnnxEngine(export.out_dir)
    sam_like = tmp_path / "sam"
    sam_like.mkdir()
    (sam_like / "manifest.json").write_text(json.dumps({"format": 1, "model_id": "vit_b"}))
    assert not is_learned_export(sam_like) and not is_learned_export(tmp_path / "none")
    with pytest.raises(CheckpointError, match="SAM graphs"):
        OnnxLearnedEngine(sam_like)
    with pytest.raises(CheckpointError, match="SAM graphs"):
        LearnedOnnxManifest.load(sam_like)
    with pytest.raises(CheckpointError):
        OnnxManifest.load(export.out_dir)


# ------------------------------------------------------------------ wiring
def test_load_engine_onnx_gives_the_learned_runtime(export):
    from sam_engine.factory import load_engine

    eng = load_engine("onnx", models_dir=export.out_dir, threads=1)
    assert isinstance(eng, OnnxLearnedEngine) and eng.info.name == "learned"
    part = make_part(7, size=(120, 200))
    m = eng.predict(eng.set_image(part.image), Prompts.from_boxes([[20, 20, 90, 70]]))
    assert m.shape == (1, 3) and m.best(0).shape == (120, 200)


def test_line_tool_runs_a_learned_export(export, tmp_path, capsys):
    from app.shell import line_main
    from tests.line_case import write_line_case

    img, recipe = write_line_case(tmp_path)
    out = tmp_path / "out"
    code = line_main.main([str(img), "--models", str(export.out_dir), "--recipe", str(recipe),
                           "--out", str(out), "--threads", "1"])
    assert code in (line_main.EXIT_PASS, line_main.EXIT_FAIL), capsys.readouterr().err
    res = json.loads((out / "part_result.json").read_text())
    f = export.manifest.files[0]
    assert res["model_id"] == "tiny-learned@1" and res["engine"].startswith("learned:")
    assert res["checkpoint_sha256"] == f.sha256
    assert res["models"] == {"learned": {"path": GRAPH_NAME, "sha256": f.sha256,
                                         "precision": "float32"}}
    assert [d["number"] for d in res["defects"]] == [1, 2, 3]  # the recipe's three prompts
    assert res["verdict"]["status"] in ("PASS", "FAIL")
    assert code == (line_main.EXIT_FAIL if res["verdict"]["status"] == "FAIL"
                    else line_main.EXIT_PASS)
    assert (out / "part_mask.png").is_file()
    summary = json.loads(capsys.readouterr().out)
    assert summary["mask_png"] == res["mask_png"]


def _cli_args(tmp_path, **kw):
    base = dict(model="learned-base", checkpoint=None, out=tmp_path / "models", encoder=False,
                quantize=False, opset=17, format=None)
    return argparse.Namespace(**{**base, **kw})


def test_export_command_resolves_learned_models(export, model_dir, tmp_path, monkeypatch,
                                                capsys):
    from app.shell.commands import export_onnx as cmd
    from sam_engine.learned.registry import ENV_TUNED
    from sam_engine.onnx import learned_export

    registry = tmp_path / "tuned"
    shutil.copytree(model_dir, registry / "site-a" / "3")
    monkeypatch.setenv(ENV_TUNED, str(registry))
    calls = []

    def fake_export(folder, out, *, options):
        calls.append((Path(folder), out, options.opset))
        return export

    monkeypatch.setattr(learned_export, "export_learned", fake_export)
    assert cmd.learned_model_folder("vit_b") is None and cmd.learned_model_folder("tiny") is None
    assert cmd.run(_cli_args(tmp_path, model="site-a@3", opset=18)) == 0
    assert cmd.run(_cli_args(tmp_path, model="site-a")) == 0
    assert cmd.run(_cli_args(tmp_path, model=str(model_dir))) == 0
    assert calls == [(registry / "site-a" / "3", tmp_path / "models", 18),
                     (registry / "site-a" / "3", tmp_path / "models", 17),
                     (model_dir, tmp_path / "models", 17)]
    printed = capsys.readouterr().out
    assert GRAPH_NAME in printed and "tiny-learned@1" in printed and "NO" not in printed
    assert cmd.run(_cli_args(tmp_path, model="site-a", quantize=True)) == 2
    assert "SAM models only" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no version 9"):
        cmd.run(_cli_args(tmp_path, model="site-a@9"))


def test_export_command_exports_a_learned_folder_for_real(model_dir, tmp_path, monkeypatch,
                                                          capsys):
    from app.shell.commands import export_onnx as cmd
    from sam_engine.onnx import learned_export

    monkeypatch.setattr(learned_export, "LearnedExportOptions",  # one small part to check on
                        lambda opset: dataclasses.replace(QUICK, opset=opset,
                                                          sizes=QUICK.sizes[:1]))
    assert cmd.run(_cli_args(tmp_path, model=str(model_dir))) == 0
    eng = OnnxLearnedEngine(tmp_path / "models")
    assert eng.info.model_id == "tiny-learned@1" and eng.info.checkpoint_verified is True
    assert "yes" in capsys.readouterr().out
