"""Helpers for the GUI tests: small image folders, engines that count encoder runs, waiting."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DEFECT = (120, 80, 170, 110)  # x0, y0, x1, y1 (exclusive) of the dark defect in part images
SIZE = (240, 320)  # H, W


def part_image(seed: int = 0, defect=DEFECT, size=SIZE) -> np.ndarray:
    """Grey RGB part surface (about 180 +- 6) with one dark rectangular defect (about 60)."""
    rng = np.random.default_rng(seed)
    img = (180 + rng.normal(0, 6, size)).clip(0, 255)
    x0, y0, x1, y1 = defect
    img[y0:y1, x0:x1] = 60 + rng.normal(0, 4, (y1 - y0, x1 - x0))
    grey = img.astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def write_folder(folder: Path, n: int = 3, corrupt_at: int | None = None) -> list[Path]:
    """part_00.png ... (different seeds); `corrupt_at` makes that file garbage bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"part_{i:02d}.png"
        if i == corrupt_at:
            # PNG signature and end chunk (so not "truncated"), garbage between: corrupt
            path.write_bytes(b"\x89PNG\r\n\x1a\nnot an image" + b"\x00" * 64 + b"IEND\xaeB`\x82")
        else:
            cv2.imwrite(str(path), part_image(seed=i))
        paths.append(path)
    return paths


class CountingEngine:
    """Wraps an engine: records which images set_image got and the prompts predict got."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.info = engine.info
        self.set_image_digests = []  # one per set_image call
        self.predict_prompts = []

    def set_image(self, image):
        from sam_engine.image_io import image_digest

        self.set_image_digests.append(image_digest(image))
        return self.engine.set_image(image)

    def predict(self, handle, prompts, multimask_output=True):
        self.predict_prompts.append(prompts)
        return self.engine.predict(handle, prompts, multimask_output)


def tiny_sam_engine():
    """A random-weight tiny SAM with a memory-only cache, and a function giving the number of
    encoder runs so far (embedding cache misses: every miss runs the encoder once)."""
    from sam_engine.embedding_cache import EmbeddingCache
    from sam_engine.sam_backend import SamEngine
    from tests.sam_factory import tiny_sam

    engine = SamEngine(tiny_sam(0), "tiny", device="cpu", cache=EmbeddingCache())
    return engine, lambda: engine.cache.stats.misses
