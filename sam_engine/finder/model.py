"""The finder's network: a small U-Net giving per-pixel logits over background + classes.

Plain convolutions, batch norm, max pooling and bilinear upsampling, so it exports to ONNX as
it is (sam_engine.onnx.finder_export) and runs on any input whose sides divide by
2**(levels-1) (preprocess pads to that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from sam_engine.finder.preprocess import VERSION, FinderGeometry
from sam_engine.learned.model import conv_block

ARCH = "finder-unet-v1"


@dataclass(frozen=True)
class FinderConfig:
    """Architecture and classes of one finder (stored in its manifest as `net`)."""

    classes: tuple[str, ...]
    widths: tuple[int, ...] = (16, 32, 64, 96)
    geometry: FinderGeometry = field(default_factory=FinderGeometry)
    arch: str = ARCH

    def to_dict(self) -> dict:
        return {"kind": "finder", "arch": self.arch, "classes": list(self.classes),
                "widths": list(self.widths), "geometry": self.geometry.to_dict(),
                "preprocess": VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> FinderConfig:
        if d.get("arch") != ARCH:
            raise ValueError(f"unknown finder architecture {d.get('arch')!r}; this version "
                             f"reads {ARCH}")
        if d.get("preprocess") != VERSION:
            raise ValueError(f"the finder was trained with preprocessing {d.get('preprocess')!r};"
                             f" this version makes {VERSION}: train it again")
        return cls(classes=tuple(str(c) for c in d["classes"]),
                   widths=tuple(int(v) for v in d["widths"]),
                   geometry=FinderGeometry.from_dict(d["geometry"]))


class FinderNet(nn.Module):
    """U-Net over len(widths) levels; forward returns logits (B, 1 + classes, H, W)."""

    def __init__(self, config: FinderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList([conv_block(3, w[0])]
                                  + [conv_block(w[i - 1], w[i]) for i in range(1, len(w))])
        self.up = nn.ModuleList([conv_block(w[i + 1] + w[i], w[i]) for i in range(len(w) - 1)])
        self.head = nn.Conv2d(w[0], 1 + len(config.classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for i in range(len(self.up) - 1, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        return self.head(x)
