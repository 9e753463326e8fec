"""Tiny finders for tests: bright ellipses are one class, dark ones another, on grey noise."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CLASSES = ("scratch", "pit")
BRIGHT, DARK = 230, 25


def blob_image(rng: np.random.Generator, size: tuple[int, int], blobs=(1, 2)):
    """(rgb, labels): grey noise with a bright (label 1) and/or a dark (label 2) ellipse."""
    h, w = size
    img = rng.normal(128, 6, (h, w)).clip(0, 255)
    lab = np.zeros((h, w), np.uint8)
    for cls in blobs:
        m = np.zeros((h, w), np.uint8)
        c = (int(rng.uniform(0.25, 0.75) * w), int(rng.uniform(0.25, 0.75) * h))
        ax = (int(rng.uniform(0.06, 0.14) * w), int(rng.uniform(0.06, 0.14) * h))
        cv2.ellipse(m, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        img[m > 0] = BRIGHT if cls == 1 else DARK
        lab[m > 0] = cls
    return np.repeat(img.astype(np.uint8)[..., None], 3, 2), lab


def blob_dataset(n: int, seed: int = 0, size=(64, 64)):
    """A learned.data.Dataset of n blob images (instances per ellipse, classes CLASSES)."""
    from sam_engine.learned.data import Dataset, Instance, make_image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        blobs = tuple(c for c in (1, 2) if rng.random() < 0.8) or (1,)
        rgb, lab = blob_image(rng, size, blobs)
        inst = [Instance(CLASSES[c - 1], lab == c) for c in blobs if (lab == c).any()]
        images.append(make_image(rgb, inst, group=f"g{i}", source=f"blob{i}"))
    return Dataset(images, [], "blobs")


def tiny_settings(steps: int = 60):
    from sam_engine.finder.train import FinderSettings

    return FinderSettings(steps=steps, batch=8, crop=64, lr=2e-2, warmup=5, clean_share=0.2,
                          checkpoint_every=20)


def tiny_config(classes=CLASSES):
    from sam_engine.finder.model import FinderConfig
    from sam_engine.finder.preprocess import FinderGeometry

    return FinderConfig(classes=tuple(classes), widths=(8, 8, 8, 8),
                        geometry=FinderGeometry(long_side=64))


def train_tiny_finder(folder: Path, name: str = "tiny-finder", steps: int = 60) -> Path:
    """Train a tiny finder on blob images and save it as a finder model folder."""
    import torch

    from sam_engine.finder.model import FinderNet
    from sam_engine.finder.preprocess import PostSettings
    from sam_engine.finder.train import train_finder
    from sam_engine.learned.weights import ModelManifest, save_model

    torch.manual_seed(0)
    net = FinderNet(tiny_config())
    clean = [np.full((64, 64, 3), 128, np.uint8)]
    train_finder(net, blob_dataset(24).images, clean, tiny_settings(steps), progress=False)
    save_model(folder, net.state_dict(),
               ModelManifest(name, folder.name,
                             net.config.to_dict() | {"post": PostSettings().to_dict()}))
    return folder
