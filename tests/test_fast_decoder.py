"""The fast decoder gives SamPredictor's logits for the same random model and prompt."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from sam_engine.sam.click_decoder import click_terms
from sam_engine.sam.fast_decoder import FastMaskDecoder, ImageTerms
from tests.sam_factory import tiny_sam


@pytest.fixture(scope="module")
def setup():
    sam = tiny_sam(seed=1)
    pred = SamPredictor(sam)
    rng = np.random.default_rng(0)
    pred.set_image((rng.random((300, 480, 3)) * 255).astype(np.uint8))
    return sam, pred


PROMPTS = [
    dict(points=[[100, 80]], labels=[1]),
    dict(points=[[100, 80], [300, 200], [20, 290]], labels=[1, 0, 1]),
    dict(box=[[50, 40, 200, 180]]),
    dict(box=[[50, 40, 200, 180]], points=[[120, 100]], labels=[0]),
    dict(box=[[50, 40, 200, 180], [0, 0, 480, 300], [300, 100, 310, 110]]),
]


CASES = [(p, mm, wm, None) for p in PROMPTS for mm in (True, False) for wm in (False, True)]
CASES += [(PROMPTS[-1], mm, wm, 1) for mm in (True, False) for wm in (False, True)]  # chunked


@pytest.fixture(scope="module")
def decoders(setup):
    sam, pred = setup
    out = {}
    for chunk in (None, 1):
        fd = FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder, chunk=chunk)
        out[chunk] = (fd, fd.image_terms(pred.features))
    return out


@pytest.mark.parametrize("prompt, multimask, with_mask, chunk", CASES)
def test_parity_with_sam_predictor(setup, decoders, prompt, multimask, with_mask, chunk):
    sam, pred = setup
    box = prompt.get("box")
    b = 1 if box is None else len(box)
    pts = lab = None
    if "points" in prompt:
        pts = torch.as_tensor(pred.transform.apply_coords(np.array(prompt["points"], float),
                                                          pred.original_size)).float()
        pts = pts[None].expand(b, -1, -1)
        lab = torch.as_tensor(prompt["labels"])[None].expand(b, -1)
    boxes = None if box is None else pred.transform.apply_boxes_torch(
        torch.tensor(box, dtype=torch.float), pred.original_size)
    mask = torch.randn(b, 1, 256, 256, generator=torch.Generator().manual_seed(3)) * 4 \
        if with_mask else None

    ref_masks, ref_iou, ref_low = pred.predict_torch(pts, lab, boxes, mask_input=mask,
                                                     multimask_output=multimask)
    fd, terms = decoders[chunk]
    with torch.no_grad():
        sparse, _ = sam.prompt_encoder(points=None if pts is None else (pts, lab), boxes=boxes,
                                       masks=None)
        low, iou = fd(terms, sparse, mask, multimask)
    assert low.shape == ref_low.shape and iou.shape == ref_iou.shape
    scale = ref_low.abs().max().item()
    assert torch.allclose(low, ref_low, atol=1e-5 * max(scale, 1.0)), (low - ref_low).abs().max()
    assert torch.allclose(iou, ref_iou, atol=1e-5)


def test_rejects_unknown_decoder_layout():
    sam = tiny_sam(seed=0)
    sam.mask_decoder.output_upscaling[2] = torch.nn.ReLU()
    with pytest.raises(ValueError, match="output_upscaling"):
        FastMaskDecoder(sam.prompt_encoder, sam.mask_decoder)


def test_with_mask_terms_equal_decoding_with_the_mask_input(setup, decoders):
    """Terms corrected for a mask input, decoded without it, give what Meta's decoder gives for
    the same prompt with the mask input (SamPredictor: an independent reference)."""
    sam, pred = setup
    fd, terms = decoders[1]
    pts = torch.as_tensor(pred.transform.apply_coords(np.array([[100.0, 80.0]]),
                                                      pred.original_size)).float()[None]
    lab = torch.ones(1, 1)
    mask = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(5)) * 4
    _, ref_iou, ref_low = pred.predict_torch(pts, lab, mask_input=mask, multimask_output=True)
    _, _, ref_plain = pred.predict_torch(pts, lab, multimask_output=True)
    with torch.no_grad():
        sparse, _ = sam.prompt_encoder(points=(pts, lab), boxes=None, masks=None)
        c = {k: t[0] for k, t in fd.mask_corrected(terms.layer1(), mask).items()}
        masked = ImageTerms(pos=terms.pos, size=terms.size, **c)
        low, iou = fd(masked, sparse, None, True)
    assert not torch.allclose(ref_plain, ref_low, atol=1e-3)  # the mask input matters here
    assert torch.allclose(low, ref_low, atol=1e-5 * max(ref_low.abs().max().item(), 1.0)), \
        (low - ref_low).abs().max()
    assert torch.allclose(iou, ref_iou, atol=1e-5)


def test_one_mask_correction_for_both_layouts_and_the_gate(decoders):
    """mask_corrected serves the fast decoder's layout (k1, v1 merged) and the click graph's
    (k1h, v1h per head) alike, and a gate of 0 (has_mask_input = 0) leaves the terms as
    they are."""
    fd, terms = decoders[None]
    mask = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(7)) * 4
    with torch.no_grad():
        merged = fd.mask_corrected(terms.layer1(), mask)
        per_head = fd.mask_corrected(click_terms(terms), mask)
        gated = fd.mask_corrected(terms.layer1(), mask, gate=torch.tensor([0.0, 1.0]))
    nh, hw, d = terms.q1.shape
    for name in ("k1", "v1"):
        split = merged[name].view(2, hw, nh, d).transpose(1, 2)
        torch.testing.assert_close(per_head[name + "h"], split, rtol=1e-6, atol=1e-6)
    for name in ("src", "q1"):
        torch.testing.assert_close(per_head[name], merged[name], rtol=1e-6, atol=1e-6)
    for name, t in terms.layer1().items():
        assert not torch.allclose(merged[name][0], t, atol=1e-4), name  # the mask matters
        assert torch.equal(gated[name][0], t), name
        torch.testing.assert_close(gated[name][1], merged[name][1], rtol=1e-6, atol=1e-6)
