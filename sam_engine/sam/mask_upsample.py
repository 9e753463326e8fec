"""Low-res SAM logits (256x256) to boolean masks at the original image size, only where needed.

SamPredictor upsamples every candidate twice over the full frame (bilinear to 1024x1024, crop the
unpadded part, bilinear to the original size). The windowed, torch-free implementation lives in
upsample_np (shared with the ONNX runtime); this module gives it tensors, and keeps the exact
torch reference of SamPredictor's postprocessing for tests and debugging.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sam_engine.constants import IMG_SIZE
from sam_engine.upsample_np import NumpyMaskUpsampler


class MaskUpsampler(NumpyMaskUpsampler):
    """Turns (N, 256, 256) low-res logit tensors into bool (N, H, W) masks for one geometry."""

    def __call__(self, logits: torch.Tensor) -> np.ndarray:
        return super().__call__(logits.detach().float().cpu().numpy())

    def logits(self, low: torch.Tensor) -> torch.Tensor:
        """Full-frame float logits (N, H, W), exactly SamPredictor's postprocessing."""
        x = F.interpolate(low[:, None].float(), (IMG_SIZE, IMG_SIZE), mode="bilinear",
                          align_corners=False)
        x = x[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)[:, 0]
