"""Finder on PyTorch: load a trained finder and find defects on an image.

A finder is a model folder like any learned model (sam_engine.learned.weights: safetensors +
manifest.json, sha256 checked) whose manifest `net` has kind "finder": its architecture,
classes, preprocessing geometry and post-processing settings. It lives in the tuned-model
registry beside the prompt models (sam_engine.learned.registry).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam_engine.errors import CheckpointError
from sam_engine.finder.preprocess import (
    PostSettings,
    finder_input,
    postprocess,
    softmax,
)
from sam_engine.finder.types import FindResult
from sam_engine.learned.weights import ModelManifest, load_state, read_manifest

FINDER_KIND = "finder"


def is_finder(model: ModelManifest | str | Path) -> bool:
    """True when a manifest (or a model folder) is a finder's."""
    if not isinstance(model, ModelManifest):
        try:
            model = read_manifest(model)
        except CheckpointError:
            return False
    return isinstance(model.net, dict) and model.net.get("kind") == FINDER_KIND


def post_settings(manifest: ModelManifest) -> PostSettings:
    d = manifest.net.get("post") or {}
    return PostSettings(**{k: d[k] for k in PostSettings.__dataclass_fields__ if k in d})


class Finder:
    """A trained finder on PyTorch (CPU or GPU)."""

    def __init__(self, net, manifest: ModelManifest, device: str = "cpu") -> None:
        self.net = net.eval().to(device)
        self.manifest = manifest
        self.device = device
        self.config = net.config
        self.settings = post_settings(manifest)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    def probabilities(self, rgb: np.ndarray):
        """(softmax (1 + classes, H, W) at input resolution, InputInfo)."""
        import torch

        x, info = finder_input(rgb, self.config.geometry)
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(x).to(self.device))[0].float().cpu().numpy()
        return softmax(logits, 0), info

    def find(self, rgb: np.ndarray, wanted: Sequence[str] | None = None,
             settings: PostSettings | None = None) -> FindResult:
        t0 = time.perf_counter()
        probs, info = self.probabilities(rgb)
        t1 = time.perf_counter()
        found = postprocess(probs, info, self.classes, wanted, settings or self.settings)
        t2 = time.perf_counter()
        return FindResult(tuple(found), info.image_size,
                          tuple(wanted) if wanted is not None else self.classes, self.model_id,
                          {"network": round((t1 - t0) * 1e3, 2),
                           "postprocess": round((t2 - t1) * 1e3, 2)})


def build_net(net: dict):
    from sam_engine.finder.model import FinderConfig, FinderNet

    try:
        config = FinderConfig.from_dict(net)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"not a finder this version can read: {exc}") from None
    return FinderNet(config)


def load_finder(folder: str | Path, device: str | None = None) -> Finder:
    """The finder in a model folder (sha256 checked); device: cuda when there is one."""
    import torch

    state, manifest = load_state(folder)
    if not is_finder(manifest):
        raise CheckpointError(f"{folder} is a prompt model, not a finder; train a finder with "
                              "`sam-inspect tune --finder ...`")
    net = build_net(manifest.net)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder}: weights do not fit the finder in its manifest "
                              f"({str(exc).splitlines()[0]})") from None
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Finder(net, manifest, dev)
