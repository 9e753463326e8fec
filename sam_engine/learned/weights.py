"""Learned models on disk: model.safetensors + manifest.json in one folder per model version.

The manifest says what the weights are (architecture and crop geometry), where they came from
(base model and its sha256, training-data digest, split, settings) and how well they did on
held-out data; `weights_sha256` is computed from the file when it is written and checked
whenever it is loaded, so a truncated or altered file is refused with a message naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sam_engine.errors import CheckpointError
from sam_engine.weights.registry import REPO_ROOT

WEIGHTS_NAME = "model.safetensors"
MANIFEST_NAME = "manifest.json"
BASE_DIR = REPO_ROOT / "models" / "learned-base"  # the base trained on synthetic data only


@dataclass
class ModelManifest:
    """Everything recorded about one learned model version."""

    name: str
    version: str
    net: dict  # NetConfig.to_dict()
    weights_sha256: str = ""
    base: str | None = None  # name@version of the model it was tuned from
    base_sha256: str | None = None
    data: dict = field(default_factory=dict)  # source, digest, n images/instances, classes
    split: dict = field(default_factory=dict)  # held-out share, salt, image digests per side
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # held-out results, before / after
    created: str = ""

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> ModelManifest:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside path, fsync, then rename (readable per the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(folder: str | Path, state_dict: dict, manifest: ModelManifest) -> ModelManifest:
    """Write the weights and the manifest (with the weights' computed sha256) into folder."""
    from safetensors.torch import save

    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    data = save(tensors)
    write_atomic(folder / WEIGHTS_NAME, data)
    manifest.weights_sha256 = hashlib.sha256(data).hexdigest()
    write_atomic(folder / MANIFEST_NAME,
                 (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return manifest


def read_manifest(folder: str | Path) -> ModelManifest:
    path = Path(folder) / MANIFEST_NAME
    try:
        return ModelManifest.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise CheckpointError(f"{folder} is not a learned model: it has no {MANIFEST_NAME}") \
            from None
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); restore it or tune again") from None


def load_state(folder: str | Path) -> tuple[dict, ModelManifest]:
    """(state_dict, manifest) after checking the weights' sha256 against the manifest."""
    from safetensors.torch import load

    data, manifest = verified_weights(folder)
    return load(data), manifest


def verified_weights(folder: str | Path, remedy: str = "tune again"
                     ) -> tuple[bytes, ModelManifest]:
    """(the weights file's bytes, manifest) after checking the bytes' sha256 against the
    manifest; CheckpointError naming the file otherwise (remedy: what to do besides
    restoring it)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    path = folder / WEIGHTS_NAME
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != manifest.weights_sha256:
        raise CheckpointError(
            f"{path} has sha256 {got} but its manifest records {manifest.weights_sha256}: the "
            f"file is truncated or altered; restore it or {remedy}")
    return data, manifest
