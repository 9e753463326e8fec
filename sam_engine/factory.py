"""Choosing and building an engine: SAM when a checkpoint is installed, else the default engine."""

from __future__ import annotations

import logging
from pathlib import Path

from .engine import Engine
from .errors import SamEngineError

log = logging.getLogger(__name__)

ENGINE_NAMES = ("auto", "sam", "classic")  # the CLI's --engine choices
# load_engine also builds "onnx": the torch-free OnnxEngine on a folder from `export-onnx`
# (it needs models_dir, so it is not offered where only a name is given)
ALL_ENGINES = (*ENGINE_NAMES, "onnx")
DISK_CACHE_BYTES = 4 << 30  # about 1000 embeddings of 4 MiB
# Preferred SAM models, best first, for "auto" on each kind of device.
_AUTO_ORDER = {"cuda": ("vit_h", "vit_l", "vit_b", "vit_t"), "cpu": ("vit_b", "vit_t", "vit_l")}


def load_engine(
    engine: str = "auto",
    model: str | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    cache=None,
    precision: str = "auto",
    disk_cache: bool = True,
    models_dir: str | Path | None = None,
    **onnx_options,
) -> Engine:
    """Build the engine named `engine`.

    auto: SAM with `model` (or the best installed checkpoint for the device) when one is found,
    otherwise the classical default engine, with a note saying so. sam: SAM or a clear error.
    classic: the default engine, which needs no weights. SAM embeddings are cached in memory
    and, with disk_cache, in default_cache_dir() ($SAM_INSPECT_CACHE) unless `cache` is given.
    onnx: OnnxEngine on models_dir (a folder written by `sam-inspect export-onnx`), on
    onnxruntime only, never importing torch; onnx_options go to OnnxEngine (quantized,
    providers, threads, chunk).
    """
    if engine not in ALL_ENGINES:
        raise SamEngineError(f"unknown engine {engine!r}; choose one of {', '.join(ALL_ENGINES)}")
    if engine == "onnx":
        return _onnx(models_dir, cache, onnx_options)
    if onnx_options:
        raise TypeError(f"options {sorted(onnx_options)} apply to engine='onnx' only")
    if engine == "classic":
        return _classic(cache)
    from .device import choose_device
    from .registry import find_checkpoint

    choice = choose_device(device, precision)
    if checkpoint is None and model is None:
        order = _AUTO_ORDER["cuda" if choice.device.startswith("cuda") else "cpu"]
        found = [(m, find_checkpoint(m)) for m in order]
        found = [(m, p) for m, p in found if p is not None]
        if not found:
            if engine == "sam":
                raise SamEngineError(
                    "no SAM checkpoint is installed; run `sam-inspect models download vit_b` "
                    "or pass --checkpoint PATH"
                )
            return _classic(cache, note="no SAM checkpoint installed: using the default engine")
        model, checkpoint = found[0]
    elif engine == "auto" and checkpoint is None and find_checkpoint(model) is None:
        return _classic(
            cache, note=f"SAM model {model} is not installed: using the default engine"
        )
    return _sam(model or "vit_b", checkpoint, choice, cache, disk_cache)


def _sam(model: str, checkpoint, choice, cache, disk_cache: bool) -> Engine:
    from .checkpoint import load_sam
    from .embedding_cache import EmbeddingCache, default_cache_dir
    from .sam_backend import SamEngine

    if cache is None:
        cache = EmbeddingCache(disk_dir=default_cache_dir() if disk_cache else None,
                               max_disk_bytes=DISK_CACHE_BYTES)
    sam, path, sha = _load(load_sam, model, checkpoint)
    return SamEngine(sam, model, device=choice, cache=cache, checkpoint=str(path),
                     checkpoint_sha256=sha)


def _load(load_sam, model, checkpoint):
    from .checkpoint import cached_sha256
    from .registry import find_checkpoint, load_manifest

    path = Path(checkpoint) if checkpoint is not None else find_checkpoint(model)
    sam = load_sam(model, path)
    spec = load_manifest().get(model)
    # Only a hash we computed, or the manifest's for the official file name (size-checked).
    sha = cached_sha256(path)
    if sha is None and spec is not None and path is not None and path.name == spec.filename:
        sha = spec.sha256
    return sam, path, sha


def _onnx(models_dir, cache, options: dict) -> Engine:
    if models_dir is None:
        raise SamEngineError("engine 'onnx' needs models_dir: the folder written by "
                             "`sam-inspect export-onnx --model NAME --out DIR`")
    from .onnx_runtime import OnnxEngine  # numpy + onnxruntime + OpenCV only

    return OnnxEngine(models_dir, cache=cache, **options)


def _classic(cache, note: str = "") -> Engine:
    from .classic import ClassicEngine

    eng = ClassicEngine(cache=cache)
    if note:
        from dataclasses import replace

        eng.info = replace(eng.info, note=note)
        log.info("%s", note)
    return eng
