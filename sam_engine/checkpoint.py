"""Checking checkpoint files and building SAM from them, with one clear error per failure.

torch is imported lazily so that `sam-inspect models list/verify` stay fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError
from .registry import ModelSpec, find_checkpoint, load_manifest, model_dirs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256.json"
_CHUNK = 1 << 20
_RACY_NS = 3_000_000_000  # coarser than any file system's mtime granularity (FAT: 2 s)
# (embed dim, encoder blocks) of Meta's three image encoders.
_VIT_SIZES = {(1280, 32): "vit_h", (1024, 24): "vit_l", (768, 12): "vit_b"}
KNOWN_ARCHES = ("vit_h", "vit_l", "vit_b", "vit_t")
_warned: set[tuple[str, str]] = set()


# ------------------------------------------------------------------ messages
def fix_hint(model_id: str | None) -> str:
    """What to do about a missing or bad checkpoint."""
    if model_id:
        return f"run `sam-inspect models download {model_id}` or pass --checkpoint PATH"
    return "pass --checkpoint PATH with a SAM checkpoint (see `sam-inspect models list`)"


def _bytes(n: int) -> str:
    return f"{n:,} bytes"


def warn_unknown_once(spec: ModelSpec, field: str) -> None:
    """Log once per (model, field) that a manifest value is null, so its check is skipped."""
    if (spec.id, field) in _warned:
        return
    _warned.add((spec.id, field))
    log.warning(
        "the manifest has no %s for %s (%s): that check is skipped", field, spec.id, spec.filename
    )


# ------------------------------------------------------------------ hashing
def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def cached_sha256(path: str | Path) -> str | None:
    """The sha256 recorded for `path` when its size and mtime are unchanged since, else None.

    A record made less than _RACY_NS after the file's mtime is not trusted: the file may have
    been rewritten within the file system's timestamp granularity (git's "racy clean" case).
    """
    path = Path(path)
    try:
        st = path.stat()
        rec = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
        return None
    fresh = rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
    racy = not isinstance(rec.get("recorded_ns"), int) or (
        rec["recorded_ns"] - st.st_mtime_ns < _RACY_NS
    )
    return rec["sha256"] if fresh and not racy else None


def remember_sha256(path: str | Path, sha256: str) -> None:
    """Record `path`'s sha256 keyed by its current size and mtime (best effort: a read-only
    folder just means hashing again next time)."""
    path = Path(path)
    try:
        st = path.stat()
        rec = {
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256,
            "recorded_ns": time.time_ns(),
        }
        _sidecar(path).write_text(json.dumps(rec), encoding="utf-8")
    except OSError as exc:
        log.debug("cannot cache sha256 of %s: %s", path, exc)


def _hash_file(path: Path, progress: bool) -> str:
    if not progress:
        with path.open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    from tqdm import tqdm

    h = hashlib.sha256()
    with path.open("rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
        desc=f"sha256 {path.name}", leave=False,
    ) as bar:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def file_sha256(path: str | Path, *, progress: bool = False, use_cache: bool = True) -> str:
    """sha256 of a file, hashed once per (path, size, mtime) thanks to a sidecar record."""
    path = Path(path)
    if use_cache and (sha := cached_sha256(path)) is not None:
        return sha
    sha = _hash_file(path, progress)
    if use_cache:
        remember_sha256(path, sha)
    return sha


# ------------------------------------------------------------------ file checks
def _file_kind(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save's default format since torch 1.6
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"  # torch's legacy format
    if head.startswith(b"version https://git-lfs"):
        return "lfs"
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        return "html"
    return "unknown"


def _zip_intact(path: Path) -> bool:
    """True when the zip's central directory (written last) can be read: not truncated."""
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def verify_checkpoint(path: str | Path, spec: ModelSpec | None, full_hash: bool = False) -> None:
    """Raise CheckpointError unless `path` looks like an intact checkpoint for `spec`.

    Checks existence, emptiness, file format, truncation (size below the manifest's, or a zip
    without its central directory) and, when full_hash, the sha256 (cached per size/mtime).
    spec None: only the format checks (e.g. a fine-tuned file passed with --checkpoint).
    """
    path = Path(path)
    mid = spec.id if spec is not None else None
    fix = fix_hint(mid)
    what = f"the {mid} checkpoint {path}" if mid else f"checkpoint {path}"
    if not path.exists():
        raise CheckpointError(f"{what} does not exist; {fix}")
    if not path.is_file():
        raise CheckpointError(f"{what} is not a file; {fix}")
    size = path.stat().st_size
    expected = spec.size_bytes if spec is not None else None
    exp_txt = f" (expected {_bytes(expected)})" if expected else ""
    if size == 0:
        raise CheckpointError(f"{what} is empty{exp_txt}; delete it and {fix}")
    kind = _file_kind(path)
    if kind == "lfs":
        raise CheckpointError(
            f"{what} is a Git LFS pointer, not the weights{exp_txt}; delete it and {fix}"
        )
    if kind == "html":
        raise CheckpointError(
            f"{what} is a web page (a failed or blocked download), not weights; delete it and {fix}"
        )
    if kind == "unknown":
        raise CheckpointError(
            f"{what} is not a PyTorch checkpoint (neither a torch zip nor a pickle file); "
            f"delete it and {fix}"
        )
    intact = _zip_intact(path) if kind == "zip" else None
    if expected is not None and size < expected and not intact:
        raise CheckpointError(
            f"{what} is truncated: {size:,} of {_bytes(expected)}; delete it and {fix} "
            "(an interrupted download resumes)"
        )
    if intact is False:
        raise CheckpointError(f"{what} is a damaged or truncated zip file; delete it and {fix}")
    if spec is not None and expected is None:
        warn_unknown_once(spec, "size")
    if expected is not None and size != expected and not full_hash:
        log.warning(
            "%s is %s but the official %s file is %s: loading it as a different checkpoint",
            path, _bytes(size), mid, _bytes(expected),
        )
    cached = cached_sha256(path)
    if spec is None or not (full_hash or cached):
        return
    if spec.sha256 is None:
        warn_unknown_once(spec, "sha256")
        return
    got = cached or file_sha256(path, progress=size > 256 * _CHUNK)
    if got != spec.sha256:
        raise CheckpointError(
            f"{what} has sha256 {got}, expected {spec.sha256} (size {_bytes(size)}"
            f"{', expected ' + _bytes(expected) if expected else ''}): the file is corrupt or "
            f"not the official one; delete it and {fix}"
        )


# ------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class ArchGuess:
    """What a state dict looks like: a known arch id (or None) and words for messages."""

    arch: str | None
    detail: str


def guess_arch(state: Mapping[str, object]) -> ArchGuess:
    """Recognise SAM's image encoder size from weight shapes and the number of blocks."""
    keys = list(state)
    if any(k.startswith("vision_encoder.") for k in keys):
        return ArchGuess(None, "a Hugging Face transformers SAM checkpoint (use Meta's .pth)")
    if any(k.startswith(("image_encoder.trunk.", "sam_mask_decoder.")) for k in keys):
        return ArchGuess(None, "a SAM 2 checkpoint (not supported)")
    if any(k.startswith(("image_encoder.layers.", "image_encoder.patch_embed.seq.")) for k in keys):
        return ArchGuess("vit_t", "a vit_t (MobileSAM TinyViT) checkpoint")
    blocks = {k.split(".")[2] for k in keys if k.startswith("image_encoder.blocks.")}
    dim = None
    w = state.get("image_encoder.patch_embed.proj.weight")
    pos = state.get("image_encoder.pos_embed")
    if getattr(w, "ndim", 0) == 4:
        dim = int(w.shape[0])
    elif getattr(pos, "ndim", 0) == 4:
        dim = int(pos.shape[-1])
    if dim is not None:
        arch = _VIT_SIZES.get((dim, len(blocks)))
        if arch is not None:
            return ArchGuess(arch, f"a {arch} checkpoint (embed dim {dim}, {len(blocks)} blocks)")
        return ArchGuess(
            None, f"a ViT encoder of no known SAM size (embed dim {dim}, {len(blocks)} blocks)"
        )
    if any(k.startswith("mask_decoder.") for k in keys):
        return ArchGuess(None, "SAM's decoder without an image encoder")
    first = ", ".join(keys[:3]) or "no weights at all"
    return ArchGuess(None, f"not a SAM checkpoint (first keys: {first})")


def build_arch(arch: str) -> torch.nn.Module:
    """A randomly initialised SAM of registry key `arch` (vit_t needs the `mobile` extra)."""
    if arch == "vit_t":
        try:
            with warnings.catch_warnings():
                # mobile_sam re-registers timm's TinyViT names and imports a deprecated path.
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", FutureWarning)
                from mobile_sam import sam_model_registry as mobile_registry
        except ImportError as exc:
            raise CheckpointError(
                f"model vit_t (MobileSAM) needs an optional package that is missing ({exc}); "
                "run `pip install sam-inspect[mobile]` or choose vit_b"
            ) from None
        return mobile_registry["vit_t"]()
    from segment_anything import sam_model_registry

    if arch not in sam_model_registry or arch == "default":
        raise CheckpointError(
            f"unknown SAM architecture {arch!r}; choose one of {', '.join(KNOWN_ARCHES)}"
        )
    return sam_model_registry[arch]()


# ------------------------------------------------------------------ loading
def read_state_dict(path: Path, model_id: str | None = None) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True) with every failure turned into one CheckpointError."""
    import torch

    fix = fix_hint(model_id)
    try:
        obj = torch.load(
            path, map_location="cpu", weights_only=True, mmap=_file_kind(path) == "zip"
        )
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {path} holds Python objects besides tensors, which are not loaded "
                "for safety; save it as torch.save(model.state_dict(), PATH) or "
                f"{fix}"
            ) from None
        raise CheckpointError(_unreadable(path, exc, fix)) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zip and OS errors alike
        raise CheckpointError(_unreadable(path, exc, fix)) from None
    for key in ("model", "state_dict"):  # common training wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} does not hold a model state dict (tensors by name); {fix}"
        )
    return dict(obj)


def _unreadable(path: Path, exc: BaseException, fix: str) -> str:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    return (
        f"checkpoint {path} cannot be read by torch ({reason}): it is corrupt or truncated; "
        f"delete it and {fix}"
    )


def _mismatch(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected")
    if shapes:
        parts.append(f"{len(shapes)} of another shape such as {shapes[0]}")
    return ", ".join(parts)


def _wrong_arch(path: Path, arch: str, guess: ArchGuess, details: str = "") -> CheckpointError:
    why = f" (weights: {details})" if details else ""
    if guess.arch in KNOWN_ARCHES and guess.arch != arch:
        todo = f"use it with --model {guess.arch}, or {fix_hint(arch)}"
    else:
        todo = fix_hint(arch if arch in KNOWN_ARCHES else None)
    return CheckpointError(
        f"checkpoint {path} does not fit the {arch} architecture{why}: it looks like "
        f"{guess.detail}; {todo}"
    )


def load_sam(
    model_id: str,
    checkpoint: Path | str | None = None,
    *,
    verify_hash: bool = False,
    spec: ModelSpec | None = None,
    builder: Callable[[], torch.nn.Module] | None = None,
) -> torch.nn.Module:
    """Build SAM `model_id` and load its weights on the CPU, in eval mode.

    checkpoint: explicit file, else the installed one (registry.find_checkpoint). The manifest's
    size/sha256 checks apply when the file has the official name. verify_hash: full sha256 check
    (cached per file size/mtime). spec / builder override the manifest entry and the architecture
    (tests use them for a tiny SAM); with a builder, model_id only names the model in messages.
    """
    if spec is None:
        spec = load_manifest().get(model_id)
    arch = spec.arch if spec is not None else model_id
    if spec is None and builder is None and arch not in KNOWN_ARCHES:
        known = ", ".join(load_manifest())
        raise CheckpointError(f"unknown model {model_id!r}; choose one of {known}")
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
    else:
        found = find_checkpoint(model_id) if spec is not None and builder is None else None
        if found is None:
            name = f" ({spec.filename})" if spec is not None else ""
            dirs = ", ".join(str(d) for d in model_dirs())
            raise CheckpointError(
                f"no {model_id} checkpoint{name} is installed in {dirs}; {fix_hint(model_id)}"
            )
        path = found
    official = spec if spec is not None and path.name == spec.filename else None
    verify_checkpoint(path, official, full_hash=verify_hash)
    state = read_state_dict(path, model_id if spec is not None else None)
    guess = guess_arch(state)
    if builder is None and guess.arch in KNOWN_ARCHES and guess.arch != arch:
        raise _wrong_arch(path, arch, guess)  # before building a large model for nothing
    model = builder() if builder is not None else build_arch(arch)
    details = _mismatch(model, state)
    if details:
        raise _wrong_arch(path, arch, guess, details)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. dtype trouble the key/shape check cannot see
        raise _wrong_arch(path, arch, guess, str(exc).splitlines()[0][:120]) from None
    return model.eval()
