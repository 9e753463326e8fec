"""Choosing and building an engine: SAM when a checkpoint is installed, else the default engine."""

from __future__ import annotations

import logging
from pathlib import Path

from sam_engine.engine import Engine
from sam_engine.errors import SamEngineError

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
    checkpoint_sha256: str | None = None,
    allow_unverified: bool = False,
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

    The checkpoint's sha256 is computed (cached per file version) and recorded in
    info.checkpoint_sha256; checkpoint_sha256 is the expected one for a custom file (else the
    manifest's for an official file name, else PATH.sha256). A mismatch raises
    CheckpointMismatchError unless allow_unverified (then info.checkpoint_verified is False and
    the note says so). For "onnx", allow_unverified also loads graphs whose export check failed.
    """
    if engine not in ALL_ENGINES:
        raise SamEngineError(f"unknown engine {engine!r}; choose one of {', '.join(ALL_ENGINES)}")
    if engine == "onnx":
        if allow_unverified:
            onnx_options["allow_unverified"] = True
        return _onnx(models_dir, cache, onnx_options)
    if onnx_options:
        raise TypeError(f"options {sorted(onnx_options)} apply to engine='onnx' only")
    if engine == "classic":
        return _classic(cache)
    from sam_engine.sam.device import choose_device
    from sam_engine.weights.registry import find_checkpoint

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
    return _sam(model or "vit_b", checkpoint, choice, cache, disk_cache, checkpoint_sha256,
                allow_unverified)


def _sam(model: str, checkpoint, choice, cache, disk_cache: bool, expected: str | None,
         allow_unverified: bool) -> Engine:
    from dataclasses import replace

    from sam_engine.embedding_cache import EmbeddingCache, default_cache_dir
    from sam_engine.sam.backend import SamEngine
    from sam_engine.weights.checkpoint import load_sam_checked

    if cache is None:
        cache = EmbeddingCache(disk_dir=default_cache_dir() if disk_cache else None,
                               max_disk_bytes=DISK_CACHE_BYTES)
    loaded = load_sam_checked(model, checkpoint, expected_sha256=expected,
                              allow_unverified=allow_unverified)
    check = loaded.check
    eng = SamEngine(loaded.model, model, device=choice, cache=cache, checkpoint=str(check.path),
                    checkpoint_sha256=check.sha256)
    if check.verified:
        status = f"checkpoint sha256 verified against {check.source}"
    elif check.expected_sha256 is not None:
        status = f"checkpoint unverified: its sha256 differs from {check.source}"
    else:
        status = "checkpoint unverified: no expected sha256 to compare with"
    eng.info = replace(eng.info, checkpoint_verified=check.verified,
                       note=f"{eng.info.note}; {status}" if eng.info.note else status)
    return eng


def _onnx(models_dir, cache, options: dict) -> Engine:
    if models_dir is None:
        raise SamEngineError("engine 'onnx' needs models_dir: the folder written by "
                             "`sam-inspect export-onnx --model NAME --out DIR`")
    from sam_engine.onnx.runtime import OnnxEngine  # numpy + onnxruntime + OpenCV only

    return OnnxEngine(models_dir, cache=cache, **options)


def _classic(cache, note: str = "") -> Engine:
    from sam_engine.classic import ClassicEngine

    eng = ClassicEngine(cache=cache)
    if note:
        from dataclasses import replace

        eng.info = replace(eng.info, note=note)
        log.info("%s", note)
    return eng
