"""The learned engine on onnxruntime only (numpy, onnxruntime and OpenCV; no torch at any depth).

OnnxLearnedEngine is learned.crop_engine.CropEngine with the crop network run by onnxruntime
from a folder written by `sam-inspect export-onnx --model learned-base|NAME[@VERSION]|FOLDER`
(onnx.learned_export): manifest.json (LearnedOnnxManifest) and learned.onnx (input `crops`
float32 (N, 8, S, S), outputs `logits` (N, 1, S, S) and `iou` (N, 1)). Windows, network input
and the way logits go back to the image are crops.py's, shared with the PyTorch engine and the
training loop. The graph's sha256 is checked against the manifest at load, and a graph whose
export check failed is refused unless allow_unverified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from sam_engine.errors import CheckpointError
from sam_engine.learned.crop_engine import CropEngine
from sam_engine.learned.crops import IN_CHANNELS, VERSION, CropGeometry
from sam_engine.onnx.manifest import (
    LEARNED_KIND,
    REEXPORT_HINT,
    LearnedOnnxManifest,
    OnnxFile,
    export_kind,
)
from sam_engine.onnx.runtime import choose_providers, open_session, provider_config
from sam_engine.results import EngineInfo

GRAPH_NAME = "learned.onnx"
ROLE = "learned"
INPUT_NAME = "crops"
OUTPUT_NAMES = ("logits", "iou")


def is_learned_export(folder: str | Path) -> bool:
    """True when `folder` holds a learned-engine export (its manifest.json says so)."""
    return export_kind(folder) == LEARNED_KIND


class OnnxLearnedEngine(CropEngine):
    """The Engine contract over learned.onnx (see module doc)."""

    def __init__(
        self,
        models_dir: str | Path,
        *,
        providers: list[str] | None = None,
        threads: int | None = None,
        allow_unverified: bool = False,
        quantized: bool = False,
        prefer_tensorrt: bool = False,
        chunk: int | None = None,
    ) -> None:
        """threads: onnxruntime intra-op threads (None: one per core). providers: execution
        providers (default choose_providers: CUDA when present, else CPU). chunk: crops per
        run (None: all of a prompt's crops in one run). quantized: there is no int8 copy of
        a learned export, so True is refused with a clear error."""
        self.folder = Path(models_dir)
        if not self.folder.is_dir():
            raise CheckpointError(f"model folder {self.folder} does not exist; export it with "
                                  "`sam-inspect export-onnx --model learned-base --out DIR`")
        self.manifest = LearnedOnnxManifest.load(self.folder)
        if quantized:
            raise CheckpointError(f"{self.folder} is a learned-engine export, which has no "
                                  "int8 copy: load it without quantized (--int8)")
        f = self.manifest.find(ROLE)
        if f is None:
            raise CheckpointError(f"{self.folder} has no {ROLE} graph in its manifest; "
                                  f"{REEXPORT_HINT}")
        try:
            self.geometry = CropGeometry.from_dict(self.manifest.net["geometry"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.folder / 'manifest.json'} has no usable crop "
                                  f"geometry ({exc}); {REEXPORT_HINT}") from None
        made_for = self.manifest.net.get("preprocess", VERSION)
        if made_for != VERSION:
            raise CheckpointError(f"{self.folder / 'manifest.json'}: the model was trained with "
                                  f"crop preprocessing {made_for!r}, this runtime makes "
                                  f"{VERSION!r}; {REEXPORT_HINT} with a model of this version")
        self.providers = providers or choose_providers(prefer_tensorrt)
        self.session = open_session(self.folder, f, provider_config(self.providers, self.folder),
                                    threads, self.manifest, allow_unverified)
        self._check_shapes(f)
        self.chunk = chunk
        # what line_main reports: role -> the file (sha256 checked above) and its precision
        self.files: dict[str, OnnxFile] = {ROLE: f}
        self.precisions: dict[str, str] = {ROLE: "float32"}
        verified = not self.manifest.failed_verification(f.path) and any(
            v.path == f.path for v in self.manifest.verification)
        gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        device = "cuda" if gpu & set(self.session.get_providers()) else "cpu"
        note = (f"onnxruntime {ort.__version__}, providers {', '.join(self.providers)}; "
                f"from weights sha256 {self.manifest.weights_sha256[:16]}")
        if not verified:
            note += f"; unverified: {f.path} did not pass the export check"
        self.info = EngineInfo(
            name="learned", model_id=self.manifest.model_id, device=device, dtype="float32",
            checkpoint=str(self.folder / f.path), checkpoint_sha256=f.sha256,
            checkpoint_verified=verified, note=note)

    def _check_shapes(self, f: OnnxFile) -> None:
        """The graph must take (N, IN_CHANNELS, S, S) crops of this geometry's size S."""
        shape = tuple(self.session.get_inputs()[0].shape)
        s = self.geometry.size
        if len(shape) != 4 or tuple(shape[1:]) != (IN_CHANNELS, s, s):
            raise CheckpointError(
                f"{self.folder / f.path} takes crops of shape {shape}, this runtime makes "
                f"(N, {IN_CHANNELS}, {s}, {s}); {REEXPORT_HINT} with this version")

    def forward_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        step = self.chunk or len(x)
        logits, iou = [], []
        for i in range(0, len(x), step):
            lo, sc = self.session.run(OUTPUT_NAMES, {INPUT_NAME: x[i:i + step]})
            logits.append(lo[:, 0])
            iou.append(sc[:, 0])
        return np.concatenate(logits), np.concatenate(iou)
