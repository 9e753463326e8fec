"""Small synthetic training sets and tiny learned models for the tuning tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sam_engine.learned.data import Instance, TrainImage, make_image
from sam_engine.learned.model import CropUNet, NetConfig
from sam_engine.learned.weights import ModelManifest, save_model
from sam_engine.synthetic.generator import make_part

TINY = NetConfig(widths=(8, 8, 16, 16, 16))


def synthetic_images(n: int, seed: int = 0, size=(120, 160)) -> list[TrainImage]:
    out = []
    for i in range(n):
        part = make_part(seed * 1000 + i, size=size)
        inst = [Instance(d.kind, d.mask) for d in part.instances if d.mask.any()]
        if inst:
            out.append(make_image(part.image, inst, source=f"synthetic:{i}"))
    return out


def blob_images(n: int, seed: int = 0, size: int = 96) -> list[TrainImage]:
    """Easy data: one dark ellipse on a noisy bright background per image."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.normal(180, 12, (size, size)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        c = tuple(int(v) for v in rng.integers(25, size - 25, 2))
        axes = tuple(int(v) for v in rng.integers(6, 20, 2))
        cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        img[mask > 0] = (img[mask > 0] * 0.45).astype(np.uint8)
        rgb = np.repeat(img[:, :, None], 3, 2)
        out.append(make_image(rgb, [Instance("blob", mask > 0)]))
    return out


def easy_image(seed: int, size: int = 128) -> TrainImage:
    """A bright ellipse (class "blob") on a dark noisy background."""
    rng = np.random.default_rng(seed)
    grey = rng.normal(60, 8, (size, size))
    mask = np.zeros((size, size), np.uint8)
    cx, cy = (int(v) for v in rng.integers(35, size - 35, 2))
    a, b = (int(v) for v in rng.integers(12, 30, 2))
    cv2.ellipse(mask, (cx, cy), (a, b), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    grey[mask > 0] += 120
    rgb = np.repeat(grey.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return make_image(rgb, [Instance("blob", mask > 0)])


def tiny_model(seed: int = 0, config: NetConfig = TINY) -> CropUNet:
    import torch

    torch.manual_seed(seed)
    return CropUNet(config).eval()


def save_tiny(folder: Path, name: str = "tiny", version: str = "1", seed: int = 0,
              model: CropUNet | None = None) -> ModelManifest:
    m = model if model is not None else tiny_model(seed)
    return save_model(folder, m.state_dict(), ModelManifest(name, version, m.config.to_dict()))


def write_pairs(folder: Path, images: list[TrainImage]) -> Path:
    """images/ + masks/ pairs (one mask per image, instances merged) for read_folder."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for k, im in enumerate(images):
        mask = np.zeros(im.size, np.uint8)
        for inst in im.instances:
            mask[inst.mask] = 255
        cv2.imwrite(str(folder / "images" / f"p{k:03d}.png"), im.rgb[:, :, ::-1])
        cv2.imwrite(str(folder / "masks" / f"p{k:03d}.png"), mask)
    return folder
