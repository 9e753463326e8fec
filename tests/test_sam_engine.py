"""SamEngine: SamPredictor parity at full resolution, caching, conversions, errors."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from sam_engine.embedding_cache import EmbeddingCache
from sam_engine.errors import PromptError
from sam_engine.prompts import Prompts
from sam_engine.sam.backend import SamEngine
from tests.sam_factory import tiny_sam


@pytest.fixture(scope="module")
def sam():
    return tiny_sam(seed=2)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(5)
    img = (rng.random((240, 360, 3)) * 255).astype(np.uint8)
    img[60:120, 100:200] = 30  # a dark patch
    return img


@pytest.fixture(scope="module")
def reference(sam, image):
    pred = SamPredictor(sam)
    pred.set_image(image)
    return pred


@pytest.fixture(params=["fast", "meta"])
def engine(sam, request):
    """Both decoders (fast: the CPU default; meta: Meta's module, the GPU default) must agree
    with SamPredictor."""
    return SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(), decoder=request.param)


@pytest.mark.parametrize("via", ["set_image", "set_prepared"])
def test_embedding_equals_sam_predictor(engine, image, reference, via):
    h = engine.set_image(image) if via == "set_image" else engine.set_prepared(
        engine.prepare(image))
    assert h.original_size == (240, 360) and h.input_size == reference.input_size
    assert torch.allclose(h.features.embedding, reference.features, atol=1e-5)


@pytest.mark.parametrize("size", [(240, 360), (1500, 700), (90, 160), (1024, 1024)])
def test_prepared_pixels_equal_sam_preprocess(sam, size):
    """prepare (set_image's and the batch workers' path) feeds the encoder exactly the pixels
    SamPredictor does: ResizeLongestSide.apply_image, then Sam.preprocess."""
    engine = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(), click_onnx=False)
    img = (np.random.default_rng(size[0]).random((*size, 3)) * 255).astype(np.uint8)
    resized = ResizeLongestSide(1024).apply_image(img)
    with torch.no_grad():
        ref = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    p = engine.prepare(img)
    assert p.original_size == size and p.input_size == resized.shape[:2]
    assert p.payload.dtype == torch.float32 and torch.equal(p.payload[None], ref)


@pytest.mark.parametrize(
    "prompts, kwargs",
    [
        (Prompts.from_points([[150, 90]]), dict(point_coords=np.array([[150, 90]]),
                                                point_labels=np.array([1]))),
        (Prompts(points=np.array([[150, 90], [10, 200]]), labels=np.array([1, 0])),
         dict(point_coords=np.array([[150, 90], [10, 200]]), point_labels=np.array([1, 0]))),
        (Prompts.from_boxes([[90, 50, 210, 130]]), dict(box=np.array([90, 50, 210, 130]))),
    ],
)
@pytest.mark.parametrize("multimask", [True, False])
def test_full_resolution_masks_match_sam_predictor(engine, image, reference, prompts, kwargs,
                                                   multimask):
    h = engine.set_image(image)
    got = engine.predict(h, prompts, multimask_output=multimask)
    ref_masks, ref_scores, ref_low = reference.predict(**kwargs, multimask_output=multimask)
    np.testing.assert_allclose(got.low_res_logits[0], ref_low, atol=1e-4)
    np.testing.assert_allclose(got.scores[0], ref_scores, atol=1e-5)
    assert got.masks.shape == (1, ref_masks.shape[0], 240, 360)
    mismatch = (got.masks[0] != ref_masks).sum()
    assert mismatch <= 5, mismatch  # only pixels exactly at the threshold may differ


def test_many_boxes_decode_in_one_call(engine, image, reference):
    boxes = np.array([[10, 10, 100, 100], [90, 50, 210, 130], [200, 100, 350, 230]], float)
    h = engine.set_image(image)
    got = engine.predict(h, Prompts.from_boxes(boxes), multimask_output=False)
    assert got.scores.shape == (3, 1) and got.masks.shape == (3, 1, 240, 360)
    for i, box in enumerate(boxes):
        ref, _, _ = reference.predict(box=box, multimask_output=False)
        assert (got.masks[i, 0] != ref[0]).sum() <= 5


def test_refinement_with_previous_low_res_mask(engine, image, reference):
    h = engine.set_image(image)
    first = engine.predict(h, Prompts.from_points([[150, 90]]))
    prev = first.low_res_logits[0, first.best_index()][None]
    got = engine.predict(h, Prompts.from_points([[150, 90]], mask_input=prev),
                         multimask_output=False)
    ref, _, ref_low = reference.predict(np.array([[150, 90]]), np.array([1]), mask_input=prev,
                                        multimask_output=False)
    np.testing.assert_allclose(got.low_res_logits[0], ref_low, atol=1e-4)
    assert (got.masks[0] != ref).sum() <= 5


def test_lazy_masks_compute_only_what_is_asked(engine, image):
    h = engine.set_image(image)
    res = engine.predict(h, Prompts.from_points([[150, 90]]))
    best = res.best()
    assert len(res._one) == 1  # only the best candidate was upsampled
    assert np.array_equal(best, res.masks[0, res.best_index()])


def test_second_set_image_hits_memory_cache(engine, image):
    a = engine.set_image(image)
    b = engine.set_image(image.copy())
    assert not a.from_cache and b.from_cache and a.key == b.key
    assert engine.cache.stats.hits_memory >= 1


def test_disk_cache_survives_a_new_engine(sam, image, tmp_path):
    e1 = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(disk_dir=tmp_path))
    h1 = e1.set_image(image)
    e2 = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(disk_dir=tmp_path))
    h2 = e2.set_image(image)
    assert h2.from_cache and torch.equal(h1.features.embedding, h2.features.embedding)
    p = Prompts.from_points([[150, 90]])
    assert np.array_equal(e1.predict(h1, p).masks, e2.predict(h2, p).masks)


def test_cache_key_depends_on_model(sam, image):
    cache = EmbeddingCache()
    a = SamEngine(sam, "model-a", device="cpu", cache=cache).set_image(image)
    b = SamEngine(sam, "model-b", device="cpu", cache=cache).set_image(image)
    assert a.key != b.key and not b.from_cache


@pytest.mark.parametrize(
    "convert",
    [lambda im: im[..., 0],  # grayscale
     lambda im: np.dstack([im, np.full(im.shape[:2], 255, np.uint8)]),  # RGBA
     lambda im: im[..., 0].astype(np.uint16) * 257],  # 16-bit
)
def test_other_image_layouts_are_converted(engine, image, convert):
    h = engine.set_image(convert(image))
    assert h.original_size == (240, 360)
    res = engine.predict(h, Prompts.from_boxes([[90, 50, 210, 130]]), multimask_output=False)
    assert res.masks.shape == (1, 1, 240, 360)


def test_invalid_prompt_raises_prompt_error(engine, image):
    h = engine.set_image(image)
    with pytest.raises(PromptError, match="outside"):
        engine.predict(h, Prompts.from_points([[500, 10]]))
    with pytest.raises(PromptError, match="inverted"):
        engine.predict(h, Prompts.from_boxes([[100, 10, 50, 40]]))


def test_info_reports_engine_device_and_precision(engine):
    assert engine.info.name == "sam" and engine.info.device == "cpu"
    assert engine.info.dtype == "float32"
    assert "sam:tiny on cpu/float32" in engine.info.describe()


def test_cache_key_depends_on_weights(image):
    """Two checkpoints of one architecture (official and fine-tuned) never share embeddings."""
    cache = EmbeddingCache()
    a = SamEngine(tiny_sam(seed=2), "tiny", device="cpu", cache=cache).set_image(image)
    b = SamEngine(tiny_sam(seed=3), "tiny", device="cpu", cache=cache).set_image(image)
    assert a.key != b.key and not b.from_cache


@pytest.fixture(scope="module")
def vit_t_pair(image):
    """Our engine on a random MobileSAM vit_t and MobileSAM's own SamPredictor on the same model."""
    mobile = pytest.importorskip("mobile_sam")
    from tests.sam_factory import random_vit_t

    sam = random_vit_t(seed=4)
    ref = mobile.SamPredictor(sam)
    ref.set_image(image)
    ours = SamEngine(sam, "vit_t", device="cpu", cache=EmbeddingCache())
    return ours, ours.set_image(image), ref


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.mark.parametrize(
    "prompts, kwargs",
    [(Prompts.from_points([[150, 90]]), dict(point_coords=np.array([[150, 90]]),
                                             point_labels=np.array([1]))),
     (Prompts(points=np.array([[150, 90], [300, 40]]), labels=np.array([1, 0])),
      dict(point_coords=np.array([[150, 90], [300, 40]]), point_labels=np.array([1, 0]))),
     (Prompts.from_boxes([[90, 50, 210, 130]]), dict(box=np.array([90, 50, 210, 130])))],
)
def test_vit_t_masks_match_mobile_sam_predictor(vit_t_pair, prompts, kwargs):
    """The README's vit_t claim: decoded masks IoU >= 0.99 against MobileSAM's SamPredictor."""
    engine, handle, ref = vit_t_pair
    assert engine.info.model_id == "vit_t"
    got = engine.predict(handle, prompts, multimask_output=True)
    ref_masks, ref_scores, _ = ref.predict(**kwargs, multimask_output=True)
    assert got.masks.shape == (1, *ref_masks.shape)
    np.testing.assert_allclose(got.scores[0], ref_scores, atol=1e-2)
    for c in range(ref_masks.shape[0]):
        assert 0 < ref_masks[c].mean() < 1  # a partial mask: the comparison means something
        assert _iou(got.masks[0, c], ref_masks[c]) >= 0.99, c
