"""OnnxEngine (onnxruntime only) against the PyTorch SamEngine, and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_engine.errors import CheckpointError, ImageError, PromptError
from sam_engine.onnx import export as onnx_export
from sam_engine.onnx.runtime import OnnxEngine
from sam_engine.prompts import Prompts
from sam_engine.sam.backend import SamEngine
from tests.onnx_models import SEED, exported
from tests.sam_factory import tiny_sam

SIZE = (300, 400)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models() -> Path:
    return exported().out_dir


@pytest.fixture(scope="module")
def engines(models):
    torch_engine = SamEngine(tiny_sam(SEED), "tiny", device="cpu")
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    onnx_engine = OnnxEngine(models, threads=2)
    return (torch_engine, torch_engine.handle_from_embedding(emb, SIZE), onnx_engine,
            onnx_engine.handle_from_embedding(emb.numpy(), SIZE))


def _iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


PROMPTS = {
    "click": Prompts.from_points([[120, 80]]),
    "clicks": Prompts.from_points([[120, 80], [300, 200]], [1, 0]),
    "box": Prompts.from_boxes([[50, 40, 220, 190]]),
    "box+click": Prompts(points=np.array([[100.0, 90]]), labels=np.array([1]),
                         boxes=np.array([[50.0, 40, 220, 190]])),
    "five boxes": Prompts.from_boxes([[10, 10, 100, 90], [120, 30, 250, 160], [200, 150, 390, 290],
                                      [0, 200, 80, 300], [300, 0, 400, 100]]),
}


@pytest.mark.parametrize("name", list(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_matches_torch_engine(engines, name, multimask):
    te, th, oe, oh = engines
    a = te.predict(th, PROMPTS[name], multimask_output=multimask)
    b = oe.predict(oh, PROMPTS[name], multimask_output=multimask)
    assert a.shape == b.shape
    np.testing.assert_allclose(b.low_res_logits, a.low_res_logits, atol=1e-4)
    np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    for i in range(a.shape[0]):
        assert b.best_index(i) == a.best_index(i)
        assert _iou(a.best(i), b.best(i)) >= 0.99
    assert b.masks.shape == a.masks.shape and b.masks.dtype == bool


def test_onnx_engine_implements_the_engine_contract(engines):
    from sam_engine.engine import Engine

    _, _, oe, oh = engines
    assert isinstance(oe, Engine)
    assert oe.info.name == "sam-onnx" and oe.info.model_id == "tiny"
    assert oe.info.device == "cpu" and "CPUExecutionProvider" in oe.providers
    assert oh.input_size == (768, 1024) and oh.original_size == SIZE


def test_mask_input_refinement_matches(engines):
    te, th, oe, oh = engines
    first = te.predict(th, PROMPTS["click"])
    refine = Prompts(points=np.array([[120.0, 80], [200, 150]]), labels=np.array([1, 1]),
                     mask_input=first.low_res_logits[0, first.best_index()][None])
    a, b = te.predict(th, refine), oe.predict(oh, refine)
    np.testing.assert_allclose(b.low_res_logits, a.low_res_logits, atol=1e-4)
    assert not np.allclose(a.low_res_logits, te.predict(th, Prompts(
        points=refine.points, labels=refine.labels)).low_res_logits, atol=1e-3)
    assert min(_iou(a.mask(0, c), b.mask(0, c)) for c in range(3)) >= 0.99


def test_click_graph_batched_graph_and_chunks_agree(engines):
    """Plain prompts go through decoder_click (one prompt per run); the batched graphs, in one
    run or in chunks, give the same logits."""
    from sam_engine.onnx.runtime import run_fast_decoder
    from sam_engine.prompts import validate_prompts

    _, _, oe, oh = engines
    assert oe.click_session is not None
    p = validate_prompts(PROMPTS["five boxes"], SIZE)
    terms = oh.features.terms
    click, _ = run_fast_decoder(oe.click_session, terms, p, SIZE)
    batch, _ = run_fast_decoder(oe.nomask_session, terms, p, SIZE)
    chunks, _ = run_fast_decoder(oe.decoder_session, terms, p, SIZE, chunk=2)
    assert click.shape == batch.shape == (5, 4, 256, 256)
    np.testing.assert_allclose(click, batch, atol=1e-4)
    np.testing.assert_allclose(chunks, batch, atol=1e-4)


def test_providers_prefer_gpu_when_present(monkeypatch, tmp_path):
    from sam_engine.onnx import runtime as onnx_runtime

    monkeypatch.setattr(onnx_runtime.ort, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_runtime.choose_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = onnx_runtime.choose_providers(prefer_tensorrt=True)
    assert trt == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    config = onnx_runtime.provider_config(trt, tmp_path)
    assert config[0][0] == "TensorrtExecutionProvider"
    assert config[0][1]["trt_engine_cache_path"] == str(tmp_path / "trt_cache")
    assert config[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnx_runtime.ort, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])
    assert onnx_runtime.choose_providers(prefer_tensorrt=True) == ["CPUExecutionProvider"]


def test_set_image_runs_the_encoder_like_torch(models):
    rng = np.random.default_rng(5)
    rgb = np.kron(rng.integers(0, 256, (25, 40, 3), dtype=np.uint8), np.ones((12, 12, 1),
                                                                            np.uint8))
    from segment_anything import SamPredictor

    sam = tiny_sam(SEED)
    predictor = SamPredictor(sam)  # the exported encoder is Meta's, so Meta's is the reference
    with torch.no_grad():
        predictor.set_image(rgb)
    te = SamEngine(sam, "tiny", device="cpu")
    oe = OnnxEngine(models, threads=2)
    th = te.handle_from_embedding(predictor.features, rgb.shape[:2])
    oh = oe.set_image(rgb)
    assert oh.input_size == th.input_size and oh.original_size == th.original_size
    np.testing.assert_allclose(oh.features.embedding, predictor.features.numpy(), atol=1e-3)
    p = Prompts.from_boxes([[40, 30, 300, 250]])
    assert _iou(te.predict(th, p).best(), oe.predict(oh, p).best()) >= 0.99
    assert oe.set_image(rgb).from_cache


def test_quantized_decoder_within_stated_iou(engines, models):
    """The int8 decoder (transformer weights only, per channel, 7 bits) against PyTorch on
    points, boxes and five boxes: mean mask IoU >= 0.95, every best mask >= 0.90 (README)."""
    te, th, _, oh = engines
    qe = OnnxEngine(models, quantized=True, threads=2)
    assert qe.info.dtype == "int8"
    assert qe.click_session is not None and "int8" in qe.manifest.find("decoder_click", True).path
    qh = qe.handle_from_embedding(oh.features.embedding, SIZE)
    ious, best = [], []
    for p in PROMPTS.values():
        a, b = te.predict(th, p), qe.predict(qh, p)
        ious += [_iou(a.mask(i, c), b.mask(i, c)) for i in range(a.shape[0]) for c in range(3)]
        best += [_iou(a.best(i), b.mask(i, a.best_index(i))) for i in range(a.shape[0])]
    assert np.mean(ious) >= onnx_export.INT8_MIN_IOU >= 0.95
    assert min(best) >= 0.90


def test_bad_inputs_give_clear_errors(engines):
    _, th, oe, oh = engines
    with pytest.raises(ImageError, match="embedding must have shape"):
        oe.handle_from_embedding(np.zeros((1, 256, 32, 32), np.float32), SIZE)
    with pytest.raises(PromptError, match="outside"):
        oe.predict(oh, Prompts.from_points([[500, 10]]))
    with pytest.raises(PromptError, match="mask_input"):
        oe.predict(oh, Prompts.from_points([[5, 10]], mask_input=np.zeros((64, 64))))
    with pytest.raises(PromptError, match="another engine"):
        oe.predict(th, Prompts.from_points([[5, 10]]))
    with pytest.raises(ImageError):
        oe.set_image(np.zeros((10, 10, 7), np.uint8))


def _copy(models: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(models, dst)
    return dst


def test_missing_folder_manifest_and_files(models, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxEngine(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no manifest.json"):
        OnnxEngine(tmp_path)
    d = _copy(models, tmp_path)
    (d / "decoder_fast.onnx").unlink()
    with pytest.raises(CheckpointError, match="decoder_fast.onnx is missing"):
        OnnxEngine(d)


def test_corrupt_or_truncated_onnx(models, tmp_path):
    d = _copy(models, tmp_path)
    f = d / "image_terms.onnx"
    size = f.stat().st_size
    f.write_bytes(b"\x00garbage" * (size // 8) + b"\x00" * (size % 8))
    with pytest.raises(CheckpointError, match="sha256"):  # checked before onnxruntime reads it
        OnnxEngine(d)
    f.write_bytes(b"short")
    with pytest.raises(CheckpointError, match="truncated"):
        OnnxEngine(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid ONNX export manifest"):
        OnnxEngine(d)


def test_runtime_imports_and_runs_without_torch(models):
    code = textwrap.dedent(f"""
        import sys
        for name in ("torch", "segment_anything", "torchvision", "PIL"):
            sys.modules[name] = None  # any import of these now raises ImportError
        import numpy as np
        from sam_engine.onnx.runtime import OnnxEngine
        from sam_engine.prompts import Prompts
        e = OnnxEngine({str(models)!r}, threads=1)
        h = e.set_image(np.full((120, 160, 3), 128, np.uint8))
        m = e.predict(h, Prompts.from_boxes([[10, 10, 90, 100]]))
        from pathlib import Path
        from sam_engine.factory import load_engine
        f = load_engine("onnx", models_dir={str(models)!r}, threads=1)
        assert type(f).__name__ == "OnnxEngine"
        from app.shell.line_main import main
        from tests.line_case import write_line_case
        img, recipe = write_line_case(Path({str(models)!r}))
        assert main([str(img), "--models", {str(models)!r}, "--recipe", str(recipe),
                     "--out", {str(models / "line_out")!r}]) in (0, 1)  # PASS / FAIL
        loaded = [k for k, v in sys.modules.items() if v is not None
                  and k.split(".")[0] in ("torch", "segment_anything", "torchvision", "PIL")]
        print(m.best().shape, loaded)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "(120, 160) []"
    res = json.loads((models / "line_out" / "part_result.json").read_text())
    assert res["verdict"]["status"] in ("PASS", "FAIL") and res["defects"][0]["measurements"]


def test_line_command_writes_mask_and_json(models, tmp_path, capsys):
    import cv2

    from app.shell.line_main import main

    img = tmp_path / "part.png"
    rgb = np.kron(np.random.default_rng(2).integers(0, 256, (10, 16, 3), dtype=np.uint8),
                  np.ones((12, 12, 1), np.uint8))
    cv2.imwrite(str(img), rgb[..., ::-1])
    assert main([str(img), "--models", str(models), "--box", "10,10,100,80", "--box",
                 "120,20,180,110", "--point", "50,60", "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "part_result.json").read_text())
    labels = cv2.imread(res["mask_png"], cv2.IMREAD_UNCHANGED)
    assert labels.shape == (120, 192) and res["verdict"] is None
    assert [d["number"] for d in res["defects"]] == [1, 2, 3]
    engine = OnnxEngine(models)
    h = engine.set_image(rgb)
    expected = engine.predict(h, Prompts.from_boxes([[10, 10, 100, 80]]),
                              multimask_output=False).best()  # boxes: one mask, as in batch
    assert res["defects"][0]["area_px"] == int(expected.sum())
    first = labels == 1  # later prompts' masks may overwrite some of its pixels
    assert first.any() and not (first & ~expected).any()
    assert main([str(img), "--models", str(models)]) == 2
    assert "no prompts" in capsys.readouterr().err


def test_line_command_measures_and_judges_with_a_recipe(models, tmp_path):
    """With a recipe: the recipe's prompts (a relative-frame one resolved on the image), mm
    measurements from its calibration and the verdict app.inspection.verdict gives for those
    masks."""
    import cv2

    from app.inspection.findings import Finding
    from app.inspection.measure import Calibration, measure
    from app.inspection.recipe import load_recipe
    from app.inspection.verdict import judge
    from app.shell.line_main import main
    from tests.line_case import write_line_case

    img, recipe_path = write_line_case(tmp_path)
    code = main([str(img), "--models", str(models), "--recipe", str(recipe_path), "--out",
                 str(tmp_path / "o")])
    res = json.loads((tmp_path / "o" / "part_result.json").read_text())
    assert code == (1 if res["verdict"]["status"] == "FAIL" else 0)
    assert res["recipe"]["name"] == "line_test_part" and res["mm_per_px"] == 0.1
    assert [d["defect_class"] for d in res["defects"]] == ["scratch", "pit", "scratch"]
    assert res["prompts"][2]["boxes"] == [[0.6 * 192, 0.1 * 120, 0.95 * 192, 0.9 * 120]]
    labels = cv2.imread(res["mask_png"], cv2.IMREAD_UNCHANGED)
    recipe = load_recipe(recipe_path)
    engine = OnnxEngine(models)
    h = engine.set_image(cv2.imread(str(img))[..., ::-1])
    findings = []
    for d, p in zip(res["defects"], res["prompts"], strict=True):
        prompts = Prompts(points=None if p["points"] is None else np.array(p["points"]),
                          labels=None if p["labels"] is None else np.array(p["labels"]),
                          boxes=None if p["boxes"] is None else np.array(p["boxes"]))
        mask = engine.predict(h, prompts, multimask_output=p["boxes"] is None).best()
        assert d["area_px"] == int(mask.sum())
        assert not ((labels == d["number"]) & ~mask).any()  # later masks may cover some pixels
        if mask.any():
            m = measure(mask, Calibration(0.1))
            assert d["measurements"]["area_px"] == m.area_px
            assert d["measurements"]["mm_per_px"] == 0.1
            findings.append(Finding(d["defect_class"], mask, m, d["score"], number=d["number"]))
    assert {k: v for k, v in res["verdict"].items() if k != "dropped"} == \
        judge(findings, recipe).to_dict()
    assert res["verdict"]["status"] in ("PASS", "FAIL")


@pytest.mark.parametrize("shape", [(300, 400), (1600, 1200), (77, 1500), (1024, 700)])
def test_numpy_resize_equals_segment_anything(shape):
    from segment_anything.utils.transforms import ResizeLongestSide

    from sam_engine import preprocess

    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = ResizeLongestSide(1024)
    assert np.array_equal(preprocess.resize_longest(rgb), ref.apply_image(rgb))
    pts = rng.uniform(0, min(shape), size=(5, 2))
    np.testing.assert_allclose(preprocess.apply_coords(pts, shape),
                               ref.apply_coords(pts, shape), rtol=1e-6)


@pytest.mark.parametrize("geometry", [((768, 1024), (600, 800)), ((1024, 53), (1500, 77))])
def test_analytic_resize_weights_equal_torch_interpolation(geometry):
    """upsample_np's composite weights equal unit impulses pushed through torch's resizes."""
    import torch.nn.functional as F

    from sam_engine.upsample_np import axis_matrix

    def torch_axis_matrix(low, padded, valid, out):
        eye = torch.eye(low).unsqueeze(0)
        up = F.interpolate(eye, size=padded, mode="linear", align_corners=False)[..., :valid]
        return F.interpolate(up, size=out, mode="linear", align_corners=False)[0].t().numpy()

    input_size, original = geometry
    for i in range(2):
        args = (256, 1024, input_size[i], original[i])
        np.testing.assert_allclose(axis_matrix(*args), torch_axis_matrix(*args), atol=5e-5)


def test_factory_builds_the_onnx_engine(models):
    from sam_engine.errors import SamEngineError
    from sam_engine.factory import ALL_ENGINES, ENGINE_NAMES, load_engine

    assert "onnx" in ALL_ENGINES and "onnx" not in ENGINE_NAMES  # CLI choices need no folder
    e = load_engine("onnx", models_dir=models, threads=1, quantized=True)
    assert isinstance(e, OnnxEngine) and e.info.dtype == "int8"
    with pytest.raises(SamEngineError, match="needs models_dir"):
        load_engine("onnx")
    with pytest.raises(TypeError, match="engine='onnx' only"):
        load_engine("classic", threads=1)
