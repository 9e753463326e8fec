"""Preprocessing constants shared by every backend (torch engine, ONNX export, line runtime).

One source: change a value here and bump PREPROCESS_VERSION so cached embeddings are recomputed.
"""

from __future__ import annotations

# Meta's SAM normalisation (RGB, 0..255 scale), see segment_anything.modeling.Sam.
PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)
# The encoder's square input: the longest image side is resized to this, the rest zero-padded
# (bottom/right) after normalisation.
IMG_SIZE: int = 1024
# The decoder's low-resolution mask side (IMG_SIZE / 4).
LOW_RES_SIZE: int = 256
# Bumped whenever anything that changes an embedding for the same pixels changes.
PREPROCESS_VERSION: str = "1"
# Mask logits above this are foreground (SamPredictor's mask_threshold).
MASK_THRESHOLD: float = 0.0
