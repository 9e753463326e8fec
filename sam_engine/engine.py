"""The engine contract every segmentation backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from .prompts import Prompts
from .results import EngineInfo, ImageHandle, Masks


@runtime_checkable
class Engine(Protocol):
    """set_image once per image, then predict per prompt (cheap)."""

    info: EngineInfo

    def set_image(self, image: np.ndarray) -> ImageHandle:
        """Prepare an RGB uint8 (H, W, 3) image (see image_io.to_rgb8 for conversions)."""
        ...

    def predict(
        self, handle: ImageHandle, prompts: Prompts, multimask_output: bool = True
    ) -> Masks:
        """Masks for the prompts; raises PromptError for invalid prompts."""
        ...
