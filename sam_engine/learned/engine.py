"""LearnedEngine: the project's own prompt-conditioned segmenter on PyTorch (CPU or GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sam_engine.learned.crop_engine import CropEngine
from sam_engine.learned.model import CropUNet, NetConfig
from sam_engine.learned.weights import BASE_DIR, ModelManifest, load_state
from sam_engine.results import EngineInfo


class LearnedEngine(CropEngine):
    """The crop network behind the Engine contract (see crop_engine for how prompts run)."""

    def __init__(self, model: CropUNet, manifest: ModelManifest, *, device: str = "cpu",
                 folder: str | Path | None = None, note: str = "") -> None:
        self.model = model.eval().to(device)
        self.manifest = manifest
        self.geometry = model.config.geometry
        self.device = device
        self.info = EngineInfo(
            name="learned", model_id=manifest.model_id, device=device, dtype="float32",
            checkpoint=str(folder) if folder else None,
            checkpoint_sha256=manifest.weights_sha256 or None,
            checkpoint_verified=True if folder else None, note=note)

    def forward_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, iou = self.model(torch.from_numpy(x).to(self.device))
        return logits[:, 0].float().cpu().numpy(), iou[:, 0].float().cpu().numpy()


def load_model(folder: str | Path) -> tuple[CropUNet, ModelManifest]:
    """The network and manifest of a learned-model folder (sha256 checked)."""
    state, manifest = load_state(folder)
    model = CropUNet(NetConfig.from_dict(manifest.net))
    model.load_state_dict(state, strict=True)
    return model.eval(), manifest


def load_learned(folder: str | Path | None = None, device: str | None = None,
                 note: str = "") -> LearnedEngine:
    """A LearnedEngine on a model folder (default: the base model shipped in models/)."""
    folder = Path(folder) if folder is not None else BASE_DIR
    model, manifest = load_model(folder)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return LearnedEngine(model, manifest, device=dev, folder=folder, note=note)
