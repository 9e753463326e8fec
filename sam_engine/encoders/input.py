"""Encoder input in torch: sam_engine.preprocess's resize, normalisation and padding on tensors.

The CPU path resizes with segment-anything's own resize (torchvision's PIL bilinear, as
ResizeLongestSide.apply_image, at preprocess.preprocess_shape) so embeddings equal
SamPredictor's. On a GPU the uint8 image is uploaded as it is (from pinned memory, a quarter
of the float bytes) and resized there with torch's antialiased bilinear filter, which follows
PIL's: the resized pixels are rounded to whole levels like PIL's uint8 output and differ from it
by at most a level or two (tests/test_encoder_fast.py measures it). The normalisation constants,
the rule and the padding are preprocess's (normalise, pad_widths).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize, to_pil_image

from sam_engine import preprocess
from sam_engine.constants import IMG_SIZE


def resize_cpu(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) resized to preprocess_shape with PIL's antialiased bilinear filter:
    exactly segment_anything's ResizeLongestSide.apply_image (same call, our geometry)."""
    size = preprocess.preprocess_shape(int(rgb.shape[0]), int(rgb.shape[1]))
    return np.array(resize(to_pil_image(rgb), list(size)))


def cpu_input(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> the encoder input (3, 1024, 1024) float32 on the CPU: resize_cpu,
    then preprocess.encoder_input (normalised, zero-padded bottom/right, as Sam.preprocess)."""
    return torch.from_numpy(preprocess.encoder_input(resize_cpu(rgb)))


def pinned(rgb) -> torch.Tensor:
    """A uint8 (H, W, 3) array as a page-locked CPU tensor (async uploads need one)."""
    return torch.from_numpy(rgb).pin_memory()


def resize_rgb(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, h, w) at whole levels: antialiased bilinear, like PIL."""
    x = img.permute(2, 0, 1).unsqueeze(0).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = x.round_().clamp_(0, 255)
    return x[0]


def mean_std(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """preprocess's normalisation constants as (3, 1, 1) float32 tensors on `device`, for
    channels-first images (make once, reuse)."""
    mean = torch.tensor(preprocess.MEAN, device=device).view(3, 1, 1)
    return mean, torch.tensor(preprocess.STD, device=device).view(3, 1, 1)


def encoder_batch(images: list[torch.Tensor], sizes: list[tuple[int, int]],
                  mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) images on one device, resized to `sizes` (preprocess_shape) ->
    normalised, zero-padded (B, 3, 1024, 1024)."""
    dev = images[0].device
    out = torch.zeros(len(images), 3, IMG_SIZE, IMG_SIZE, device=dev)
    for i, (img, (h, w)) in enumerate(zip(images, sizes, strict=True)):
        out[i, :, :h, :w] = preprocess.normalise(resize_rgb(img, (h, w)), mean, std)
    return out
