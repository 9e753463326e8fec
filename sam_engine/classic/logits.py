"""Low-resolution logits of a mask in SAM's frame (longest side 1024, padded, then / 4)."""

from __future__ import annotations

import cv2
import numpy as np

from sam_engine.constants import IMG_SIZE, LOW_RES_SIZE

# Logit magnitude of a pixel surely inside / outside the mask.
LOGIT_CLIP = 10.0


def low_res_logits(mask: np.ndarray) -> np.ndarray:
    """(256, 256) float32 signed map, positive on the mask, for a full-size bool mask.

    The mask is area-averaged into the 256x256 frame of the 1024-resized, bottom/right padded
    image (as SAM's low_res_logits), and the coverage c in [0, 1] becomes (c - 0.5) * 2 * 10.
    """
    h, w = mask.shape
    s = (LOW_RES_SIZE / IMG_SIZE) * (IMG_SIZE / max(h, w))
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    cover = cv2.resize(mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.full((LOW_RES_SIZE, LOW_RES_SIZE), -LOGIT_CLIP, dtype=np.float32)
    out[:nh, :nw] = (cover - 0.5) * (2 * LOGIT_CLIP)
    return out
