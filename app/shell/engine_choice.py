"""Which engine a desktop session uses, in both bundle flavours.

sam_engine.factory's "auto" needs torch; the lite bundle has none. Here "auto" means: SAM on
PyTorch when torch is importable and a checkpoint is installed (full flavour), else SAM through
an ONNX export found in the model folders (app.shell.paths), else (with torch) the better of the
learned base and the classic engine (factory.best_default_engine), else the classic engine; the
note says which and why, and how to install a model. "learned" (full flavour) loads a learned
or tuned model. Nothing here imports torch unless a model is to be loaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import replace
from pathlib import Path

from app.shell import paths
from sam_engine.engine import Engine
from sam_engine.errors import SamEngineError
from sam_engine.factory import best_default_engine, load_engine

log = logging.getLogger(__name__)

DESKTOP_ENGINES = ("auto", "sam", "onnx", "classic", "learned")


NO_TORCH_ENV = "SAM_INSPECT_NO_TORCH"  # set (to 1): choose as the lite flavour, never torch


def torch_available() -> bool:
    """True when torch can be imported (full flavour / dev install), without importing it,
    and $SAM_INSPECT_NO_TORCH does not ask for the torch-free choice."""
    if os.environ.get(NO_TORCH_ENV, "").strip() not in ("", "0"):
        return False
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def load_onnx_engine(models_dir: str | Path) -> Engine:
    """The torch-free ONNX engine on an export folder (through the factory when it knows it)."""
    from sam_engine import factory

    if "onnx" in getattr(factory, "ALL_ENGINES", factory.ENGINE_NAMES):
        return load_engine("onnx", models_dir=models_dir)
    from sam_engine.onnx.runtime import OnnxEngine

    return OnnxEngine(models_dir)


def load_desktop_engine(engine: str = "auto", models_dir: str | Path | None = None,
                        model: str | None = None) -> Engine:
    """Build the engine named `engine` (DESKTOP_ENGINES); see the module doc for "auto".

    models_dir: an ONNX export folder to use (engine "onnx" or "auto"); model: the learned
    model for engine "learned" (learned-base, NAME[@VERSION] or a folder; default the base)."""
    if engine not in DESKTOP_ENGINES:
        choices = ", ".join(DESKTOP_ENGINES)
        raise SamEngineError(f"unknown engine {engine!r}; choose one of {choices}")
    if engine == "classic":
        return load_engine("classic")
    if engine in ("sam", "learned"):
        if not torch_available():
            raise SamEngineError("this is the lite bundle (no PyTorch): use an ONNX export "
                                 "(--engine onnx) or the full bundle for checkpoints and "
                                 "learned models")
        return load_engine(engine, model=model if engine == "learned" else None)
    if engine == "onnx":
        exports = [Path(models_dir)] if models_dir is not None else paths.find_onnx_exports()
        if not exports:
            raise SamEngineError("no ONNX export found.\n" + paths.no_models_message())
        return load_onnx_engine(exports[0])
    # auto
    status = paths.models_status()
    if models_dir is None and torch_available() and status.checkpoints:
        return load_engine("auto")
    exports = [Path(models_dir)] if models_dir is not None else list(status.onnx_exports)
    problems: list[str] = []
    for folder in exports:
        try:
            return load_onnx_engine(folder)
        except (SamEngineError, ImportError, OSError) as exc:
            log.warning("ONNX export %s not usable: %s", folder, exc)
            problems.append(f"{folder}: {exc}")
    if torch_available():  # the learned base when it beats the classic engine
        why = ("the SAM export is not usable (" + "; ".join(problems) + ")" if problems else
               "no SAM model installed (copy an ONNX export or a checkpoint into "
               f"{paths.models_install_dir()})")
        return best_default_engine(why)
    eng = load_engine("classic")
    if problems:
        note = "SAM export not usable, using the default engine: " + "; ".join(problems)
    else:
        note = ("no SAM model installed: using the default engine (copy an ONNX export or a "
                f"checkpoint into {paths.models_install_dir()})")
        log.info("%s", note)
    eng.info = replace(eng.info, note=note)
    return eng
