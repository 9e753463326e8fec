"""Encoder input on the device: resize, normalise and pad a batch of uint8 images in torch.

The CPU path keeps segment-anything's own resize (PIL, through ResizeLongestSide.apply_image) so
embeddings equal SamPredictor's. On a GPU the uint8 image is uploaded as it is (from pinned
memory, a quarter of the float bytes) and resized there with torch's antialiased bilinear
filter, which follows PIL's: the resized pixels are rounded to whole levels like PIL's uint8
output and differ from it by at most a level or two (tests/test_encoder_fast.py measures it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sam_engine.constants import IMG_SIZE, PIXEL_MEAN, PIXEL_STD


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


def mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation constants as (3, 1, 1) tensors on `device` (make once, reuse)."""
    mean = torch.tensor(PIXEL_MEAN, device=device).view(3, 1, 1)
    return mean, torch.tensor(PIXEL_STD, device=device).view(3, 1, 1)


def encoder_batch(images: list[torch.Tensor], sizes: list[tuple[int, int]],
                  mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (H, W, 3) images on one device -> normalised, zero-padded (B, 3, 1024, 1024)."""
    dev = images[0].device
    out = torch.zeros(len(images), 3, IMG_SIZE, IMG_SIZE, device=dev)
    for i, (img, (h, w)) in enumerate(zip(images, sizes, strict=True)):
        out[i, :, :h, :w] = (resize_rgb(img, (h, w)) - mean) / std
    return out
