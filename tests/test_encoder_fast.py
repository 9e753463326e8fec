"""The encoder fast path (sam_engine/encoders/fast.py, encoder_tinyvit.py) against Meta's modules.

Random weights at full vit_b shapes (whole encoder), vit_h shapes per block (a windowed and a
global-attention block: a whole vit_h forward takes minutes on a CPU), MobileSAM's TinyViT whole.
The relative-position tables, attention biases and BatchNorm statistics are zero/identity at
init, so they are randomised first. Stated tolerances (fp32 / bf16) are the README's.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from segment_anything.utils.transforms import ResizeLongestSide

from sam_engine.constants import IMG_SIZE
from sam_engine.embedding_cache import EmbeddingCache
from sam_engine.encoders.fast import (
    FastBlock,
    Float32LayerNorm,
    Float32LayerNorm2d,
    fast_encoder,
    rel_pos_sdpa,
    rel_pos_sdpa_folded,
)
from sam_engine.encoders.input import encoder_batch, mean_std
from sam_engine.encoders.windows import merge, partition
from sam_engine.prompts import Prompts
from sam_engine.results import PreparedImage
from sam_engine.sam.backend import SamEngine
from tests.sam_factory import tiny_sam

# Tolerances (max |diff| of the embedding, whose values are O(1) after the neck's LayerNorm).
FP32_EMBEDDING_ATOL = 1e-3
FP32_BLOCK_RTOL = 1e-5  # ||fast - meta|| / ||meta|| of one block's output
BF16_BLOCK_RTOL = 2e-2
MASK_IOU_MIN = 0.99  # decoded masks from the two embeddings, fixed prompts (fp32)
POINTS = [[150.0, 90.0], [40.0, 200.0], [300.0, 60.0]]
BOXES = [[90, 50, 210, 130], [10, 10, 340, 230]]


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero/identity-initialised extras (rel-pos tables, TinyViT attention biases,
    BatchNorm statistics) random values so that their code paths count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "rel_pos" in name or "attention_biases" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.2)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return module.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def smooth_image(seed: int, size=(240, 360)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size[0] // 12, size[1] // 12, 3), dtype=np.uint8)
    img = np.kron(noise, np.ones((12, 12, 1), np.uint8)).astype(np.float32)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ pieces
@pytest.mark.parametrize("hw, ws", [((64, 64), 14), ((28, 28), 14), ((9, 23), 7)])
def test_windows_match_metas_partition(hw, ws):
    x = torch.randn(2, *hw, 5)
    ref, pad_hw = window_partition(x, ws)
    assert torch.equal(partition(x, ws), ref)
    assert torch.equal(merge(ref, ws, 2, *hw), window_unpartition(ref, ws, pad_hw, hw))
    fill = torch.randn(5)
    win = partition(x, ws, fill)
    padded = torch.cat([x, fill.expand(2, pad_hw[0] - hw[0], hw[1], 5)], 1)
    padded = torch.cat([padded, fill.expand(2, pad_hw[0], pad_hw[1] - hw[1], 5)], 2)
    assert torch.equal(win, window_partition(padded, ws)[0])


def test_chunked_rel_pos_mask_equals_one_mask():
    g = torch.Generator().manual_seed(1)
    n, heads, h, w, d = 3, 2, 6, 5, 8
    q, k, v = (torch.randn(n, heads, h * w, d, generator=g) for _ in range(3))
    rel_h = torch.randn(n, heads, h, w, h, generator=g)
    rel_w = torch.randn(n, heads, h, w, w, generator=g)
    whole = rel_pos_sdpa(q, k, v, rel_h, rel_w, budget=1 << 30)
    mask = (rel_h[..., None] + rel_w[..., None, :]).reshape(n, heads, h * w, h * w)
    ref = torch.softmax(q @ k.transpose(-1, -2) / d**0.5 + mask, -1) @ v
    torch.testing.assert_close(whole, ref, atol=1e-5, rtol=1e-5)
    for budget in (1, 4 * heads * w * h * w * 2, 4 * heads * h * w * h * w + 1):  # rows, items
        torch.testing.assert_close(rel_pos_sdpa(q, k, v, rel_h, rel_w, budget), whole,
                                   atol=1e-6, rtol=1e-6)


def test_folded_bias_equals_the_mask():
    """The GPU form: the bias folded into q/k (one-hot key rows/columns), no mask."""
    g = torch.Generator().manual_seed(2)
    n, heads, h, w, d = 2, 3, 7, 5, 16
    q, k, v = (torch.randn(n, heads, h * w, d, generator=g) for _ in range(3))
    rh, rw = torch.randn(h, h, d, generator=g) * 0.3, torch.randn(w, w, d, generator=g) * 0.3
    rq = q.unflatten(2, (h, w))
    ref = rel_pos_sdpa(q, k, v, torch.einsum("nahwc,hkc->nahwk", rq, rh),
                       torch.einsum("nahwc,wkc->nahwk", rq, rw), budget=1 << 30)
    got = rel_pos_sdpa_folded(q, k, v, rh, rw, torch.eye(h), torch.eye(w))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_state_dict_stays_metas_and_fp32_twin_shares_weights():
    enc = randomise(tiny_sam(3).image_encoder)
    twin = fast_encoder(enc)
    ref = enc.state_dict()
    got = twin.state_dict()
    assert list(got) == list(ref)
    assert all(got[k].data_ptr() == ref[k].data_ptr() for k in ref)  # shared, no copy
    half = fast_encoder(enc, dtype=torch.bfloat16)
    assert list(half.state_dict()) == list(ref)
    assert half.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert isinstance(half.neck[1], Float32LayerNorm2d)
    assert half.neck[1].weight.dtype == torch.float32
    assert enc.blocks[0].attn.qkv.weight.dtype == torch.float32  # the official one untouched
    assert type(enc.blocks[0]) is Block


# ------------------------------------------------------------------ blocks at vit_h / vit_b dims
def meta_block(dim: int, heads: int, window: int, seed: int) -> Block:
    torch.manual_seed(seed)
    blk = Block(dim, heads, 4.0, True, partial(torch.nn.LayerNorm, eps=1e-6), torch.nn.GELU,
                use_rel_pos=True, window_size=window, input_size=(64, 64))
    return randomise(blk, seed)


@pytest.mark.slow
@pytest.mark.parametrize("window", [14, 0], ids=["windowed", "global"])
def test_vit_h_block_fp32(window):
    blk = meta_block(1280, 16, window, seed=window)
    x = torch.randn(1, 64, 64, 1280, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = blk(x)
        got = FastBlock(blk, (64, 64), budget=16 << 20)(x)
    assert rel_err(got, ref) < FP32_BLOCK_RTOL


@pytest.mark.parametrize("window", [14, 0], ids=["windowed", "global"])
def test_vit_b_block_bf16(window):
    """bf16 weights and activations (as on a GPU; run here on the CPU) vs Meta's fp32 block."""
    blk = meta_block(768, 12, window, seed=10 + window)
    x = torch.randn(1, 64, 64, 768, generator=torch.Generator().manual_seed(3))
    fast = FastBlock(blk, (64, 64), budget=16 << 20)
    enc = torch.nn.Module()
    enc.blocks = torch.nn.ModuleList([fast])
    from sam_engine.encoders.fast import _materialise

    fast16 = _materialise(enc, torch.bfloat16, torch.device("cpu")).blocks[0]
    with torch.no_grad():
        ref = blk(x)
        got = fast16(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert rel_err(got, ref) < BF16_BLOCK_RTOL


# ------------------------------------------------------------------ whole encoders
@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return randomise(sam_model_registry["vit_b"]())


def decoded_ious(engine: SamEngine, emb_a, emb_b, size) -> list[float]:
    ha = engine.handle_from_embedding(emb_a, size)
    hb = engine.handle_from_embedding(emb_b, size)
    out = []
    for p in [Prompts.from_points([pt]) for pt in POINTS] + [Prompts.from_boxes([b]) for b in
                                                              BOXES]:
        a, b = engine.predict(ha, p).masks, engine.predict(hb, p).masks
        out += [iou(a[0, c], b[0, c]) for c in range(a.shape[1])]
    return out


@pytest.mark.slow
def test_vit_b_whole_encoder_fp32(vit_b):
    """Meta's vit_b encoder vs the fast twin on the same pixels; then both embeddings decoded."""
    img = smooth_image(4)
    meta = SamEngine(vit_b, "vit_b", device="cpu", cache=EmbeddingCache(), fast=False)
    fast = SamEngine(vit_b, "vit_b", device="cpu", cache=EmbeddingCache())
    x = meta.prepare(img).payload[None]  # what set_image feeds the encoder
    with torch.no_grad():
        ref = vit_b.image_encoder(x)
        got = fast.encoder(x)
    assert float((got - ref).abs().max()) < FP32_EMBEDDING_ATOL
    assert min(decoded_ious(fast, ref, got, img.shape[:2])) >= MASK_IOU_MIN


def test_tiny_encoder_bf16_masks():
    """bf16 end to end (tiny SAM, CPU): embeddings and decoded masks stay close."""
    sam = tiny_sam(5)
    randomise(sam.image_encoder)
    img = smooth_image(6)
    eng = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache())
    x = eng.prepare(img).payload[None]
    twin = fast_encoder(sam.image_encoder, dtype=torch.bfloat16)
    with torch.no_grad():
        ref, got = sam.image_encoder(x), twin(x)
    assert got.dtype == torch.float32
    assert float((got - ref).abs().max()) < 0.15
    assert np.mean(decoded_ious(eng, ref, got, img.shape[:2])) > 0.95


def test_fp16_block_keeps_layernorm_in_fp32():
    blk = randomise(Block(64, 2, 4.0, True, partial(torch.nn.LayerNorm, eps=1e-6),
                          torch.nn.GELU, use_rel_pos=True, window_size=0, input_size=(16, 16)))
    enc = torch.nn.Module()
    enc.blocks = torch.nn.ModuleList([FastBlock(blk, (16, 16), budget=1 << 20)])
    from sam_engine.encoders.fast import _fp32_norms, _materialise

    _fp32_norms(enc, layernorm_too=True)
    fast16 = _materialise(enc, torch.float16, torch.device("cpu")).blocks[0]
    assert isinstance(fast16.norm1, Float32LayerNorm) and fast16.norm1.weight.dtype == torch.float32
    assert fast16.mlp.lin1.weight.dtype == torch.float16
    x = torch.randn(1, 16, 16, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, got = blk(x), fast16(x.half())
    assert rel_err(got, ref) < 5e-3


@pytest.fixture(scope="module")
def vit_t():
    mobile = pytest.importorskip("mobile_sam")
    torch.manual_seed(0)
    return randomise(mobile.sam_model_registry["vit_t"]())


def test_vit_t_whole_encoder_fp32(vit_t):
    enc = vit_t.image_encoder
    twin = fast_encoder(enc)
    assert list(twin.state_dict()) == list(enc.state_dict())
    x = torch.randn(1, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref, got = enc(x), twin(x)
    assert float((got - ref).abs().max()) < FP32_EMBEDDING_ATOL


# ------------------------------------------------------------------ input and engine
@pytest.mark.parametrize("size", [(800, 1200), (300, 200)], ids=["down", "up"])
def test_device_resize_follows_pil(size):
    """The GPU path's torch resize (run here on the CPU) vs segment-anything's PIL resize."""
    img = smooth_image(8, size)
    ref = ResizeLongestSide(IMG_SIZE).apply_image(img).astype(np.float32)
    h, w = ref.shape[:2]
    mean, std = mean_std(torch.device("cpu"))
    x = encoder_batch([torch.from_numpy(img)], [(h, w)], mean, std)[0]
    assert x.shape == (3, IMG_SIZE, IMG_SIZE)
    assert float(x[:, h:].abs().sum() + x[:, :, w:].abs().sum()) == 0  # zero padding
    got = (x[:, :h, :w] * std + mean).permute(1, 2, 0).numpy()
    diff = np.abs(got - ref)
    assert diff.max() <= 1.01 and diff.mean() < 0.3


@pytest.fixture(scope="module")
def tiny_engine():
    return SamEngine(tiny_sam(2), "tiny", device="cpu", cache=EmbeddingCache(), batch_size=2)


def test_set_images_batches_dedupes_and_caches(tiny_engine):
    imgs = [smooth_image(i) for i in range(3)]
    ref = [tiny_engine.encode(im) for im in imgs]
    tiny_engine.cache.clear()
    hs = tiny_engine.set_images([imgs[0], imgs[1], imgs[0], imgs[2]])
    assert [h.from_cache for h in hs] == [False] * 4 and hs[0].key == hs[2].key
    for h, r in zip([hs[0], hs[1], hs[3]], ref, strict=True):
        torch.testing.assert_close(h.features.embedding, r, atol=1e-5, rtol=1e-5)
    again = tiny_engine.set_image(imgs[1])
    assert again.from_cache and torch.equal(again.features.embedding, hs[1].features.embedding)


def test_prepare_on_worker_threads(tiny_engine):
    imgs = [smooth_image(10 + i) for i in range(4)]
    seen = set()

    def prep(im):
        seen.add(threading.get_ident())
        return tiny_engine.prepare(im)

    with ThreadPoolExecutor(2) as pool:
        prepared = list(pool.map(prep, imgs))
    assert all(isinstance(p, PreparedImage) for p in prepared)
    tiny_engine.cache.clear()
    hs = [tiny_engine.set_prepared(p) for p in prepared]
    direct = [tiny_engine.set_image(im) for im in imgs]
    assert [h.key for h in hs] == [h.key for h in direct]
    assert all(h.from_cache for h in direct)
    foreign = PreparedImage(imgs[0], prepared[0].digest, prepared[0].original_size,
                            prepared[0].input_size, prepared_by="another-engine", payload="?")
    assert tiny_engine.set_prepared(foreign).key == hs[0].key


def test_engine_reports_fast_path_and_masks_match_meta_engine():
    sam = tiny_sam(4)
    randomise(sam.image_encoder)
    img = smooth_image(12)
    fast = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache())
    meta = SamEngine(sam, "tiny", device="cpu", cache=EmbeddingCache(), fast=False)
    assert "fast encoder" in fast.info.note and "Meta" in meta.info.note
    hf, hm = fast.set_image(img), meta.set_image(img)
    assert hf.key == hm.key  # fp32 on the CPU: the same embedding to the cache
    for p in [Prompts.from_points([pt]) for pt in POINTS]:
        a, b = fast.predict(hf, p).masks[0], meta.predict(hm, p).masks[0]
        assert min(iou(x, y) for x, y in zip(a, b, strict=True)) >= MASK_IOU_MIN


def test_classic_engine_has_the_same_batch_interface():
    from sam_engine.classic import ClassicEngine

    eng = ClassicEngine()
    imgs = [smooth_image(20), smooth_image(21)]
    prepared = eng.prepare(imgs[0])
    assert isinstance(prepared, PreparedImage) and prepared.original_size == (240, 360)
    keys = [h.key for h in eng.set_images([prepared, imgs[1]])]
    assert keys == [eng.set_image(im).key for im in imgs]
    assert eng.set_prepared(prepared).key == keys[0]


# ------------------------------------------------------------------ CPU strips (encoder_cpu)
def _step(cin: int, cout: int, k: int, stride: int, groups: int, gelu: str | None, seed: int):
    from sam_engine.encoders.cpu_strips import ConvStep

    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, k, k, generator=g) * (2.0 / (cin // groups * k * k)) ** 0.5
    return ConvStep(w, torch.randn(cout, generator=g) * 0.1, stride, k // 2, groups, gelu)


def _chain_ref(x, steps, residual=None, final_gelu=None):
    for s in steps:
        x = torch.nn.functional.conv2d(x, s.weight, s.bias, s.stride, s.padding, 1, s.groups)
        if s.gelu:
            x = torch.nn.functional.gelu(x, approximate=s.gelu)
    if residual is not None:
        x = x + residual
        x = torch.nn.functional.gelu(x, approximate=final_gelu) if final_gelu else x
    return x


CHAINS = {  # TinyViT's patch embedding, MBConv and patch merging, at odd sizes
    "patch_embed": [(3, 8, 3, 2, 1, "none"), (8, 16, 3, 2, 1, None)],
    "mbconv": [(16, 64, 1, 1, 1, "none"), (64, 64, 3, 1, 64, "none"), (64, 16, 1, 1, 1, None)],
    "merging": [(16, 24, 1, 1, 1, "tanh"), (24, 24, 3, 2, 24, "tanh"), (24, 24, 1, 1, 1, None)],
}


@pytest.mark.parametrize("strip_bytes", [1, 4096, 1 << 30], ids=["row", "strips", "whole"])
@pytest.mark.parametrize("name", list(CHAINS))
def test_strips_equal_the_whole_chain(name, strip_bytes):
    """run_strips (rows recomputed at strip edges, zero rows at the image border, 1x1 steps as
    GEMMs) gives the chain's output over the whole image, batch items included."""
    from sam_engine.encoders.cpu_strips import run_strips

    steps = [_step(*spec, seed=i) for i, spec in enumerate(CHAINS[name])]
    x = torch.randn(2, steps[0].weight.shape[1] * steps[0].groups, 37, 29,
                    generator=torch.Generator().manual_seed(5))
    residual = x if name == "mbconv" else None
    final = "none" if residual is not None else None
    with torch.no_grad():
        ref = _chain_ref(x, steps, residual, final)
        got = run_strips(x.contiguous(memory_format=torch.channels_last), steps, residual,
                         final, strip_bytes=strip_bytes)
    assert got.shape == ref.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert float((got - ref).abs().max()) < 1e-4


def test_chunked_mlp_equals_the_mlp(vit_t):
    from sam_engine.encoders.cpu_strips import mlp_residual

    mlp = vit_t.image_encoder.layers[1].blocks[0].mlp
    x = torch.randn(2, 300, mlp.fc1.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = x + mlp(x)
        got = mlp_residual(x, mlp.norm, mlp.fc1, mlp.act, mlp.fc2,
                           chunk_bytes=64 * mlp.fc1.out_features * 4)  # 64 tokens
    assert float((got - ref).abs().max()) < 1e-5


def test_vit_t_plain_twin_path_still_matches(vit_t, monkeypatch):
    """The twin's path for CUDA / compiled graphs (no strips, no chunks), run on the CPU."""
    import sam_engine.encoders.tinyvit as tinyvit

    monkeypatch.setattr(tinyvit, "cpu_path", lambda x: False)
    enc = vit_t.image_encoder
    twin = fast_encoder(enc)
    x = torch.randn(1, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref, got = enc(x), twin(x)
    assert float((got - ref).abs().max()) < FP32_EMBEDDING_ATOL
