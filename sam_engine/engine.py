"""The engine contract every segmentation backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from sam_engine.prompts import Prompts
from sam_engine.results import EngineInfo, ImageHandle, Masks


@runtime_checkable
class Engine(Protocol):
    """set_image once per image, then predict per prompt (cheap).

    Engines may also offer (SamEngine and ClassicEngine do; callers use getattr and fall back
    to set_image): `prepare(image) -> PreparedImage`, the CPU-side work (conversion, digest,
    encoder input), thread safe and without a model call, for worker threads;
    `set_prepared(prepared) -> ImageHandle` (cache lookup, else the encoder), so that
    set_image(image) == set_prepared(prepare(image)); and
    `set_images(images) -> list[ImageHandle]` for arrays or PreparedImages, encoded in batches
    where the device gains from it.
    """

    info: EngineInfo

    def set_image(self, image: np.ndarray) -> ImageHandle:
        """Prepare an RGB uint8 (H, W, 3) image (see image_io.to_rgb8 for conversions)."""
        ...

    def predict(
        self, handle: ImageHandle, prompts: Prompts, multimask_output: bool = True
    ) -> Masks:
        """Masks for the prompts; raises PromptError for invalid prompts."""
        ...
