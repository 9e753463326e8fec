"""Known SAM checkpoints (sam_engine/weights/models_manifest.json, package data) and where
installed ones
are looked for."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from sam_engine.errors import CheckpointError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
# Package data, so that wheels and frozen desktop bundles carry it too.
DEFAULT_MANIFEST = Path(__file__).resolve().with_name("models_manifest.json")
REPO_CHECKPOINTS = REPO_ROOT / "models" / "checkpoints"
ENV_MODELS = "SAM_INSPECT_MODELS"
APP_NAME = "sam-inspect"


@dataclass(frozen=True)
class ModelSpec:
    """One known checkpoint. size_bytes / sha256 None means unknown: that check is skipped."""

    id: str  # what users type: "vit_b"
    arch: str  # segment_anything (or mobile_sam) registry key
    filename: str
    size_bytes: int | None
    sha256: str | None
    url: str
    licence: str
    source: str  # where size/sha256/url were taken from
    optional: bool = False  # needs an optional extra to build (see `extra`)
    extra: str | None = None  # pip extra that provides the architecture, e.g. "mobile"
    description: str = ""


_REQUIRED = ("id", "arch", "filename", "url", "licence")


def load_manifest(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """Read the manifest (default: the packaged models_manifest.json) into {model id: ModelSpec}."""
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"model manifest {path} does not exist; reinstall sam-inspect or pass the path of "
            "a manifest.json"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"model manifest {path} cannot be read ({exc}); fix or restore it"
        raise CheckpointError(msg) from None
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise CheckpointError(f"model manifest {path} has no 'models' list; fix or restore it")
    specs: dict[str, ModelSpec] = {}
    for i, entry in enumerate(entries):
        spec = _spec_from_entry(entry, f"{path} entry {i}")
        if spec.id in specs:
            raise CheckpointError(f"model manifest {path} lists {spec.id!r} twice; keep one")
        specs[spec.id] = spec
    return specs


def _spec_from_entry(entry: object, where: str) -> ModelSpec:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where} is not an object; fix the manifest")
    missing = [k for k in _REQUIRED if not isinstance(entry.get(k), str) or not entry.get(k)]
    if missing:
        raise CheckpointError(f"{where} lacks {', '.join(missing)}; fix the manifest")
    size = entry.get("size_bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise CheckpointError(f"{where}: size_bytes must be a positive integer or null: {size!r}")
    sha = entry.get("sha256")
    if sha is not None and (
        not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)
    ):
        raise CheckpointError(f"{where}: sha256 must be 64 lowercase hex digits or null: {sha!r}")
    return ModelSpec(
        id=entry["id"],
        arch=entry["arch"],
        filename=entry["filename"],
        size_bytes=size,
        sha256=sha,
        url=entry["url"],
        licence=entry["licence"],
        source=str(entry.get("source", "")),
        optional=bool(entry.get("optional", False)),
        extra=entry.get("extra"),
        description=str(entry.get("description", "")),
    )


def get_spec(model_id: str, manifest: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """The spec of `model_id`, or a CheckpointError listing the known ids."""
    specs = manifest if manifest is not None else load_manifest()
    try:
        return specs[model_id]
    except KeyError:
        raise CheckpointError(
            f"unknown model {model_id!r}; choose one of {', '.join(specs)} "
            "(`sam-inspect models list`)"
        ) from None


def user_data_dir() -> Path:
    """Per-user folder for downloaded weights, following each platform's convention.

    Hand-written rather than platformdirs: three paths do not justify a new dependency.
    """
    home = Path.home()
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME / "models"


def _env_dirs() -> list[Path]:
    raw = os.environ.get(ENV_MODELS, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def bundle_models_dir() -> Path | None:
    """`models/` beside the executable of a frozen (PyInstaller) bundle, else None. Weights are
    never packed inside the bundle: IT copies them next to it."""
    if not getattr(sys, "frozen", False):
        return None
    return Path(sys.executable).resolve().parent / "models"


def model_dirs() -> list[Path]:
    """Folders searched for checkpoints, first match wins.

    $SAM_INSPECT_MODELS (os.pathsep-separated), <repo>/models/checkpoints (or, in a frozen
    bundle, models/ beside the executable), the user data dir.
    """
    beside = bundle_models_dir()
    dirs: list[Path] = []
    for d in [*_env_dirs(), beside if beside is not None else REPO_CHECKPOINTS, user_data_dir()]:
        if d not in dirs:
            dirs.append(d)
    return dirs


def default_download_dir() -> Path:
    """Where `models download` puts files: the first $SAM_INSPECT_MODELS folder, else the user
    data dir (a checkout's models/checkpoints is searched but not written to by default)."""
    env = _env_dirs()
    return env[0] if env else user_data_dir()


def find_checkpoint(model_id: str) -> Path | None:
    """The first file named like `model_id`'s checkpoint in model_dirs(), or None."""
    spec = get_spec(model_id)
    for d in model_dirs():
        candidate = d / spec.filename
        if candidate.is_file():
            return candidate
    return None


def installed() -> list[tuple[ModelSpec, Path | None]]:
    """Every known model with its installed checkpoint (None when not found), manifest order."""
    specs = load_manifest()
    dirs = model_dirs()
    out: list[tuple[ModelSpec, Path | None]] = []
    for spec in specs.values():
        found = next((d / spec.filename for d in dirs if (d / spec.filename).is_file()), None)
        out.append((spec, found))
    return out


def spec_for_file(path: str | Path) -> ModelSpec | None:
    """The known model whose official filename is `path`'s name, if any."""
    name = Path(path).name
    return next((s for s in load_manifest().values() if s.filename == name), None)
