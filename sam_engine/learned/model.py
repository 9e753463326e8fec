"""The learned engine's network: a small U-Net on one prompt's crop, with an IoU head.

Input (B, IN_CHANNELS, S, S) from crops.network_input; output mask logits (B, 1, S, S) and the
predicted IoU of the thresholded mask (B, 1) in [0, 1], which ranks candidates as SAM's IoU
head does. Plain convolutions, batch norm and bilinear upsampling only, so the same module
exports to ONNX as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from sam_engine.learned.crops import IN_CHANNELS, VERSION, CropGeometry

ARCH = "crop-unet-v1"


@dataclass(frozen=True)
class NetConfig:
    """Architecture of one learned model (stored in its manifest)."""

    widths: tuple[int, ...] = (12, 24, 48, 96, 128)
    geometry: CropGeometry = CropGeometry()
    arch: str = ARCH

    def to_dict(self) -> dict:
        return {"arch": self.arch, "widths": list(self.widths),
                "geometry": self.geometry.to_dict(), "preprocess": VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        if d.get("arch") != ARCH:
            raise ValueError(f"unknown learned-model architecture {d.get('arch')!r}; "
                             f"this version reads {ARCH}")
        if d.get("preprocess", VERSION) != VERSION:
            raise ValueError(f"the model was trained with crop preprocessing "
                             f"{d.get('preprocess')!r}; this version makes {VERSION}")
        return cls(widths=tuple(int(v) for v in d["widths"]),
                   geometry=CropGeometry.from_dict(d["geometry"]))


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU: one U-Net level (also the finder's)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True))


class CropUNet(nn.Module):
    """U-Net over len(widths) levels (each halves the side); S must divide by 2**(levels-1)."""

    def __init__(self, config: NetConfig = NetConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList([conv_block(IN_CHANNELS, w[0])]
                                  + [conv_block(w[i - 1], w[i]) for i in range(1, len(w))])
        self.up = nn.ModuleList([conv_block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1)])
        self.head = nn.Conv2d(w[0], 1, 1)
        self.iou = nn.Sequential(nn.Linear(2 * w[-1] + 2 * w[0], 64), nn.ReLU(inplace=True),
                                 nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        deep = x
        for i in range(len(self.up) - 1, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        logits = self.head(x)
        prob = torch.sigmoid(logits)
        # the IoU head sees the deep features and the top features pooled inside/outside the mask
        inside = (x * prob).sum((2, 3)) / (prob.sum((2, 3)) + 1.0)
        outside = (x * (1 - prob)).sum((2, 3)) / ((1 - prob).sum((2, 3)) + 1.0)
        pooled = torch.cat([deep.mean((2, 3)), deep.amax((2, 3)), inside, outside], dim=1)
        return logits, torch.sigmoid(self.iou(pooled))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
