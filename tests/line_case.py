"""An image and a recipe for the line command's tests (importable without torch)."""

from __future__ import annotations

from pathlib import Path

LINE_RECIPE = """\
schema_version = 1

[part]
name = "line_test_part"
version = "2"

[calibration]
mm_per_px = 0.1

[[zones]]
name = "top_strip"
box = [0, 0, 192, 12]

[classes.scratch]
max_area_mm2 = 5.0
max_count = 1
forbidden_zones = ["top_strip"]

[classes.pit]
max_length_mm = 100.0

[[prompts]]
class = "scratch"
box = [10, 10, 100, 80]

[[prompts]]
class = "pit"
points = [[150, 60]]
labels = [1]

[[prompts]]
class = "scratch"
box = [0.6, 0.1, 0.95, 0.9]
frame = "relative"
"""


def write_line_case(folder: Path) -> tuple[Path, Path]:
    """A 120x192 test image (smooth random colour blocks) and a recipe with calibration,
    tolerances, a forbidden zone and three prompts (one in the relative frame)."""
    import cv2
    import numpy as np

    rgb = np.kron(np.random.default_rng(2).integers(0, 256, (10, 16, 3), dtype=np.uint8),
                  np.ones((12, 12, 1), np.uint8))
    img = folder / "part.png"
    cv2.imwrite(str(img), rgb[..., ::-1])
    recipe = folder / "recipe.toml"
    recipe.write_text(LINE_RECIPE)
    return img, recipe
