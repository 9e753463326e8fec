"""Drawing masks and prompts over an image for people to look at."""

from __future__ import annotations

import cv2
import numpy as np

# Distinct, colour-blind-friendly RGB colours (Okabe-Ito) for instances.
PALETTE = np.array(
    [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
     (213, 94, 0), (204, 121, 167)],
    dtype=np.uint8,
)


def draw_overlay(
    rgb: np.ndarray, masks: list[np.ndarray], boxes: list | None = None, alpha: float = 0.45
) -> np.ndarray:
    """RGB image with each mask filled semi-transparently, outlined, and its box drawn."""
    out = rgb.astype(np.float32).copy()
    for i, mask in enumerate(masks):
        colour = PALETTE[i % len(PALETTE)].astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    out = out.clip(0, 255).astype(np.uint8)
    for i, mask in enumerate(masks):
        colour = tuple(int(v) for v in PALETTE[i % len(PALETTE)])
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
        if boxes is not None and i < len(boxes):
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, 1)
    return out


def label_map(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """uint16 (H, W): 0 background, i+1 where masks[i] (later masks win overlaps)."""
    out = np.zeros(shape, dtype=np.uint16)
    for i, mask in enumerate(masks):
        out[mask] = i + 1
    return out
