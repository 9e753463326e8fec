"""Choosing and building an engine: SAM, the project's learned models, or the classic engine.

"auto" picks, and says which and why (EngineInfo.note, logged at INFO, which the CLI prints on
stderr): the model promoted for the recipe's part name when a recipe is given, else SAM when a
checkpoint is installed, else the better of the learned base and the classic engine by the
held-out figures in the base's manifest (the classic engine when that comparison is missing or
the base is missing or damaged).

A registry entry may also be a tuned SAM checkpoint (registry.is_sam_delta: a delta to a SAM
base, from `sam-inspect tune --base vit_b`): wherever a learned model is named (engine
"learned", auto's promoted model, --model NAME@V) it loads as SAM, its base checkpoint found
and checked against the sha256 the delta records (load_sam_delta, sam_delta_engine).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sam_engine.engine import Engine
from sam_engine.errors import CheckpointError, SamEngineError

if TYPE_CHECKING:
    import torch

    from sam_engine.learned.weights import ModelManifest
    from sam_engine.weights.checkpoint import CheckpointCheck

log = logging.getLogger(__name__)

ENGINE_NAMES = ("auto", "sam", "classic", "learned")  # the CLI's --engine choices
# load_engine also builds "onnx": the torch-free OnnxEngine on a folder from `export-onnx`
# (it needs models_dir, so it is not offered where only a name is given)
ALL_ENGINES = (*ENGINE_NAMES, "onnx")
DISK_CACHE_BYTES = 4 << 30  # about 1000 embeddings of 4 MiB
# Preferred SAM models, best first, for "auto" on each kind of device.
_AUTO_ORDER = {"cuda": ("vit_h", "vit_l", "vit_b", "vit_t"), "cpu": ("vit_b", "vit_t", "vit_l")}
# Where "auto" reads the base's and the classic engine's held-out box IoU (base manifest metrics)
BASE_METRIC = "synthetic_test"
CLASSIC_METRIC = "classic_synthetic_test"
# Every comparison the base's manifest may record: (learned key, classic key, on what). "auto"
# takes the base only when it beats the classic engine on each one recorded.
COMPARISONS = ((BASE_METRIC, CLASSIC_METRIC, "hard synthetic parts"),
               ("parts_test", "classic_parts_test", "sample-style synthetic parts"))


def model_kind(model: str) -> str:
    """"sam" for a SAM checkpoint id (vit_b, ...), else "learned" (learned-base, a tuned model
    NAME[@VERSION] or a model folder)."""
    from sam_engine.weights.registry import load_manifest

    return "sam" if model in load_manifest() else "learned"


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
    recipe: str | None = None,
    **onnx_options,
) -> Engine:
    """Build the engine named `engine`.

    auto: see the module doc; `recipe` is the recipe's part name (its promoted model wins), a
    `model` naming a learned model loads it, a SAM id is used when installed. sam: SAM or a
    clear error. classic: the default engine, which needs no weights. learned: the model
    `model` names (registry.resolve: learned-base (the default), NAME, NAME@VERSION or a
    folder). SAM embeddings are cached in memory and, with disk_cache, in default_cache_dir()
    ($SAM_INSPECT_CACHE) unless `cache` is given. onnx: OnnxEngine on models_dir (a folder
    written by `sam-inspect export-onnx`), on onnxruntime only, never importing torch;
    onnx_options go to OnnxEngine (quantized, providers, threads, chunk).

    The weights' sha256 is computed (cached per file version) and recorded in
    info.checkpoint_sha256; checkpoint_sha256 is the expected one (SAM: for a custom file,
    else the manifest's for an official file name, else PATH.sha256). A mismatch raises
    CheckpointMismatchError (learned: CheckpointError) unless allow_unverified (then
    info.checkpoint_verified is False and the note says so). For "onnx", allow_unverified
    also loads graphs whose export check failed.
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
    if engine == "learned":
        if checkpoint is not None:
            raise SamEngineError("--checkpoint names a SAM checkpoint file; for the learned "
                                 "engine name the model (or its folder) with --model")
        return _learned(model, device, checkpoint_sha256, allow_unverified, cache=cache,
                        precision=precision, disk_cache=disk_cache)
    if engine == "auto" and checkpoint is None:
        if model is not None and model_kind(model) == "learned":
            return _announce(_learned(model, device, checkpoint_sha256, allow_unverified,
                                      cache=cache, precision=precision, disk_cache=disk_cache),
                             f"auto: learned model {model}, as named")
        if model is None and recipe is not None:
            promoted = _promoted(recipe, device, cache=cache, precision=precision,
                                 disk_cache=disk_cache)
            if promoted is not None:
                return promoted
    from sam_engine.sam.device import choose_device
    from sam_engine.weights.registry import find_checkpoint

    choice = choose_device(device, precision)
    asked_promotion = engine == "auto" and recipe is not None and model is None \
        and checkpoint is None
    unpromoted = f"no model is promoted for recipe {recipe!r}; " if asked_promotion else ""
    why = ""
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
            return best_default_engine(f"{unpromoted}no SAM checkpoint installed", device, cache)
        model, checkpoint = found[0]
        why = f"auto: SAM {model}: {unpromoted}its checkpoint is installed ({checkpoint})"
    elif engine == "auto" and checkpoint is None and find_checkpoint(model) is None:
        return best_default_engine(f"{unpromoted}SAM model {model} is not installed", device,
                                   cache)
    eng = _sam(model or "vit_b", checkpoint, choice, cache, disk_cache, checkpoint_sha256,
               allow_unverified)
    if engine != "auto":
        return eng
    return _announce(eng, why or f"auto: SAM {model or 'vit_b'}, as named")


def _sam(model: str, checkpoint, choice, cache, disk_cache: bool, expected: str | None,
         allow_unverified: bool) -> Engine:
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
    from sam_engine.onnx.learned_runtime import OnnxLearnedEngine, is_learned_export
    from sam_engine.onnx.runtime import OnnxEngine  # numpy + onnxruntime + OpenCV only

    if is_learned_export(models_dir):  # learned-engine export: no image encoder, no cache
        return OnnxLearnedEngine(models_dir, **options)
    return OnnxEngine(models_dir, cache=cache, **options)


def _classic(cache, note: str = "") -> Engine:
    from sam_engine.classic import ClassicEngine

    eng = ClassicEngine(cache=cache)
    return _announce(eng, note) if note else eng


def best_default_engine(why: str, device: str | None = None, cache=None) -> Engine:
    """The better of the learned base and the classic engine when SAM is not used (`why`
    says why not): decided by the held-out box IoU on synthetic parts that the base's manifest
    records for both; the classic engine when that comparison is missing or the base is
    missing or damaged. The note says which and why."""
    from sam_engine.learned import registry
    from sam_engine.learned.weights import MANIFEST_NAME, read_manifest

    folder = registry.resolve(registry.BASE_NAME)
    if not (folder / MANIFEST_NAME).is_file():
        return _classic(cache, f"auto: the classic engine: {why} and the learned base is not "
                               f"installed ({folder})")
    try:
        manifest = read_manifest(folder)
    except CheckpointError as exc:
        return _classic(cache, f"auto: the classic engine: {why} and the learned base is "
                               f"damaged ({exc})")
    pairs = [(what, _box_iou(manifest.metrics, b), _box_iou(manifest.metrics, c))
             for b, c, what in COMPARISONS]
    pairs = [(what, b, c) for what, b, c in pairs if b is not None and c is not None]
    if not pairs:
        return _classic(cache, f"auto: the classic engine: {why} and the learned base's "
                               f"manifest ({folder / MANIFEST_NAME}) records no held-out "
                               "comparison with the classic engine")
    figures = "; ".join(f"held-out box IoU on {what}: {manifest.model_id} {b:.3f}, classic "
                        f"{c:.3f}" for what, b, c in pairs) + ", from the base's manifest"
    if any(b <= c for _, b, c in pairs):
        return _classic(cache, f"auto: the classic engine: {why} and it does at least as well "
                               f"as the learned base ({figures})")
    try:
        eng = _learned(str(folder), device, None, False)
    except (CheckpointError, ValueError, OSError) as exc:
        return _classic(cache, f"auto: the classic engine: {why} and the learned base is "
                               f"damaged ({exc})")
    return _announce(eng, f"auto: {manifest.model_id}: {why} and the learned base beats the "
                          f"classic engine ({figures})")


def _box_iou(metrics: object, key: str) -> float | None:
    """metrics[key]["all"]["box"] when it is a finite number, else None."""
    try:
        value = metrics[key]["all"]["box"]  # type: ignore[index]
    except (KeyError, TypeError, IndexError):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _promoted(recipe: str, device: str | None, **sam_options) -> Engine | None:
    """The model promoted for the recipe's part name (its recorded sha256 checked), or None.
    sam_options (cache, precision, disk_cache) apply when it is a tuned SAM checkpoint."""
    from sam_engine.learned.registry import promoted_for

    p = promoted_for(recipe)
    if p is None:
        return None
    eng = _learned(p.model_id, device, p.sha256, False, **sam_options)
    reason = f": {p.reason}" if p.reason else ""
    return _announce(eng, f"auto: {p.model_id}, promoted for recipe {recipe!r} on "
                          f"{p.when}{reason}")


def _learned(spec: str | None, device: str | None, expected: str | None,
             allow_unverified: bool, *, cache=None, precision: str = "auto",
             disk_cache: bool = True) -> Engine:
    """LearnedEngine on the model `spec` names (default: the learned base); SamEngine when it
    is a tuned SAM checkpoint (sam_delta_engine, with cache, precision and disk_cache)."""
    from sam_engine.learned import registry
    from sam_engine.learned.weights import MANIFEST_NAME

    spec = spec or registry.BASE_NAME
    try:
        folder = registry.resolve(spec)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; the base model is {registry.BASE_NAME}") from None
    if not (folder / MANIFEST_NAME).is_file():
        raise CheckpointError(
            f"learned model {spec} is not installed: {folder} has no {MANIFEST_NAME} (train the "
            "base with `python -m sam_engine.learned.base`, or name a tuned model: "
            "`sam-inspect tune --list`)")
    if registry.is_sam_delta(folder):
        eng = sam_delta_engine(folder, device, cache=cache, precision=precision,
                               disk_cache=disk_cache)
    else:
        from sam_engine.learned.engine import load_learned

        try:
            eng = load_learned(folder, device=device)
        except (ValueError, KeyError, RuntimeError) as exc:  # a manifest the net cannot use
            raise CheckpointError(f"learned model {folder} cannot be loaded: {exc}") from None
    actual = eng.info.checkpoint_sha256
    if expected is not None and expected.lower() != actual:
        what = (f"{folder} has weights sha256 {actual}, not the expected {expected.lower()}")
        if not allow_unverified:
            raise CheckpointError(f"{what}; use the model version that was meant, or pass "
                                  "--allow-unverified-checkpoint to use it anyway")
        eng.info = replace(eng.info, checkpoint_verified=False,
                           note=f"weights unverified: {what}")
    return eng


@dataclass(frozen=True)
class LoadedSamDelta:
    """A tuned SAM checkpoint of the registry: its base with the delta applied (CPU, eval
    mode), the folder's manifest, the delta file and its manifest (sam_tune's delta.json), and
    what was checked about the base checkpoint."""

    model: torch.nn.Module
    manifest: ModelManifest
    delta_path: Path
    delta: dict
    base: CheckpointCheck

    @property
    def encoder_changed(self) -> bool:
        """The delta changes image-encoder weights (LoRA merged into qkv)."""
        return any(n.startswith("image_encoder.") for n in self.delta.get("tensors", {}))


def _delta_base_file(manifest: ModelManifest, want: str) -> Path:
    """The base checkpoint a SAM delta was tuned from: the installed file of its base id
    (find_checkpoint), else the file it was tuned from when still there, whichever has the
    sha256 the delta records. DeltaBaseMismatchError (naming both sha256s) when neither has."""
    from sam_engine.learned.sam_tune import DeltaBaseMismatchError
    from sam_engine.weights.file_hash import file_sha256
    from sam_engine.weights.registry import find_checkpoint

    base_id = manifest.base or ""
    candidates: list[Path] = []
    try:
        found = find_checkpoint(base_id)
    except CheckpointError:  # a base id the manifest of known checkpoints does not list
        found = None
    if found is not None:
        candidates.append(found)
    recorded = manifest.net.get("base_checkpoint")
    if recorded and Path(recorded).expanduser().is_file() \
            and Path(recorded).expanduser() not in candidates:
        candidates.append(Path(recorded).expanduser())
    if not candidates:
        where = f", or put back {recorded}, the file it was tuned from" if recorded else ""
        raise CheckpointError(
            f"tuned model {manifest.model_id} is a delta to the {base_id} checkpoint with "
            f"sha256 {want}, which is not installed: run `sam-inspect models download "
            f"{base_id}` if it was tuned from the official file{where}")
    seen = []
    for path in candidates:
        try:
            got = file_sha256(path)
        except OSError as exc:
            raise CheckpointError(f"cannot read the base checkpoint {path} of tuned model "
                                  f"{manifest.model_id} ({exc})") from None
        if got == want:
            return path
        seen.append((path, got))
    path, got = seen[0]
    raise DeltaBaseMismatchError(
        f"tuned model {manifest.model_id} was tuned from the {base_id} checkpoint with sha256 "
        f"{want}, but {path} has sha256 {got}: install the checkpoint it was tuned from, or "
        f"tune {manifest.name} again from this one",
        expected_sha256=want, actual_sha256=got)


def load_sam_delta(folder: str | Path) -> LoadedSamDelta:
    """The tuned SAM checkpoint in a registry folder (registry.is_sam_delta): finds its base
    checkpoint (_delta_base_file), loads it with load_sam_checked verified against the sha256
    the delta records, and applies the delta (apply_sam_delta: the delta file's sha256 checked
    too). CheckpointError naming the file for anything missing, altered or mismatched."""
    from sam_engine.learned import registry
    from sam_engine.learned.sam_tune import apply_sam_delta, read_delta_manifest
    from sam_engine.learned.weights import MANIFEST_NAME, read_manifest
    from sam_engine.weights.checkpoint import load_sam_checked

    folder = Path(folder)
    manifest = read_manifest(folder)
    if not registry.is_sam_delta(manifest):
        raise CheckpointError(f"{folder} holds a learned crop model, not a tuned SAM checkpoint")
    delta_path = folder / str(manifest.net.get("delta_file") or registry.DELTA_NAME)
    delta = read_delta_manifest(delta_path)
    if delta.get("delta_sha256") != manifest.weights_sha256:
        raise CheckpointError(
            f"{delta_path} has sha256 {delta.get('delta_sha256')} by its delta.json but "
            f"{manifest.weights_sha256} by {folder / MANIFEST_NAME}: the folder was altered; "
            "restore it or tune again")
    want = str(manifest.base_sha256 or "").lower()
    if want != str(delta.get("base_sha256", "")).lower():
        raise CheckpointError(
            f"{folder}: {MANIFEST_NAME} names base sha256 {want} but {delta_path.name}'s manifest "
            f"{delta.get('base_sha256')}: the folder was altered; restore it or tune again")
    base_path = _delta_base_file(manifest, want)
    loaded = load_sam_checked(manifest.base or "", base_path, expected_sha256=want)
    apply_sam_delta(loaded.model, delta_path, loaded.check.sha256)
    return LoadedSamDelta(loaded.model, manifest, delta_path, delta, loaded.check)


def sam_delta_engine(folder: str | Path, device: str | None = None, *, cache=None,
                     precision: str = "auto", disk_cache: bool = True) -> Engine:
    """SamEngine on the tuned SAM checkpoint in `folder` (load_sam_delta). info.model_id is
    NAME@VERSION, checkpoint / checkpoint_sha256 the delta file's; the note names the base and
    its sha256. A decoder-only delta keeps the base's embedding cache keys (embeddings are the
    encoder's alone, so the base's cached ones are right); a delta that changes the encoder
    gets keys of its own (its model id and sha256)."""
    from sam_engine.embedding_cache import EmbeddingCache, default_cache_dir
    from sam_engine.sam.backend import SamEngine
    from sam_engine.sam.device import choose_device

    d = load_sam_delta(folder)
    m = d.manifest
    choice = choose_device(device, precision)
    if cache is None:
        cache = EmbeddingCache(disk_dir=default_cache_dir() if disk_cache else None,
                               max_disk_bytes=DISK_CACHE_BYTES)
    if d.encoder_changed:
        eng = SamEngine(d.model, m.model_id, device=choice, cache=cache,
                        checkpoint=str(d.delta_path), checkpoint_sha256=m.weights_sha256)
    else:
        eng = SamEngine(d.model, m.base or "", device=choice, cache=cache,
                        checkpoint=str(d.base.path), checkpoint_sha256=d.base.sha256)
    what = "encoder + decoder" if d.encoder_changed else "decoder"
    status = (f"tuned SAM {m.model_id} ({what} delta {d.delta_path.name}) on base {m.base} "
              f"{d.base.path} sha256 {d.base.sha256}, verified against the delta's record")
    eng.info = replace(eng.info, model_id=m.model_id, checkpoint=str(d.delta_path),
                       checkpoint_sha256=m.weights_sha256, checkpoint_verified=True,
                       note=f"{eng.info.note}; {status}" if eng.info.note else status)
    return eng


def _announce(eng: Engine, why: str) -> Engine:
    """Put auto's choice and reason first in the engine's note, and log it."""
    note = f"{why}; {eng.info.note}" if eng.info.note else why
    eng.info = replace(eng.info, note=note)
    log.info("%s", note)
    return eng
