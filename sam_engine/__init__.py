"""Segmentation core of sam-inspect: SAM and the default engine behind one contract.

Importable without Qt. Typical use::

    from sam_engine import load_engine, Prompts
    engine = load_engine()            # SAM when a checkpoint is installed, else the default
    handle = engine.set_image(rgb)    # embedding computed once (and cached)
    masks = engine.predict(handle, Prompts.from_points([[120, 80]]))
"""

from .errors import (
    CacheError,
    CheckpointError,
    DownloadError,
    ImageError,
    PromptError,
    SamEngineError,
)
from .factory import load_engine
from .prompts import Prompts, validate_prompts
from .results import EngineInfo, ImageHandle, Masks

__all__ = [
    "CacheError",
    "CheckpointError",
    "DownloadError",
    "EngineInfo",
    "ImageError",
    "ImageHandle",
    "Masks",
    "PromptError",
    "Prompts",
    "SamEngineError",
    "load_engine",
    "validate_prompts",
]
