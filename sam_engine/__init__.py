"""Segmentation core of sam-inspect: SAM and the default engine behind one contract.

Importable without Qt or app (never imports either). Typical use::

    from sam_engine import load_engine, load_image, Prompts
    engine = load_engine()            # SAM when a checkpoint is installed, else the default
    handle = engine.set_image(load_image("part.png"))   # embedding computed once (and cached)
    masks = engine.predict(handle, Prompts.from_points([[120, 80]]))

The top level is the contract every backend shares: engine (the Engine protocol), prompts,
results, errors, constants and preprocess (SAM's resize geometry and normalisation), image_io,
embedding_cache, upsample_np, factory (load_engine) and auto_masks. Subpackages:
sam/ (SamEngine on PyTorch), encoders/ (fast twins of SAM's image encoders), onnx/ (export and
the torch-free runtime), weights/ (known checkpoints, downloads, checks, file hashes),
classic/ (the default engine), learned/ (the project's own trainable engine and the tuning of
models on inspectors' masks), synthetic/ (the part/defect generator). Subpackages import the
top level, never the other way round (factory imports the backends lazily).
"""

from sam_engine.errors import (
    CacheError,
    CheckpointError,
    DownloadError,
    ImageError,
    PromptError,
    SamEngineError,
)
from sam_engine.factory import load_engine
from sam_engine.image_io import load_image
from sam_engine.prompts import Prompts, validate_prompts
from sam_engine.results import EngineInfo, ImageHandle, Masks

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
    "load_image",
    "validate_prompts",
]
