"""Thin-structure evidence (cracks, scratches, hairlines): morphological top-hat response."""

from __future__ import annotations

import cv2
import numpy as np

from sam_engine.classic.candidates import disk


def tophat(gray: np.ndarray, polarity: int, width: int) -> np.ndarray:
    """Response of structures narrower than `width` px that are darker (polarity -1) or brighter
    (+1) than their surroundings: black / white top-hat with a disk of that diameter."""
    op = cv2.MORPH_BLACKHAT if polarity < 0 else cv2.MORPH_TOPHAT
    return cv2.morphologyEx(gray, op, disk(max(1, width // 2)))
