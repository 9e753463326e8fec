"""Synthetic folders for the batch tests: parts with known defects and their prompt files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from sam_engine.synthetic.generator import make_part

SIZE = (240, 320)  # small parts keep the tests fast


def write_parts(folder: Path, n: int, seed: int = 0, suffixes=(".png",),
                prompts: Path | None = None) -> dict[str, list[dict]]:
    """n parts as images under folder (suffixes cycled; ".tif" is written 16-bit) and our JSON
    prompt files (ground-truth boxes) under `prompts` (default: beside the images).
    Returns {relative path: [{"kind", "box", "area"}]} ground truth."""
    folder, prompts = Path(folder), Path(prompts or folder)
    truth = {}
    for i in range(n):
        part = make_part(seed * 1000 + i, SIZE, n_defects=2)
        suffix = suffixes[i % len(suffixes)]
        rel = f"part_{i:02d}{suffix}"
        img = cv2.cvtColor(part.image, cv2.COLOR_RGB2BGR)
        if suffix == ".tif":
            img = img.astype(np.uint16) * 257
        folder.mkdir(parents=True, exist_ok=True)
        params = [cv2.IMWRITE_JPEG_QUALITY, 100] if suffix == ".jpg" else []
        assert cv2.imwrite(str(folder / rel), img, params)
        defects = [{"kind": d.kind, "box": list(d.bbox), "area": d.area}
                   for d in part.instances]
        prompts.mkdir(parents=True, exist_ok=True)
        (prompts / f"part_{i:02d}.json").write_text(json.dumps({"defects": defects}))
        truth[rel] = defects
    return truth


# the synthetic parts' classes, calibrated; PATCH_LIMIT makes every patch a FAIL
RECIPE_BASE = """
schema_version = 1
[part]
name = "synthetic"
version = "1"
[calibration]
mm_per_px = 0.05
[classes.scratch]
[classes.pit]
[classes.crack]
[classes.stain]
[classes.inclusion]
[classes.patch]
"""
PATCH_LIMIT = "max_count = 0\n"
