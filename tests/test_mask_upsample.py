"""Windowed upsampling equals SamPredictor's two full-frame interpolations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam_engine.sam.mask_upsample import MaskUpsampler


def reference(low: torch.Tensor, input_size, original_size) -> np.ndarray:
    """segment_anything.modeling.Sam.postprocess_masks, then > 0."""
    x = F.interpolate(low[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    x = F.interpolate(x, original_size, mode="bilinear", align_corners=False)
    return (x[:, 0] > 0).numpy()


def blob_logits(cy, cx, r, seed=0) -> torch.Tensor:
    yy, xx = np.mgrid[:256, :256]
    rng = np.random.default_rng(seed)
    low = r - np.hypot(yy - cy, xx - cx) + rng.normal(0, 0.3, (256, 256))
    return torch.tensor(low, dtype=torch.float32)


@pytest.mark.parametrize(
    "original, input_size",
    [((800, 1280), (640, 1024)), ((480, 640), (768, 1024)), ((200, 200), (1024, 1024)),
     ((3000, 1000), (1024, 341)), ((333, 1024), (333, 1024))],
)
def test_matches_reference_for_small_and_large_masks(original, input_size):
    up = MaskUpsampler(input_size, original)
    lows = torch.stack([
        blob_logits(40, 50, 6),  # small defect: windowed path
        blob_logits(100, 80, 70, seed=1),  # large: full-frame path
        torch.full((256, 256), -5.0),  # empty
        torch.full((256, 256), 5.0),  # everything
    ])
    got = up(lows)
    ref = reference(lows, input_size, original)
    assert got.shape == (4, *original) and got.dtype == bool
    # identical up to float rounding at the threshold: a few pixels in millions
    for g, r in zip(got, ref, strict=True):
        assert (g != r).sum() <= max(4, 1e-5 * r.size)
    assert not got[2].any() and got[3].all()


def test_logits_match_postprocess():
    up = MaskUpsampler((640, 1024), (800, 1280))
    low = blob_logits(100, 100, 30)[None]
    ref = F.interpolate(
        F.interpolate(low[:, None], (1024, 1024), mode="bilinear", align_corners=False)[
            ..., :640, :1024], (800, 1280), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(up.logits(low), ref)
