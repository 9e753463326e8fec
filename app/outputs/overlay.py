"""Drawing masks over an image for people to look at, and label-map images of the masks.

Label maps hold the defect number (Finding.number, 1-based) on each defect's pixels, 0 on the
background; where masks overlap, the later one wins (overlaps survive only in the COCO RLE
masks). They are uint8 while the largest number is at most 255, so `cv2.imread(path)` with its
default flag reads them unchanged; above that, uint16 (read those with cv2.IMREAD_UNCHANGED).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from app.inspection.findings import Finding, defect_numbers
from app.outputs import atomic_write

# Distinct, colour-blind-friendly RGB colours (Okabe-Ito) for instances.
PALETTE = np.array(
    [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
     (213, 94, 0), (204, 121, 167)],
    dtype=np.uint8,
)


def draw_overlay(
    rgb: np.ndarray, masks: list[np.ndarray], boxes: list | None = None, alpha: float = 0.45,
    numbers: Sequence[int] | None = None,
) -> np.ndarray:
    """RGB image with each mask filled semi-transparently, outlined, and its box drawn; the
    colour follows the defect number (numbers; default 1, 2, ...), so it stays with a defect."""
    nums = list(numbers) if numbers is not None else list(range(1, len(masks) + 1))
    out = rgb.astype(np.float32).copy()
    for n, mask in zip(nums, masks, strict=True):
        colour = PALETTE[(n - 1) % len(PALETTE)].astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
    out = out.clip(0, 255).astype(np.uint8)
    for i, (n, mask) in enumerate(zip(nums, masks, strict=True)):
        colour = tuple(int(v) for v in PALETTE[(n - 1) % len(PALETTE)])
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
        if boxes is not None and i < len(boxes):
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, 1)
    return out


def label_map(masks: list[np.ndarray], shape: tuple[int, int],
              numbers: Sequence[int] | None = None) -> np.ndarray:
    """(H, W) label image: 0 background, numbers[i] (default i + 1) where masks[i]; later masks
    win overlaps. uint8 when the largest label is at most 255, else uint16."""
    nums = list(numbers) if numbers is not None else list(range(1, len(masks) + 1))
    if len(nums) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(nums)} numbers")
    if any(n < 1 or n > 65535 for n in nums):
        raise ValueError(f"label values must be 1..65535, got {min(nums)}..{max(nums)}")
    out = np.zeros(shape, dtype=np.uint8 if max(nums, default=0) <= 255 else np.uint16)
    for n, mask in zip(nums, masks, strict=True):
        out[mask] = n
    return out


def findings_label_map(findings: Sequence[Finding], shape: tuple[int, int]) -> np.ndarray:
    """label_map of the findings' masks, each labelled with its defect number (findings
    without a mask are left out)."""
    pairs = [(n, f.mask) for n, f in zip(defect_numbers(findings), findings, strict=True)
             if f.mask is not None]
    return label_map([m for _, m in pairs], shape, [n for n, _ in pairs])


def write_label_png(path: str | Path, findings: Sequence[Finding], shape: tuple[int, int]
                    ) -> Path:
    """Write findings_label_map as a PNG, atomically."""
    return atomic_write.write_png(path, findings_label_map(findings, shape))
