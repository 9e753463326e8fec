"""A recipe's fiducial on one image: whether it is needed, where it is, and the image scale
that follows. One implementation for batch runs and the line tool (importable without torch)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sam_engine.errors import SamEngineError
from sam_engine.prompts import Prompts


def needs_fiducial(recipe, frames: Iterable[str], mm_per_px: float | None) -> bool:
    """True when a prompt is placed relative to the fiducial, or the recipe measures by the
    fiducial and no explicit mm_per_px overrides it."""
    return recipe is not None and recipe.fiducial_box is not None and (
        any(f == "fiducial" for f in frames)
        or (recipe.fiducial_diameter_mm is not None and mm_per_px is None)
    )


def locate_fiducial(engine, handle, recipe) -> tuple[np.ndarray, tuple[float, float]]:
    """The fiducial's mask (segmented from the recipe's fiducial_box) and its centre (x, y)."""
    mask = engine.predict(handle, Prompts.from_boxes([recipe.fiducial_box]),
                          multimask_output=False).best(0)
    if not mask.any():
        raise SamEngineError(f"no fiducial found in {list(recipe.fiducial_box)} (recipe "
                             f"{recipe.path}): check the part's position or the recipe's "
                             "fiducial_box")
    ys, xs = np.nonzero(mask)
    return mask, (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)


def image_calibration(recipe, mm_per_px: float | None, fiducial_mask: np.ndarray | None):
    """The scale of one image: an explicit mm_per_px, else the recipe's (its fiducial's when it
    measures by one), else uncalibrated pixels."""
    from app.inspection.measure import FIELD_OF_VIEW_MM, Calibration

    if mm_per_px is not None:  # the recipe's plausible field of view still applies
        return Calibration(mm_per_px, recipe.calibration.field_of_view_mm
                           if recipe is not None else FIELD_OF_VIEW_MM)
    if recipe is None:
        return Calibration(None)
    return recipe.calibrate(fiducial_mask)
