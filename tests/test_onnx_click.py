"""SamEngine's onnxruntime decoders give the PyTorch decoder's results (with and without mask
input), are stored beside a disk embedding cache, and step aside when they cannot be built."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sam_engine.embedding_cache import EmbeddingCache  # noqa: E402
from sam_engine.prompts import Prompts  # noqa: E402
from sam_engine.sam import click_decoder as onnx_click  # noqa: E402
from sam_engine.sam.backend import SamEngine  # noqa: E402
from tests.sam_factory import tiny_sam  # noqa: E402

IMAGE = (np.random.default_rng(0).random((300, 480, 3)) * 255).astype(np.uint8)
PROMPTS = [
    dict(points=[[100, 80]], labels=[1]),
    dict(points=[[100, 80], [300, 200], [20, 290]], labels=[1, 0, 1]),
    dict(boxes=[[50, 40, 200, 180]]),
    dict(boxes=[[50, 40, 200, 180]], points=[[120, 100]], labels=[0]),
    dict(boxes=[[50, 40, 200, 180], [0, 0, 480, 300], [300, 100, 310, 110]]),
]


def _prompts(d: dict) -> Prompts:
    return Prompts(**{k: np.asarray(v, np.float32 if k != "labels" else np.int32)
                      for k, v in d.items()})


class CountingDecoder:
    """Wraps an OnnxClickDecoder and counts its runs."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args):
        self.calls += 1
        return self.inner(*args)


@pytest.fixture(scope="module")
def engines():
    sam = tiny_sam(seed=1)
    ort_engine = SamEngine(sam, "tiny", device="cpu")
    torch_engine = SamEngine(sam, "tiny", device="cpu", click_onnx=False)
    return (ort_engine, ort_engine.set_image(IMAGE)), (torch_engine, torch_engine.set_image(IMAGE))


def test_default_on_cpu_uses_onnxruntime(engines):
    (ort_engine, handle), (torch_engine, _) = engines
    assert ort_engine.click_decoder() is not None and handle.features.click_terms is not None
    assert "onnxruntime click decoder" in ort_engine.info.note
    assert torch_engine.click_decoder() is None and "onnxruntime" not in torch_engine.info.note


def test_the_click_decoder_is_built_when_first_needed(monkeypatch):
    """Building the engine exports nothing; the first image (or click_decoder()) does."""
    calls = []
    real = onnx_click._export

    def counting(sam):
        calls.append(1)
        return real(sam)

    monkeypatch.setattr(onnx_click, "_export", counting)
    engine = SamEngine(tiny_sam(seed=1), "tiny", device="cpu")
    assert calls == [] and engine.click_onnx
    handle = engine.set_image(IMAGE)
    assert calls == [1] and handle.features.click_terms is not None
    assert engine.click_decoder() is not None and calls == [1]


def test_building_the_engine_leaves_the_shared_model_in_eval_mode():
    """The export wraps the SAM the engine shares with its callers; a SamPredictor on that
    model after the engine is built must still run in inference mode (BatchNorm statistics)."""
    sam = tiny_sam(seed=2).eval()
    engine = SamEngine(sam, "tiny", device="cpu")
    assert engine.click_decoder() is not None
    assert not any(m.training for m in sam.modules())


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_parity_with_the_torch_decoder(engines, prompt, multimask):
    (ort_engine, ha), (torch_engine, hb) = engines
    counter = CountingDecoder(ort_engine._click)
    ort_engine._click = counter
    try:
        got = ort_engine.predict(ha, _prompts(prompt), multimask)
    finally:
        ort_engine._click = counter.inner
    ref = torch_engine.predict(hb, _prompts(prompt), multimask)
    assert counter.calls == 1
    assert got.low_res_logits.shape == ref.low_res_logits.shape == (
        len(prompt.get("boxes", [0])), 3 if multimask else 1, 256, 256)
    scale = max(float(np.abs(ref.low_res_logits).max()), 1.0)
    np.testing.assert_allclose(got.low_res_logits, ref.low_res_logits, atol=1e-5 * scale)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
    # full-size masks agree except where a logit sits on the threshold within float rounding
    assert (got.masks == ref.masks).mean() > 0.9999


@pytest.mark.parametrize("prompt", PROMPTS[1:4] + PROMPTS[4:])
def test_mask_input_parity_with_the_torch_decoder(engines, prompt):
    (ort_engine, handle), (torch_engine, hb) = engines
    first = torch_engine.predict(hb, _prompts(PROMPTS[0]))
    refine = Prompts(**{**vars(_prompts(prompt)), "mask_input": first.low_res_logits[0, :1]})
    counter = CountingDecoder(ort_engine._click)
    ort_engine._click = counter
    try:
        got = ort_engine.predict(handle, refine)
    finally:
        ort_engine._click = counter.inner
    ref = torch_engine.predict(hb, refine)
    assert counter.calls == 1 and got.low_res_logits.shape == ref.low_res_logits.shape
    scale = max(float(np.abs(ref.low_res_logits).max()), 1.0)
    np.testing.assert_allclose(got.low_res_logits, ref.low_res_logits, atol=1e-5 * scale)
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)


def test_stored_beside_a_disk_cache_and_loaded_without_export(tmp_path, monkeypatch):
    sam = tiny_sam(seed=2)
    first = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(disk_dir=tmp_path / "emb"))
    first.set_image(IMAGE)
    (stored,) = (tmp_path / "emb" / "onnx-click").glob("*.onnx")
    assert stored.name == f"decoder_click-{onnx_click.decoder_fingerprint(sam)}.onnx"

    def no_export(_sam):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_click, "_export", no_export)
    again = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(disk_dir=tmp_path / "emb"))
    handle = again.set_image(IMAGE)
    assert again.click_decoder() is not None
    np.testing.assert_allclose(again.predict(handle, _prompts(PROMPTS[0])).low_res_logits,
                               first.predict(first.set_image(IMAGE),
                                             _prompts(PROMPTS[0])).low_res_logits, atol=1e-6)
    # another decoder's weights get another file
    other = tiny_sam(seed=3)
    assert onnx_click.decoder_fingerprint(other) != onnx_click.decoder_fingerprint(sam)


def test_falls_back_to_torch_when_the_export_fails(monkeypatch):
    def broken(_sam):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_click, "_export", broken)
    engine = SamEngine(tiny_sam(seed=1), "tiny", device="cpu")
    handle = engine.set_image(IMAGE)
    assert engine.click_decoder() is None and not engine.click_onnx
    assert handle.features.click_terms is None and "onnxruntime" not in engine.info.note
    masks = engine.predict(handle, _prompts(PROMPTS[0]))
    assert masks.low_res_logits.shape == (1, 3, 256, 256)
