"""Tuning SAM checkpoints (sam_engine.learned.sam_tune): decoder tuning on cached embeddings,
LoRA on the encoder's qkv, checkpoints that resume, and the delta file tied to its base.

Models are random: tests/sam_factory.tiny_sam (real decoder shapes), and micro_sam below
(the same modules at 32 channels, ~10x cheaper) where only bookkeeping is checked. Within a
test's budget a random tiny SAM does not learn synthetic parts (30 steps on 8 parts leave the
held-out IoU flat), so learning is shown on a very easy set (one bright ellipse per image),
which it learns in 20 steps (held-out IoU ~0.08 -> ~0.97); synthetic parts are used elsewhere.
Torch runs on one thread here: on a busy 2-core CPU two threads make these tiny models 5-50x
slower (OpenMP workers wait for each other).
"""

from __future__ import annotations

import json
import os
import signal
from functools import partial

import numpy as np
import pytest
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from sam_engine.constants import IMG_SIZE, PIXEL_MEAN, PIXEL_STD
from sam_engine.errors import CheckpointError
from sam_engine.learned.data import Instance, TrainImage, make_image
from sam_engine.learned.sam_tune import (
    DeltaBaseMismatchError,
    SamTuneError,
    SamTuneSettings,
    apply_sam_delta,
    delta_manifest_path,
    delta_names,
    evaluate_sam,
    low_res_coverage,
    model_fingerprint,
    qkv_weight_names,
    save_sam_delta,
    tune_sam_decoder,
)
from sam_engine.synthetic.generator import make_part
from tests.learned_support import easy_image
from tests.sam_factory import tiny_sam

BASE = "ab" * 32
OTHER_BASE = "cd" * 32


def micro_sam(seed: int = 0, dim: int = 32) -> Sam:
    """SAM's modules at `dim` channels and one encoder block: ~50x cheaper to decode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=IMG_SIZE, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                mlp_ratio=2, out_chans=dim, qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                window_size=14, global_attn_indexes=()),
            prompt_encoder=PromptEncoder(
                embed_dim=dim, image_embedding_size=(64, 64),
                input_image_size=(IMG_SIZE, IMG_SIZE), mask_in_chans=4),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=4 * dim,
                                              num_heads=4),
                transformer_dim=dim, iou_head_depth=3, iou_head_hidden_dim=dim),
            pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD))
    return sam.eval()


def part_images(seeds, size=(128, 128)) -> list[TrainImage]:
    """Synthetic parts (sam_engine.synthetic) with their defects as instances."""
    out = []
    for seed in seeds:
        part = make_part(seed, size=size, n_defects=2)
        out.append(make_image(part.image, [Instance(d.kind, d.mask) for d in part.instances]))
    return out


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


QUICK = dict(images_per_step=1, instances_per_image=1, p_corrective=0.0, warmup_steps=1,
             device="cpu", lr=1e-3)


# ------------------------------------------------------------------ learning
def test_decoder_tuning_lowers_held_out_loss_and_raises_iou():
    sam = tiny_sam()
    encoder, prompts = state(sam.image_encoder), state(sam.prompt_encoder)
    train = [easy_image(i) for i in range(6)]
    held = [easy_image(100 + i) for i in range(3)]
    settings = SamTuneSettings(steps=20, lr=1e-3, images_per_step=2, instances_per_image=1,
                               warmup_steps=5, p_corrective=0.3, checkpoint_every=0,
                               device="cpu")
    r = tune_sam_decoder(sam, train, held, settings, checkpoint_path=None, progress=False)

    assert r.steps == 20 and r.start_step == 0 and len(r.losses) == 20
    assert r.before is not None and r.after is not None
    assert r.after.loss < 0.5 * r.before.loss
    assert r.after.box_iou > r.before.box_iou + 0.3
    assert r.after.click_iou > r.before.click_iou + 0.3
    assert [c.cls for c in r.after.per_class] == ["blob"] and r.after.per_class[0].n == 3
    # only the decoder was trained; the result says so and the delta holds only it
    assert same(state(sam.image_encoder), encoder) and same(state(sam.prompt_encoder), prompts)
    n_decoder = sum(p.numel() for p in sam.mask_decoder.parameters())
    assert r.params.trainable == r.params.decoder == n_decoder and r.params.adapter == 0
    assert all(n.startswith("mask_decoder.") for n in r.delta_names)
    assert not any(p.requires_grad for p in sam.parameters())
    assert r.seconds_per_step > 0


def test_a_seed_gives_the_same_run():
    train = [easy_image(i) for i in range(2)]
    runs = []
    for seed in (0, 0, 1):
        sam = micro_sam()
        s = SamTuneSettings(steps=2, seed=seed, checkpoint_every=0,
                            **{**QUICK, "p_corrective": 1.0})
        runs.append((tune_sam_decoder(sam, train, [], s, checkpoint_path=None,
                                      progress=False), state(sam.mask_decoder)))
    (a, wa), (b, wb), (c, _) = runs
    assert a.losses == b.losses and same(wa, wb)
    assert a.losses != c.losses
    assert a.before is None and a.after is None  # no held-out images, no metrics


def test_evaluate_sam_scores_box_and_click_per_class():
    sam = micro_sam()
    images = part_images([3, 4])
    m = evaluate_sam(sam, images, device="cpu")
    n = sum(len(im.instances) for im in images)
    assert m.n_instances == n and sum(c.n for c in m.per_class) == n
    assert {c.cls for c in m.per_class} == {i.cls for im in images for i in im.instances}
    assert 0.0 <= m.box_iou <= 1.0 and 0.0 <= m.click_iou <= 1.0 and m.loss > 0
    assert evaluate_sam(sam, [], device="cpu") is None


# ------------------------------------------------------------------ LoRA
def test_lora_trains_only_the_adapters_and_merges_into_plain_weights(tmp_path):
    sam = tiny_sam()
    base = state(sam)
    total = sum(p.numel() for p in sam.parameters())
    qkv = qkv_weight_names(sam)
    assert len(qkv) == 2  # the tiny encoder's two blocks
    s = SamTuneSettings(steps=1, lora=True, lora_rank=8, train_decoder=False,
                        checkpoint_every=0, **QUICK)
    r = tune_sam_decoder(sam, part_images([3]), [], s, checkpoint_path=None, progress=False)

    # rank 8 on qkv (64 -> 192) in 2 blocks: A (8 x 64) + B (192 x 8) each
    assert r.params.adapter == 2 * 8 * (64 + 192)
    assert r.params.trainable == r.params.adapter and r.params.decoder == 0
    assert r.params.total == total + r.params.adapter
    # merged: plain modules and the base's tensor names; only the qkv weights changed
    assert not any(type(m).__module__.startswith("peft") for m in sam.modules())
    tuned = state(sam)
    assert tuned.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed == set(qkv)
    assert r.delta_names == tuple(qkv)

    fresh = tiny_sam()
    manifest = r.save_delta(tmp_path / "lora.safetensors", BASE, "tiny")
    assert manifest["kind"] == "lora" and manifest["params"]["adapter"] == r.params.adapter
    apply_sam_delta(fresh, tmp_path / "lora.safetensors", BASE)
    assert same(state(fresh), tuned)


def test_lora_with_the_decoder_counts_both():
    sam = tiny_sam()
    s = SamTuneSettings(steps=0, lora=True, lora_rank=16, checkpoint_every=0, **QUICK)
    r = tune_sam_decoder(sam, part_images([3]), [], s, checkpoint_path=None, progress=False)
    n_decoder = sum(p.numel() for p in sam.mask_decoder.parameters())
    assert r.params.adapter == 2 * 16 * (64 + 192)
    assert r.params.decoder == n_decoder
    assert r.params.trainable == r.params.adapter + n_decoder
    assert set(r.delta_names) == set(delta_names(sam, encoder_qkv=True))
    assert not any("lora_" in n for n, _ in sam.named_parameters())


# ------------------------------------------------------------------ the delta file
def tuned_tiny(seed: int = 5) -> Sam:
    """tiny_sam with its decoder moved away from the base (as tuning would)."""
    sam = tiny_sam()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sam.mask_decoder.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return sam


def test_delta_holds_the_decoder_and_loads_onto_its_base(tmp_path):
    tuned = tuned_tiny()
    path = tmp_path / "site.safetensors"
    written = save_sam_delta(path, tuned, BASE.upper(), {"base_model_id": "tiny",
                                                         "data": {"digest": "d"}})
    manifest = json.loads(delta_manifest_path(path).read_text())
    assert manifest == written
    assert manifest["base_sha256"] == BASE and manifest["base_model_id"] == "tiny"
    assert manifest["delta_bytes"] == path.stat().st_size and len(manifest["delta_sha256"]) == 64
    assert set(manifest["tensors"]) == {f"mask_decoder.{k}" for k in
                                        tuned.mask_decoder.state_dict()}
    total = sum(t.numel() * t.element_size() for t in tuned.state_dict().values())
    assert path.stat().st_size < 0.9 * total  # the decoder only, not the whole model

    base = tiny_sam()
    encoder = state(base.image_encoder)
    assert apply_sam_delta(base, path, BASE)["data"] == {"digest": "d"}
    assert same(state(base.mask_decoder), state(tuned.mask_decoder))
    assert same(state(base.image_encoder), encoder)


def test_delta_is_refused_on_another_base(tmp_path):
    path = tmp_path / "site.safetensors"
    save_sam_delta(path, tuned_tiny(), BASE, {})
    base = tiny_sam()
    before = state(base)
    with pytest.raises(DeltaBaseMismatchError) as err:
        apply_sam_delta(base, path, OTHER_BASE)
    assert BASE in str(err.value) and OTHER_BASE in str(err.value)
    assert isinstance(err.value, CheckpointError)
    assert err.value.expected_sha256 == BASE and err.value.actual_sha256 == OTHER_BASE
    assert same(state(base), before)


@pytest.mark.parametrize("damage", ["bit flip", "truncated", "no manifest", "bad manifest"])
def test_damaged_delta_is_refused(tmp_path, damage):
    path = tmp_path / "site.safetensors"
    save_sam_delta(path, tuned_tiny(), BASE, {})
    data = bytearray(path.read_bytes())
    if damage == "bit flip":
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "no manifest":
        delta_manifest_path(path).unlink()
    else:
        delta_manifest_path(path).write_text("{not json")
    base = tiny_sam()
    before = state(base)
    with pytest.raises(CheckpointError) as err:
        apply_sam_delta(base, path, BASE)
    assert path.stem in str(err.value)  # the delta or its manifest, by name
    if damage in ("bit flip", "truncated"):
        assert "sha256" in str(err.value) and "truncated or altered" in str(err.value)
    assert same(state(base), before)


def test_delta_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "micro.safetensors"
    save_sam_delta(path, micro_sam(), BASE, {})
    with pytest.raises(CheckpointError, match="does not fit this model: mask_decoder"):
        apply_sam_delta(tiny_sam(), path, BASE)


# ------------------------------------------------------------------ checkpoints
def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "tune.ckpt"
    train = part_images([7])
    sam = tiny_sam()
    base_fp = model_fingerprint(sam)
    handler = signal.getsignal(signal.SIGINT)
    s3 = SamTuneSettings(steps=3, checkpoint_every=1, **QUICK)

    def ctrl_c_at_2(step: int, loss: float) -> None:
        if step == 2:  # a real Ctrl-C: acted on once this step is done
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        tune_sam_decoder(sam, train, [], s3, checkpoint_path=ckpt, progress=False,
                         on_step=ctrl_c_at_2)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 2 and len(saved["losses"]) == 2
    assert model_fingerprint(sam) == base_fp  # given back with its base weights
    assert signal.getsignal(signal.SIGINT) is handler

    seen: list[int] = []
    r = tune_sam_decoder(sam, train, [], s3, checkpoint_path=ckpt, progress=False,
                         on_step=lambda step, loss: seen.append(step))
    assert seen == [3] and r.start_step == 2 and r.steps == 3
    assert r.losses[:2] == saved["losses"] and len(r.losses) == 3
    assert torch.load(ckpt, weights_only=True)["step"] == 3

    # more steps later: the same checkpoint continues from 3 (same base, same data)
    s4 = SamTuneSettings(steps=4, checkpoint_every=1, **QUICK)
    r4 = tune_sam_decoder(tiny_sam(), train, [], s4, checkpoint_path=ckpt, progress=False)
    assert r4.start_step == 3 and r4.steps == 4 and len(r4.losses) == 4

    # another run's checkpoint is refused, naming what differs
    with pytest.raises(SamTuneError, match="lr 0.001 -> 0.002"):
        tune_sam_decoder(tiny_sam(), train, [], SamTuneSettings(steps=4, **{**QUICK,
                         "lr": 2e-3}), checkpoint_path=ckpt, progress=False)
    with pytest.raises(SamTuneError, match="training data differ"):
        tune_sam_decoder(tiny_sam(), part_images([8]), [], s4, checkpoint_path=ckpt,
                         progress=False)
    ckpt.write_bytes(b"garbage")
    with pytest.raises(SamTuneError, match="delete it to start over"):
        tune_sam_decoder(tiny_sam(), train, [], s4, checkpoint_path=ckpt, progress=False)


def test_an_exception_in_a_step_gives_the_base_back(tmp_path):
    sam = micro_sam()
    base = state(sam)

    def boom(step: int, loss: float) -> None:
        raise RuntimeError("disk full")

    s = SamTuneSettings(steps=2, lora=True, checkpoint_every=1, **QUICK)
    with pytest.raises(RuntimeError, match="disk full"):
        tune_sam_decoder(sam, part_images([3]), [], s, checkpoint_path=tmp_path / "c",
                         progress=False, on_step=boom)
    assert same(state(sam), base)
    assert not any(type(m).__module__.startswith("peft") for m in sam.modules())
    assert not (tmp_path / "c").exists()  # only Ctrl-C saves outside the schedule


# ------------------------------------------------------------------ geometry
def test_low_res_target_covers_the_resized_image_only():
    # 100 x 200 -> 512 x 1024 in the encoder's frame -> 128 x 256 low-res cells
    full = low_res_coverage(np.ones((100, 200), bool), (512, 1024))
    assert full[:128].min() == 1.0 and full[128:].max() == 0.0
    left = np.zeros((100, 200), bool)
    left[:, :100] = True
    cov = low_res_coverage(left, (512, 1024))
    assert cov[:128, :127].min() > 0.99 and cov[:, 129:].max() < 0.01
    assert cov.sum() == pytest.approx(128 * 128, rel=0.01)


def test_settings_are_checked():
    with pytest.raises(SamTuneError, match="p_box"):
        SamTuneSettings(p_box=1.5)
    with pytest.raises(SamTuneError, match="nothing to train"):
        SamTuneSettings(train_decoder=False)
    with pytest.raises(SamTuneError, match="loss"):
        SamTuneSettings(loss="l2")
