"""Checking checkpoint files and building SAM from them, with one clear error per failure.

torch is imported lazily so that `sam-inspect models list/verify` stay fast.
"""

from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sam_engine.errors import CheckpointError
from sam_engine.weights.file_hash import cached_sha256, file_sha256
from sam_engine.weights.file_hash import remember_sha256 as remember_sha256
from sam_engine.weights.registry import ModelSpec, find_checkpoint, load_manifest, model_dirs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

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
# file_sha256 / cached_sha256 / remember_sha256 live in file_hash (re-exported here).
SHA256_SIDECAR = ".sha256"  # PATH.sha256: a custom checkpoint's expected hash (sha256sum format)


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's sha256 or size differs from the manifest's or the user-given value."""

    def __init__(self, message: str, *, path: Path, expected_sha256: str | None,
                 actual_sha256: str | None, expected_size: int | None, actual_size: int) -> None:
        super().__init__(message)
        self.path = path
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.expected_size = expected_size
        self.actual_size = actual_size


@dataclass(frozen=True)
class CheckpointCheck:
    """What was checked about one checkpoint file. sha256 is always computed from its bytes;
    verified: it equals expected_sha256 (from `source`), so the file is the one expected."""

    path: Path
    size_bytes: int
    sha256: str
    expected_sha256: str | None
    source: str  # where expected_sha256 came from ("" when there is none)
    verified: bool


def _valid_sha256(value: str, where: str) -> str:
    v = value.strip().lower()
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise CheckpointError(f"{where} must be a sha256 of 64 hex digits, got {value[:80]!r}; "
                              "fix it (e.g. the output of `sha256sum FILE`)")
    return v


def read_sha256_sidecar(path: str | Path) -> tuple[str, Path] | None:
    """(expected sha256, sidecar path) from PATH.sha256 (`sha256sum` output or the bare hash)
    when that file exists, else None; CheckpointError when it holds no sha256."""
    side = Path(path).with_name(Path(path).name + SHA256_SIDECAR)
    try:
        text = side.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"cannot read {side} ({exc}); fix or delete it") from None
    first = (text.split() or [""])[0]
    return _valid_sha256(first, f"the first word of {side}"), side


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


def _what(path: Path, spec: ModelSpec | None) -> str:
    return f"the {spec.id} checkpoint {path}" if spec is not None else f"checkpoint {path}"


def check_format(path: str | Path, spec: ModelSpec | None) -> None:
    """Raise CheckpointError unless `path` is an intact-looking PyTorch checkpoint: exists, not
    empty, a torch zip or pickle (not an LFS pointer or a web page), not truncated (size below
    the manifest's, or a zip without its central directory). No hashing."""
    path = Path(path)
    mid = spec.id if spec is not None else None
    fix = fix_hint(mid)
    what = _what(path, spec)
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


def check_checkpoint(
    path: str | Path,
    spec: ModelSpec | None,
    *,
    expected_sha256: str | None = None,
    allow_unverified: bool = False,
) -> CheckpointCheck:
    """Format checks (check_format), then the file's sha256 (computed, cached per path, size
    and mtime) against the expected one: `expected_sha256` if given, else the manifest's when
    `spec` is given (the file has an official name), else PATH.sha256 when that exists.

    A different sha256 (or, for spec, size) raises CheckpointMismatchError unless
    allow_unverified, which logs a warning and returns verified=False. No expected hash at all:
    verified=False (the computed sha256 is still recorded).
    """
    path = Path(path)
    check_format(path, spec)
    size = path.stat().st_size
    fix = fix_hint(spec.id if spec is not None else None)
    if expected_sha256 is not None:
        expected = _valid_sha256(expected_sha256, "the expected checkpoint sha256")
        source, override = "the given sha256 (--checkpoint-sha256)", "--checkpoint-sha256"
    elif spec is not None:
        expected, source, override = spec.sha256, f"the manifest's {spec.id} entry", ""
        if expected is None:
            warn_unknown_once(spec, "sha256")
    else:
        side = read_sha256_sidecar(path)
        expected, source = (side[0], str(side[1])) if side else (None, "")
        override = str(side[1]) if side else ""
    exp_size = spec.size_bytes if spec is not None and expected_sha256 is None else None
    if spec is not None and exp_size is None:
        warn_unknown_once(spec, "size")
    try:
        got = file_sha256(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({exc.strerror or exc}); {fix}") from None
    size_bad = exp_size is not None and size != exp_size
    sha_bad = expected is not None and got != expected
    if size_bad or sha_bad:
        sizes = f"size {_bytes(size)}" + (f", expected {_bytes(exp_size)}" if exp_size else "")
        why = "not the official file or corrupt" if spec is not None and not override else \
            "corrupt or changed"
        todo = (f"delete it and {fix}" if spec is not None and not override
                else f"restore the file or correct {override}")
        msg = (f"{_what(path, spec)} has sha256 {got}, expected {expected or 'unknown'} from "
               f"{source} ({sizes}): it is {why}; {todo}, or pass "
               "--allow-unverified-checkpoint (allow_unverified=True) to use it anyway, "
               "recorded as unverified")
        if not allow_unverified:
            raise CheckpointMismatchError(msg, path=path, expected_sha256=expected,
                                          actual_sha256=got, expected_size=exp_size,
                                          actual_size=size)
        log.warning("using an unverified checkpoint: %s", msg.split(": it is")[0])
        return CheckpointCheck(path, size, got, expected, source, False)
    return CheckpointCheck(path, size, got, expected, source, expected is not None)


def verify_checkpoint(path: str | Path, spec: ModelSpec | None, full_hash: bool = False) -> None:
    """Raise CheckpointError unless `path` looks like an intact checkpoint for `spec`.

    Format checks (check_format); a size other than the manifest's is a mismatch; a sha256
    already computed for this file version (or, with full_hash, computed now) must equal the
    manifest's. spec None: the format checks and, with full_hash, PATH.sha256 if present.
    """
    path = Path(path)
    check_format(path, spec)
    size = path.stat().st_size
    if full_hash or cached_sha256(path) is not None or (
        spec is not None and spec.size_bytes is not None and size != spec.size_bytes
    ):
        check_checkpoint(path, spec)


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


@dataclass(frozen=True)
class LoadedSam:
    """A SAM model in eval mode on the CPU and what was checked about its checkpoint."""

    model: torch.nn.Module
    check: CheckpointCheck


def load_sam_checked(
    model_id: str,
    checkpoint: Path | str | None = None,
    *,
    expected_sha256: str | None = None,
    allow_unverified: bool = False,
    spec: ModelSpec | None = None,
    builder: Callable[[], torch.nn.Module] | None = None,
) -> LoadedSam:
    """Build SAM `model_id`, load its weights on the CPU in eval mode, and say what was checked.

    checkpoint: explicit file, else the installed one (registry.find_checkpoint). The file's
    sha256 is always computed (once per path, size and mtime, see file_hash) and compared with
    check_checkpoint's expected value: the manifest's when the file has the official name,
    else expected_sha256 or PATH.sha256. A mismatch raises CheckpointMismatchError unless
    allow_unverified. spec / builder override the manifest entry and the architecture (tests
    use them for a tiny SAM); with a builder, model_id only names the model in messages.
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
    check = check_checkpoint(path, official, expected_sha256=expected_sha256,
                             allow_unverified=allow_unverified)
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
    return LoadedSam(model.eval(), check)


def load_sam(
    model_id: str,
    checkpoint: Path | str | None = None,
    *,
    verify_hash: bool = True,
    expected_sha256: str | None = None,
    allow_unverified: bool = False,
    spec: ModelSpec | None = None,
    builder: Callable[[], torch.nn.Module] | None = None,
) -> torch.nn.Module:
    """load_sam_checked's model only. verify_hash is kept for callers: the sha256 is always
    checked (hashing is cached per file version)."""
    del verify_hash
    return load_sam_checked(model_id, checkpoint, expected_sha256=expected_sha256,
                            allow_unverified=allow_unverified, spec=spec,
                            builder=builder).model
