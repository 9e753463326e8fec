"""The registry of tuned models, and which one each recipe (part type) uses.

Layout under the root ($SAM_INSPECT_TUNED, else the per-user models folder's `tuned/`):
`<name>/<version>/` holds one model version: a learned crop model (weights.py: model.safetensors
+ manifest.json) or a tuned SAM checkpoint (delta.safetensors + delta.json, sam_tune's delta to
a base checkpoint, + manifest.json with net.kind "sam-delta", see is_sam_delta);
`promoted.json` maps a recipe's part name to the promoted model (name@version and its weights'
sha256), keeping every earlier promotion so `demote` goes back one step. It has one section per
kind of model a recipe uses: "recipes" (the prompt model), "finders" (zero-click finder),
"examples" (taught by example) and "golden" (golden-sample anomaly model). Nothing is deleted:
a tuned model that failed the gate stays in the registry, unused.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from sam_engine.errors import CheckpointError
from sam_engine.learned.weights import (
    BASE_DIR,
    MANIFEST_NAME,
    ModelManifest,
    read_manifest,
    write_atomic,
)

ENV_TUNED = "SAM_INSPECT_TUNED"
PROMOTED = "promoted.json"
BASE_NAME = "learned-base"
SAM_DELTA_KIND = "sam-delta"  # manifest "kind" and net["kind"] of a tuned SAM checkpoint
DELTA_NAME = "delta.safetensors"  # its tensors in the model folder (delta.json beside them)
SECTIONS = ("recipes", "finders", "examples", "golden")  # promoted.json: one per kind of model


def registry_root() -> Path:
    env = os.environ.get(ENV_TUNED, "").strip()
    if env:
        return Path(env).expanduser()
    from sam_engine.weights.registry import user_data_dir

    return user_data_dir() / "tuned"


@dataclass(frozen=True)
class Promotion:
    """The model a recipe uses: its id (name@version), weights sha256, when and why."""

    recipe: str
    model_id: str
    sha256: str
    when: str
    reason: str = ""


def is_sam_delta(model: ModelManifest | str | Path) -> bool:
    """True when a model (its manifest, or its folder) is a tuned SAM checkpoint: a delta to a
    SAM base (net.kind "sam-delta"), not a learned crop model. A folder without a readable
    manifest is not."""
    if not isinstance(model, ModelManifest):
        try:
            model = read_manifest(model)
        except CheckpointError:
            return False
    return isinstance(model.net, dict) and model.net.get("kind") == SAM_DELTA_KIND


def versions(name: str, root: Path | None = None) -> list[str]:
    folder = (root or registry_root()) / name
    if not folder.is_dir():
        return []
    found = [p.name for p in folder.iterdir() if (p / MANIFEST_NAME).is_file()]
    return sorted(found, key=lambda v: (len(v), v))


def next_version(name: str, root: Path | None = None) -> str:
    nums = [int(v) for v in versions(name, root) if v.isdigit()]
    return str(max(nums, default=0) + 1)


def model_dir(name: str, version: str, root: Path | None = None) -> Path:
    return (root or registry_root()) / name / version


def list_models(root: Path | None = None) -> list[ModelManifest]:
    root = root or registry_root()
    out = []
    if root.is_dir():
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            for v in versions(sub.name, root):
                try:
                    out.append(read_manifest(sub / v))
                except CheckpointError:
                    continue
    return out


def resolve(spec: str, root: Path | None = None) -> Path:
    """A model folder from 'learned-base', 'name', 'name@version' or a folder path."""
    if spec in (BASE_NAME, f"{BASE_NAME}@1"):
        return BASE_DIR
    path = Path(spec).expanduser()
    if (path / MANIFEST_NAME).is_file():
        return path
    name, _, version = spec.partition("@")
    root = root or registry_root()
    have = versions(name, root)
    if not have:
        known = sorted({m.name for m in list_models(root)})
        raise CheckpointError(
            f"no tuned model named {name!r} in {root}; known: {', '.join(known) or 'none'} "
            "(`sam-inspect tune --list`)")
    if version and version not in have:
        raise CheckpointError(f"tuned model {name} has no version {version}; it has "
                              f"{', '.join(have)}")
    return model_dir(name, version or have[-1], root)


def _read_promoted(root: Path) -> dict:
    path = root / PROMOTED
    if not path.is_file():
        return {section: {} for section in SECTIONS}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc}); fix or delete it (promotions are "
                              "also recorded in each model's manifest)") from None
    if not isinstance(data, dict) or not isinstance(data.get("recipes"), dict):
        raise CheckpointError(f"{path} is not a promotions file")
    for section in SECTIONS:
        if not isinstance(data.setdefault(section, {}), dict):
            raise CheckpointError(f"{path}: section {section!r} is not an object")
    return data


def _section(section: str) -> str:
    if section not in SECTIONS:
        raise ValueError(f"unknown promotion section {section!r}; one of {SECTIONS}")
    return section


def promoted_for(recipe: str, root: Path | None = None,
                 section: str = "recipes") -> Promotion | None:
    """The model promoted for a recipe's part name (in one section), or None."""
    hist = _read_promoted(root or registry_root())[_section(section)].get(recipe) or []
    return Promotion(**hist[-1]) if hist else None


def promote(recipe: str, manifest: ModelManifest, reason: str = "",
            root: Path | None = None, section: str = "recipes") -> Promotion:
    root = root or registry_root()
    data = _read_promoted(root)
    p = Promotion(recipe, manifest.model_id, manifest.weights_sha256,
                  time.strftime("%Y-%m-%dT%H:%M:%S%z"), reason)
    data[_section(section)].setdefault(recipe, []).append(p.__dict__)
    write_atomic(root / PROMOTED, (json.dumps(data, indent=2) + "\n").encode())
    return p


def demote(recipe: str, root: Path | None = None,
           section: str = "recipes") -> Promotion | None:
    """Go back to the recipe's previous model; returns the one now in use (None: defaults)."""
    root = root or registry_root()
    data = _read_promoted(root)
    hist = data[_section(section)].get(recipe) or []
    if not hist:
        raise CheckpointError(f"no tuned model is promoted for recipe {recipe!r}")
    hist.pop()
    write_atomic(root / PROMOTED, (json.dumps(data, indent=2) + "\n").encode())
    return Promotion(**hist[-1]) if hist else None
