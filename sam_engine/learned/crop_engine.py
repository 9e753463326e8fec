"""The learned engine's contract side, in numpy: prompts -> windows -> network -> Masks.

CropEngine implements the Engine contract for any backend that runs the crop network on a
batch of inputs (`forward_batch`): the PyTorch module (learned.engine.LearnedEngine) or its ONNX
export (onnx.learned_runtime, torch-free). There is no image-level encoder: set_image converts
the image and hashes it; each predict builds one crop per candidate window (crops.py) and runs
the network once over all of them.

Candidates: a box gives len(box_margins) windows (tight to wide), a click len(click_sides)
squares (small to large); the network's IoU head scores each, so `best()` picks the scale that
fits the defect. With multimask_output=False only the first window is used. A previous low-res
mask (mask_input) is fed to the network and, without a box, sets the window to the mask's box.
"""

from __future__ import annotations

import numpy as np

from sam_engine.constants import LOW_RES_SIZE
from sam_engine.errors import PromptError
from sam_engine.image_io import image_digest, to_rgb8
from sam_engine.learned.crops import (
    CropGeometry,
    Window,
    logits_to_image,
    logits_to_low_res,
    low_res_to_crop,
    low_res_to_mask,
    network_input,
    prompt_windows,
)
from sam_engine.prompts import Prompts, validate_prompts
from sam_engine.results import EngineInfo, ImageHandle, Masks, PreparedImage


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


class CropEngine:
    """Engine contract over a crop network; subclasses give forward_batch and info."""

    geometry: CropGeometry
    info: EngineInfo

    def forward_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, S, S) float32 -> logits (N, S, S) float32 and predicted IoU (N,) float32."""
        raise NotImplementedError

    # ------------------------------------------------------------------ images
    def set_image(self, image: np.ndarray) -> ImageHandle:
        return self.set_prepared(self.prepare(image))

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """Conversion and digest only (thread safe); there is no encoder to feed."""
        rgb = to_rgb8(image)
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        return PreparedImage(rgb, image_digest(rgb), size, size, "learned")

    def set_prepared(self, prepared: PreparedImage) -> ImageHandle:
        return ImageHandle(key=f"{self.info.model_id}:{prepared.digest}",
                           original_size=prepared.original_size,
                           input_size=prepared.original_size, features=prepared.rgb)

    def set_images(self, images) -> list[ImageHandle]:
        return [self.set_prepared(im if isinstance(im, PreparedImage) else self.prepare(im))
                for im in images]

    # ------------------------------------------------------------------ prompts
    def windows_and_inputs(self, rgb: np.ndarray, prompts: Prompts,
                           n_candidates: int) -> tuple[list[list[Window]], np.ndarray]:
        """Per box (or one entry without boxes), its candidate windows; and the stacked
        network inputs in the same order (boxes x candidates)."""
        g = self.geometry
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        prev_low = None if prompts.mask_input is None else np.asarray(
            prompts.mask_input, np.float32).reshape(LOW_RES_SIZE, LOW_RES_SIZE)
        # the previous mask sets the window only without a box: only then is it upsampled
        prev_mask = None if prev_low is None or prompts.boxes is not None \
            else low_res_to_mask(prev_low, size)
        boxes = [None] if prompts.boxes is None else list(prompts.boxes)
        wins, inputs = [], []
        for box in boxes:
            ws = prompt_windows(size, box, prompts.points, prompts.labels, prev_mask,
                                n_candidates, g)
            wins.append(ws)
            for w in ws:
                prev = None if prev_low is None else sigmoid(
                    low_res_to_crop(prev_low, w, g.size, size))
                inputs.append(network_input(rgb, w, g, box, prompts.points, prompts.labels,
                                            prev))
        return wins, np.stack(inputs).astype(np.float32)

    def predict(self, handle: ImageHandle, prompts: Prompts,
                multimask_output: bool = True) -> Masks:
        p = validate_prompts(prompts, handle.original_size)
        if p.points is None and p.boxes is None:
            raise PromptError("give at least one point or box")
        rgb = handle.features
        n = len(self.geometry.box_margins if p.boxes is not None else self.geometry.click_sides)
        n = n if multimask_output else 1
        wins, x = self.windows_and_inputs(rgb, p, n)
        logits, iou = self.forward_batch(x)
        nb = len(wins)
        logits = logits.reshape(nb, n, *logits.shape[-2:])
        scores = np.asarray(iou, np.float32).reshape(nb, n)
        size = handle.original_size
        low = np.stack([np.stack([logits_to_low_res(logits[b, c], wins[b][c], size)
                                  for c in range(n)]) for b in range(nb)])

        def upsample(b: int, c: int) -> np.ndarray:
            return logits_to_image(logits[b, c], wins[b][c], size) > 0

        return Masks(scores=scores, low_res_logits=low, image_size=size, upsample=upsample)
