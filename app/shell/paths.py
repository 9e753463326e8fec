"""Where the desktop app keeps per-user data and logs, and where it looks for models.

Models are never packed inside a frozen bundle: they are found in `models/` beside the
executable or in the user data folder (sam_engine.weights.registry.model_dirs() holds the order;
this
module adds the ONNX exports, which live in sub-folders of the same places).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sam_engine.weights import registry

ENV_LOGS = "SAM_INSPECT_LOGS"
ONNX_MANIFEST = "manifest.json"  # sam_engine.onnx.manifest.MANIFEST_NAME, without importing it


def is_frozen() -> bool:
    """True inside a PyInstaller bundle."""
    return bool(getattr(sys, "frozen", False))


def user_models_dir() -> Path:
    """Per-user models folder (`sam-inspect models download` writes here by default)."""
    return registry.user_data_dir()


def user_data_dir() -> Path:
    """Per-user data folder: ~/.local/share/sam-inspect ($XDG_DATA_HOME) on Linux,
    %LOCALAPPDATA%\\sam-inspect on Windows, ~/Library/Application Support/sam-inspect on macOS."""
    return user_models_dir().parent


def log_dir() -> Path:
    """A user-writable folder for log files, created if needed.

    $SAM_INSPECT_LOGS, else ~/.local/state/sam-inspect/logs ($XDG_STATE_HOME) on Linux,
    %LOCALAPPDATA%\\sam-inspect\\logs on Windows, ~/Library/Logs/sam-inspect on macOS; when that
    cannot be created (read-only home, locked-down PC), a folder in the temp directory.
    """
    env = os.environ.get(ENV_LOGS, "").strip()
    if env:
        wanted = Path(env).expanduser()
    elif sys.platform.startswith("win"):
        wanted = user_data_dir() / "logs"
    elif sys.platform == "darwin":
        wanted = Path.home() / "Library" / "Logs" / registry.APP_NAME
    else:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        wanted = Path(state) / registry.APP_NAME / "logs"
    for candidate in (wanted, Path(tempfile.gettempdir()) / f"{registry.APP_NAME}-logs"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            return candidate
        except OSError:
            continue
    raise OSError(f"no writable log folder: {wanted} nor the temp folder; set ${ENV_LOGS}")


def models_install_dir() -> Path:
    """Where to tell people to put models: `models/` beside a frozen executable, else the user
    models folder."""
    return registry.bundle_models_dir() or user_models_dir()


def models_search_dirs() -> list[Path]:
    """Folders searched for SAM checkpoints and ONNX exports, first match wins:
    $SAM_INSPECT_MODELS, `models/` beside a frozen executable (a checkout's models/checkpoints
    otherwise), the user models folder."""
    return registry.model_dirs()


def find_onnx_exports() -> list[Path]:
    """Folders holding an ONNX export (`sam-inspect export-onnx --encoder`): each search folder
    itself, then its direct sub-folders (e.g. models/vit_b/manifest.json), in search order."""
    found: list[Path] = []
    for d in models_search_dirs():
        if not d.is_dir():
            continue
        candidates = [d, *sorted(p for p in d.iterdir() if p.is_dir())]
        found += [c for c in candidates if (c / ONNX_MANIFEST).is_file() and c not in found]
    return found


def find_checkpoints() -> list[Path]:
    """Installed SAM checkpoints of the known models, manifest order."""
    return [p for _, p in registry.installed() if p is not None]


@dataclass(frozen=True)
class ModelsStatus:
    """What a desktop session found: checkpoints, ONNX exports and where it looked."""

    checkpoints: tuple[Path, ...]
    onnx_exports: tuple[Path, ...]
    searched: tuple[Path, ...]

    @property
    def any(self) -> bool:
        return bool(self.checkpoints or self.onnx_exports)


def models_status() -> ModelsStatus:
    return ModelsStatus(tuple(find_checkpoints()), tuple(find_onnx_exports()),
                        tuple(models_search_dirs()))


def no_models_message(status: ModelsStatus | None = None) -> str:
    """The first-run message: no SAM model found, what works anyway, how to install one."""
    status = status or models_status()
    where = "\n".join(f"  - {d}" for d in status.searched)
    target = models_install_dir()
    fetch = "" if is_frozen() else " or fetched with `sam-inspect models download vit_b`"
    return (
        "No Segment Anything model was found; the default (classical) engine is used, which\n"
        "needs no model but is less accurate on thin cracks.\n\n"
        "To use SAM, install one of these, then restart sam-inspect:\n"
        "  * an ONNX export: copy the folder written by `sam-inspect export-onnx --model vit_b\n"
        f"    --out vit_b --encoder` (on a PC with the full install) to {target / 'vit_b'}\n"
        "    (the folder holds manifest.json, encoder.onnx, image_terms.onnx, decoder_*.onnx);\n"
        "  * a checkpoint (full bundle or Python install), e.g. sam_vit_b_01ec64.pth, copied to\n"
        f"    {target}{fetch}.\n\n"
        f"Folders searched:\n{where}"
    )
