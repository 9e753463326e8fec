"""The finder's ONNX export and its torch-free runtime: agreement with PyTorch on three shapes,
integrity, and the zero-click line tool (no prompts, the recipe's classes, verdict)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sam_engine.errors import CheckpointError
from sam_engine.finder.finder import Finder, load_finder
from sam_engine.finder.metrics import mask_iou
from sam_engine.finder.model import FinderConfig, FinderNet
from sam_engine.finder.preprocess import FinderGeometry, PostSettings, finder_input
from sam_engine.learned.weights import ModelManifest, save_model
from sam_engine.onnx.finder_export import (
    VERIFY_SIZES,
    FinderExportError,
    FinderExportOptions,
    export_finder,
    verify_finder,
)
from sam_engine.onnx.finder_runtime import (
    GRAPH_NAME,
    FinderOnnxManifest,
    OnnxFinder,
    is_finder_export,
)
from tests.finder_support import CLASSES, blob_image

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "samples" / "recipes" / "demo_part.toml"
SHAPES = ((200, 200), (480, 320), (1000, 1000))


@pytest.fixture(scope="module")
def finder_dir(tmp_path_factory, one_thread) -> Path:
    """A tiny finder (64 px input) trained for a few seconds to find bright (scratch) and dark
    (pit) ellipses, saved as a finder model folder."""
    torch.manual_seed(0)
    config = FinderConfig(classes=CLASSES, widths=(8, 8, 8, 8),
                          geometry=FinderGeometry(long_side=64))
    net = FinderNet(config)
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for _ in range(32):
        rgb, lab = blob_image(rng, (64, 64), tuple(c for c in (1, 2) if rng.random() < 0.8))
        xs.append(finder_input(rgb, config.geometry)[0][0])
        ys.append(lab)
    x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    net.train()
    for _ in range(40):
        idx = torch.randint(0, len(x), (8,))
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = tmp_path_factory.mktemp("finder") / "tiny-finder" / "1"
    save_model(folder, net.state_dict(),
               ModelManifest("tiny-finder", "1",
                             config.to_dict() | {"post": PostSettings().to_dict()}))
    return folder


@pytest.fixture(scope="module")
def export(finder_dir, tmp_path_factory):
    return export_finder(finder_dir, tmp_path_factory.mktemp("finder_onnx"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """640x480 part photos for the line tool: one with a scratch and a pit, one uniform."""
    folder = tmp_path_factory.mktemp("line_images")
    rgb, _ = blob_image(np.random.default_rng(3), (480, 640))
    out = {"defects": folder / "part_a.png", "uniform": folder / "part_b.png"}
    cv2.imwrite(str(out["defects"]), rgb[..., ::-1])
    cv2.imwrite(str(out["uniform"]), np.full((480, 640, 3), 128, np.uint8))
    return out


# ------------------------------------------------------------------ export
def test_export_writes_the_graph_and_a_verified_manifest(export, finder_dir):
    m = export.manifest
    src = json.loads((finder_dir / "manifest.json").read_text())
    assert (m.name, m.version, m.model_id) == ("tiny-finder", "1", "tiny-finder@1")
    assert m.weights_sha256 == src["weights_sha256"] and m.net == src["net"]
    assert m.classes == CLASSES and m.net["post"] == PostSettings().to_dict()
    (f,) = m.files
    data = (export.out_dir / GRAPH_NAME).read_bytes()
    assert f.path == GRAPH_NAME and f.sha256 == hashlib.sha256(data).hexdigest()
    assert [(t.name, t.shape) for t in f.inputs] == [("image", (1, 3, "h", "w"))]
    assert [(t.name, t.shape) for t in f.outputs] == [("probs", (1, 3, "h", "w"))]
    (v,) = m.verification
    assert v.passed and v.min_mask_iou >= 0.99 and v.max_abs_prob_diff < 1e-4
    assert [c.image_size for c in v.checks] == list(VERIFY_SIZES)
    assert FinderOnnxManifest.load(export.out_dir) == m
    assert is_finder_export(export.out_dir)
    assert json.loads((export.out_dir / "manifest.json").read_text())["kind"] == "finder"


def test_onnx_finds_what_pytorch_finds_on_three_shapes(export, finder_dir):
    torch_finder = load_finder(finder_dir, device="cpu")
    onnx_finder = OnnxFinder(export.out_dir)
    rng = np.random.default_rng(11)
    shots = [blob_image(rng, s)[0] for s in SHAPES]
    found = 0
    for rgb in shots:
        a, b = torch_finder.find(rgb), onnx_finder.find(rgb)
        assert a.image_size == b.image_size == rgb.shape[:2]
        assert [f.cls for f in a.found] == [f.cls for f in b.found]
        for fa, fb in zip(a.found, b.found, strict=True):
            assert mask_iou(fa.mask, fb.mask) >= 0.99
            assert fa.score == pytest.approx(fb.score, abs=1e-4) and fa.box == fb.box
        pa, _ = torch_finder.probabilities(rgb)
        pb, _ = onnx_finder.probabilities(rgb)
        assert np.abs(pa - pb).max() < 1e-4
        found += len(a.found)
    assert found >= 4  # the check compared real defects, not empty lists
    v = verify_finder(torch_finder, onnx_finder, FinderExportOptions(), images=shots)
    assert v.passed and [c.image_size for c in v.checks] == list(SHAPES)
    assert sum(c.defects_onnx for c in v.checks) == found


def test_a_failing_check_refuses_the_export(finder_dir, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(FinderExportError, match="does not reproduce PyTorch"):
        export_finder(finder_dir, out, options=FinderExportOptions(sizes=((200, 200),),
                                                                   min_iou=1.01))
    (v,) = FinderOnnxManifest.load(out).verification
    assert not v.passed and v.min_mask_iou >= 0.99  # written for diagnosis, marked failed
    with pytest.raises(CheckpointError, match="failed the export's verification"):
        OnnxFinder(out)
    loaded = OnnxFinder(out, allow_unverified=True)
    assert loaded.info.checkpoint_verified is False and "unverified" in loaded.info.note


# ------------------------------------------------------------------ runtime
def test_runtime_interface_threads_and_info(export):
    f = OnnxFinder(export.out_dir)
    assert f.classes == CLASSES and f.model_id == "tiny-finder@1"
    assert f.settings == PostSettings()
    assert f.session.get_session_options().intra_op_num_threads == 2  # the line's default
    assert OnnxFinder(export.out_dir, threads=1).session.get_session_options() \
        .intra_op_num_threads == 1
    assert (f.info.name, f.info.dtype, f.info.checkpoint_verified) == ("finder", "float32", True)
    assert f.info.checkpoint_sha256 == export.manifest.files[0].sha256
    res = f.find(np.full((100, 140, 3), 128, np.uint8), wanted=["pit"])
    assert res.found == () and res.classes == ("pit",) and res.image_size == (100, 140)
    assert set(res.timings_ms) == {"preprocess", "network", "postprocess"}
    with pytest.raises(ValueError, match="not known to this finder"):
        f.find(np.zeros((50, 50, 3), np.uint8), wanted=["crack"])


def test_a_tampered_graph_is_refused_naming_the_file(export, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(export.out_dir, folder)
    path = folder / GRAPH_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256") as err:
        OnnxFinder(folder)
    assert str(path) in str(err.value)


def test_other_exports_are_not_finders(tmp_path):
    sam_like = tmp_path / "sam"
    sam_like.mkdir()
    (sam_like / "manifest.json").write_text(json.dumps({"format": 1, "model_id": "vit_b"}))
    assert not is_finder_export(sam_like) and not is_finder_export(tmp_path / "none")
    with pytest.raises(CheckpointError, match="not a finder"):
        OnnxFinder(sam_like)


def test_the_line_tool_runs_a_finder_without_torch(export, images, tmp_path):
    code = (f"import sys\n"
            f"for name in ('torch', 'torchvision', 'segment_anything'):\n"
            f"    sys.modules[name] = None  # any import of these now raises ImportError\n"
            f"from app.shell.line_main import main\n"
            f"sys.exit(main([{str(images['defects'])!r}, '--models', {str(export.out_dir)!r}, "
            f"'--recipe', {str(DEMO_RECIPE)!r}, '--out', {str(tmp_path)!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode in (0, 1), r.stderr
    assert json.loads((tmp_path / "part_a_result.json").read_text())["defects"]


# ------------------------------------------------------------------ line tool
def _line(argv, capsys):
    from app.shell import line_main

    code = line_main.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_line_tool_finds_measures_and_judges_without_prompts(export, images, tmp_path, capsys):
    from app.inspection.findings import Finding
    from app.inspection.measure import measure
    from app.inspection.recipe import load_recipe
    from app.inspection.verdict import judge
    from app.shell import line_main

    out = tmp_path / "out"
    code, stdout, stderr = _line([images["defects"], "--models", export.out_dir, "--recipe",
                                  DEMO_RECIPE, "--out", out], capsys)
    assert code in (line_main.EXIT_PASS, line_main.EXIT_FAIL), stderr
    # the recipe's classes the finder does not know are named, with the finder's classes
    assert "crack, stain, inclusion, patch" in stderr and "scratch, pit" in stderr
    res = json.loads((out / "part_a_result.json").read_text())
    assert res["model_id"] == "tiny-finder@1" and res["engine"].startswith("finder:")
    f = export.manifest.files[0]
    assert res["models"] == {"finder": {"path": GRAPH_NAME, "sha256": f.sha256,
                                        "precision": "float32"}}
    assert res["finder"]["looked_for"] == ["scratch", "pit"]
    assert res["finder"]["not_looked_for"] == ["crack", "stain", "inclusion", "patch"]
    assert res["prompts"] == [] and res["mm_per_px"] == 0.05
    assert {"read", "preprocess", "network", "postprocess", "measure"} <= set(res["timings_ms"])
    assert res["images_per_s"] > 0
    # the defects are the runtime's finds, measured and judged as the prompt path does
    rgb = cv2.imread(str(images["defects"]))[..., ::-1]
    found = OnnxFinder(export.out_dir).find(rgb, ["scratch", "pit"]).found
    assert len(found) >= 2
    assert [(d["number"], d["defect_class"], d["area_px"], d["source"])
            for d in res["defects"]] == [(i, x.cls, x.area, "finder")
                                         for i, x in enumerate(found, start=1)]
    assert [d["score"] for d in res["defects"]] == pytest.approx([x.score for x in found])
    recipe = load_recipe(DEMO_RECIPE)
    cal = recipe.calibrate(None)
    findings = [Finding(x.cls, x.mask, measure(x.mask, cal, datum=recipe.datum), x.score,
                        number=i) for i, x in enumerate(found, start=1)]
    expected = judge(findings, recipe).to_dict()
    assert {k: res["verdict"][k] for k in expected} == json.loads(json.dumps(expected))
    assert code == (line_main.EXIT_FAIL if res["verdict"]["status"] == "FAIL"
                    else line_main.EXIT_PASS)
    labels = cv2.imread(res["mask_png"], cv2.IMREAD_UNCHANGED)
    assert np.array_equal(labels == 1, found[0].mask & (labels == 1)) and (labels == 1).any()
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith("throughput: 1 image(s)") and "images/s" in lines[-1]
    summary = json.loads("\n".join(lines[:-1]))
    assert summary["verdict"] == res["verdict"]["status"] and summary["image"].endswith(
        "part_a.png")


def test_a_uniform_image_has_no_defects_and_passes(export, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = _line([images["uniform"], "--models", export.out_dir, "--recipe",
                             DEMO_RECIPE, "--out", out], capsys)
    assert code == 0, stderr
    res = json.loads((out / "part_b_result.json").read_text())
    assert res["defects"] == [] and res["verdict"]["status"] == "PASS"
    assert not cv2.imread(res["mask_png"], cv2.IMREAD_UNCHANGED).any()


def test_several_images_in_one_run(export, images, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _line([images["uniform"], images["defects"], "--models",
                                  export.out_dir, "--out", out, "--find", "pit"], capsys)
    assert code == 0, stderr  # no recipe: no verdict
    summary = json.loads(stdout.strip().rsplit("\n", 1)[0])
    assert [s["image"][-10:] for s in summary["images"]] == ["part_b.png", "part_a.png"]
    assert stdout.strip().splitlines()[-1].startswith("throughput: 2 image(s)")
    res = json.loads((out / "part_a_result.json").read_text())
    assert res["defects"] and {d["defect_class"] for d in res["defects"]} == {"pit"}
    assert res["finder"]["looked_for"] == ["pit"] and res["verdict"] is None
    assert (out / "part_b_result.json").is_file()


def test_find_with_a_class_the_finder_does_not_know(export, images, tmp_path, capsys):
    code, _, stderr = _line([images["defects"], "--models", export.out_dir, "--find",
                             "scratch,crack", "--out", tmp_path], capsys)
    assert code == 2
    assert "crack" in stderr and "tiny-finder@1" in stderr and "scratch, pit" in stderr
    assert not (tmp_path / "part_a_result.json").exists()


def test_a_recipe_without_a_known_class_is_an_error(export, images, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('schema_version = 1\n[part]\nname = "p"\nversion = "1"\n'
                      "[calibration]\nmm_per_px = 0.05\n[classes.crack]\nmax_count = 0\n")
    code, _, stderr = _line([images["defects"], "--models", export.out_dir, "--recipe", recipe,
                             "--out", tmp_path], capsys)
    assert code == 2 and "knows none of the recipe's classes (crack" in stderr


def test_prompts_are_refused_with_a_finder(export, images, tmp_path, capsys):
    code, _, stderr = _line([images["defects"], "--models", export.out_dir, "--box",
                             "1,1,20,20", "--out", tmp_path], capsys)
    assert code == 2 and "without prompts" in stderr


# ------------------------------------------------------------------ export command
def _cli_args(tmp_path, **kw):
    base = dict(model=None, finder=None, checkpoint=None, out=tmp_path / "models",
                encoder=False, quantize=False, opset=17, format=None)
    return argparse.Namespace(**{**base, **kw})


def test_export_command_resolves_and_exports_a_finder(finder_dir, tmp_path, monkeypatch,
                                                      capsys):
    from app.shell.commands import export_onnx as cmd
    from sam_engine.learned.registry import ENV_TUNED
    from sam_engine.onnx import finder_export

    registry = tmp_path / "tuned"
    shutil.copytree(finder_dir, registry / "site-f" / "2")
    monkeypatch.setenv(ENV_TUNED, str(registry))
    monkeypatch.setattr(finder_export, "FinderExportOptions",  # one small shape to check on
                        lambda opset: FinderExportOptions(opset=opset, sizes=((200, 200),)))
    assert cmd.run(_cli_args(tmp_path, finder="site-f@2")) == 0
    printed = capsys.readouterr().out
    assert "200x200" in printed and "passed" in printed and "tiny-finder@1" in printed
    eng = OnnxFinder(tmp_path / "models")
    assert eng.model_id == "tiny-finder@1" and eng.info.checkpoint_verified is True
    # --model naming a finder folder exports it as a finder too
    assert cmd.run(_cli_args(tmp_path, model=str(finder_dir), out=tmp_path / "m2")) == 0
    assert is_finder_export(tmp_path / "m2")
    from app.shell.cli import main as cli_main

    assert cli_main(["export-onnx", "--finder", "site-f", "--out", str(tmp_path / "m3")]) == 0
    assert is_finder_export(tmp_path / "m3")
    assert cmd.run(_cli_args(tmp_path, finder="site-f", quantize=True)) == 2
    assert "SAM models only" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no version 9"):
        cmd.run(_cli_args(tmp_path, finder="site-f@9"))


def test_export_command_refuses_a_prompt_model_as_finder(tmp_path):
    from app.shell.commands import export_onnx as cmd
    from tests.learned_support import save_tiny

    save_tiny(tmp_path / "prompt")
    with pytest.raises(CheckpointError, match="not a finder"):
        cmd.run(_cli_args(tmp_path, finder=str(tmp_path / "prompt")))


def test_export_of_a_loaded_finder(finder_dir, tmp_path):
    finder = load_finder(finder_dir, device="cpu")
    res = export_finder(Finder(finder.net, finder.manifest), tmp_path / "x",
                        options=dataclasses.replace(FinderExportOptions(), sizes=((120, 90),)))
    assert res.passed and res.manifest.model_id == "tiny-finder@1"


class _CountingEngine:
    """Stands in for OnnxEngine on the prompt path: a fixed box mask per prompt."""

    loads = 0

    def __init__(self, models, **_kw):
        from sam_engine.results import EngineInfo

        type(self).loads += 1
        self.info = EngineInfo("sam-onnx", "fake", "cpu", "float32", str(models))
        self.providers = ["CPUExecutionProvider"]

    def set_image(self, rgb):
        from sam_engine.results import ImageHandle

        return ImageHandle("k", rgb.shape[:2], rgb.shape[:2], None)

    def predict(self, handle, prompts, multimask_output=True):
        from sam_engine.results import Masks

        mask = np.zeros(handle.original_size, bool)
        mask[5:15, 5:25] = True
        return Masks(mask[None, None], np.array([[0.9]]), np.zeros((1, 1, 256, 256)))


def test_several_images_on_a_prompt_model_load_it_once(images, tmp_path, monkeypatch, capsys):
    from app.shell import line_main

    monkeypatch.setattr(line_main, "OnnxEngine", _CountingEngine)
    out = tmp_path / "out"
    code, stdout, stderr = _line([images["defects"], images["uniform"], "--models", tmp_path,
                                  "--box", "1,1,30,30", "--out", out], capsys)
    assert code == 0, stderr
    assert _CountingEngine.loads == 1
    for stem in ("part_a", "part_b"):
        res = json.loads((out / f"{stem}_result.json").read_text())
        assert [d["area_px"] for d in res["defects"]] == [200] and res["model_id"] == "fake"
    assert stdout.strip().splitlines()[-1].startswith("throughput: 2 image(s)")
    dup = tmp_path / "other"
    dup.mkdir()
    shutil.copy(images["defects"], dup / "part_a.png")
    code, _, stderr = _line([images["defects"], dup / "part_a.png", "--models", tmp_path,
                             "--box", "1,1,30,30", "--out", out], capsys)
    assert code == 2 and "would both write part_a_result.json" in stderr
