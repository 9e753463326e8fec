"""The zero-click finder on onnxruntime only (numpy, onnxruntime and OpenCV; no torch at any depth).

OnnxFinder has the interface of sam_engine.finder.finder.Finder (find, classes, model_id,
settings) and runs finder.onnx from a folder written by `sam-inspect export-onnx --finder
NAME[@VERSION]|FOLDER` (onnx.finder_export): input `image` float32 (1, 3, H, W), H and W dynamic
(multiples of the geometry's `multiple`), output `probs` (1, 1 + classes, H, W), the softmax
inside the graph. The network input and the way probabilities become defects are
sam_engine.finder.preprocess's, shared with the PyTorch Finder and training, so the two cannot
drift apart. The graph's sha256 is checked against manifest.json at load, and a graph whose
export check failed is refused unless allow_unverified.

FinderOnnxManifest (manifest.json, "kind": "finder") lives here rather than in onnx.manifest so
that the finder's export format has one owner; it reuses onnx.manifest's OnnxFile, check_file
(via open_session) and the atomic writer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sam_engine.errors import CheckpointError
from sam_engine.finder.preprocess import (
    VERSION,
    FinderGeometry,
    InputInfo,
    PostSettings,
    finder_input,
    postprocess,
)
from sam_engine.finder.types import FindResult
from sam_engine.learned.weights import write_atomic
from sam_engine.onnx.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    REEXPORT_HINT,
    OnnxFile,
    TensorSpec,
    export_kind,
)
from sam_engine.onnx.runtime import choose_providers, open_session, provider_config
from sam_engine.results import EngineInfo

FINDER_KIND = "finder"  # manifest.json's "kind"
GRAPH_NAME = "finder.onnx"
ROLE = "finder"
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
DEFAULT_THREADS = 2  # what the line tool runs with: the controller shares its cores
EXPORT_HINT = ("export a finder with `sam-inspect export-onnx --finder NAME[@VERSION]|FOLDER "
               "--out DIR`")


# ------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class ShapeCheck:
    """The export's check on one image size: the defects PyTorch and ONNX find, mask IoU of
    matched defects (1.0 when neither finds any) and the largest probability difference."""

    image_size: tuple[int, int]
    input_size: tuple[int, int]  # the padded network input (H, W)
    defects_torch: int
    defects_onnx: int
    min_mask_iou: float
    max_abs_prob_diff: float
    passed: bool


@dataclass(frozen=True)
class FinderVerifyResult:
    """The export's check of one graph (path = OnnxFile.path) over all its image sizes.
    Read by onnx.manifest.check_file (path, passed, min_mask_iou, iou_threshold)."""

    path: str
    checks: tuple[ShapeCheck, ...]
    max_abs_prob_diff: float
    min_mask_iou: float
    iou_threshold: float
    prob_tolerance: float
    passed: bool

    @classmethod
    def from_dict(cls, d: dict) -> FinderVerifyResult:
        checks = tuple(ShapeCheck(**{**c, "image_size": tuple(c["image_size"]),
                                     "input_size": tuple(c["input_size"])})
                       for c in d["checks"])
        return cls(**{**d, "checks": checks})


@dataclass
class FinderOnnxManifest:
    """manifest.json of a finder export: the source finder (name, version, its
    model.safetensors' weights_sha256, base; net = its manifest's net: architecture, classes,
    geometry, preprocessing version and post-processing settings), the graph (files: role
    "finder", sha256 as computed) and the export's check against PyTorch (verification)."""

    name: str
    version: str
    weights_sha256: str
    net: dict
    opset: int
    exporter_version: str
    torch_version: str
    preprocessing: str  # where the network input is made and probabilities become defects
    base: str | None = None
    files: list[OnnxFile] = field(default_factory=list)
    verification: list[FinderVerifyResult] = field(default_factory=list)
    kind: str = FINDER_KIND
    format: int = MANIFEST_FORMAT

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.net.get("classes", ()))

    def find(self, role: str, quantized: bool = False) -> OnnxFile | None:
        return next((f for f in self.files if f.role == role and f.quantized == quantized),
                    None)

    def failed_verification(self, path: str) -> list[FinderVerifyResult]:
        """The export checks of file `path` that failed."""
        return [v for v in self.verification if v.path == path and not v.passed]

    def to_json(self) -> str:
        return json.dumps({"model_id": self.model_id, **asdict(self)}, indent=2)

    def save(self, folder: str | Path) -> Path:
        """Write manifest.json atomically (a reader never sees half a manifest)."""
        path = Path(folder) / MANIFEST_NAME
        write_atomic(path, (self.to_json() + "\n").encode())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FinderOnnxManifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise CheckpointError(f"no {MANIFEST_NAME} in {folder}: {EXPORT_HINT}")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {MANIFEST_FORMAT}")
            if d.get("kind") != FINDER_KIND:
                raise CheckpointError(
                    f"{path} describes a {d.get('kind', 'sam')} export ({d.get('model_id')}), "
                    "not a finder: it needs prompts (sam-inspect-line --box/--point or a "
                    "recipe's [[prompts]])")
            return cls(
                name=d["name"], version=str(d["version"]), weights_sha256=d["weights_sha256"],
                net=dict(d["net"]), opset=int(d["opset"]),
                exporter_version=d["exporter_version"], torch_version=d["torch_version"],
                preprocessing=d["preprocessing"], base=d.get("base"),
                files=[_file(f) for f in d["files"]],
                verification=[FinderVerifyResult.from_dict(v)
                              for v in d.get("verification", [])])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path} is not a valid finder export manifest ({exc}); "
                                  f"{REEXPORT_HINT}") from None


def _file(d: dict) -> OnnxFile:
    def spec(s: dict) -> TensorSpec:
        return TensorSpec(s["name"], s["dtype"], tuple(s["shape"]))

    return OnnxFile(path=d["path"], role=d["role"], quantized=bool(d["quantized"]),
                    sha256=d["sha256"], size_bytes=int(d["size_bytes"]),
                    inputs=tuple(spec(s) for s in d["inputs"]),
                    outputs=tuple(spec(s) for s in d["outputs"]),
                    external_data=tuple(d.get("external_data", ())))


def is_finder_export(folder: str | Path) -> bool:
    """True when `folder` holds a finder export (its manifest.json says so)."""
    return export_kind(folder) == FINDER_KIND


def post_settings_from(net: dict) -> PostSettings:
    """The post-processing settings a finder's manifest `net` records (defaults for the rest)."""
    d = net.get("post") or {}
    return PostSettings(**{k: d[k] for k in PostSettings.__dataclass_fields__ if k in d})


# ------------------------------------------------------------------ runtime
class OnnxFinder:
    """A finder export on onnxruntime (see module doc); same find() as the PyTorch Finder."""

    def __init__(
        self,
        folder: str | Path,
        *,
        threads: int | None = DEFAULT_THREADS,
        providers: list[str] | None = None,
        allow_unverified: bool = False,
        prefer_tensorrt: bool = False,
    ) -> None:
        """threads: onnxruntime intra-op threads (None: one per core). providers: execution
        providers (default choose_providers: CUDA when present, else CPU)."""
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CheckpointError(f"model folder {self.folder} does not exist; {EXPORT_HINT}")
        self.manifest = FinderOnnxManifest.load(self.folder)
        f = self.manifest.find(ROLE)
        if f is None:
            raise CheckpointError(f"{self.folder} has no {ROLE} graph in its manifest; "
                                  f"{REEXPORT_HINT}")
        where = self.folder / MANIFEST_NAME
        net = self.manifest.net
        made_for = net.get("preprocess")
        if made_for != VERSION:
            raise CheckpointError(f"{where}: the finder was trained with preprocessing "
                                  f"{made_for!r}, this runtime makes {VERSION!r}; train and "
                                  "export it again with this version")
        try:
            self.geometry = FinderGeometry.from_dict(net["geometry"])
            self.settings = post_settings_from(net)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where} has no usable finder geometry or post-processing "
                                  f"settings ({exc}); {REEXPORT_HINT}") from None
        if not self.manifest.classes:
            raise CheckpointError(f"{where} names no classes; {REEXPORT_HINT}")
        self.providers = providers or choose_providers(prefer_tensorrt)
        self.session = open_session(self.folder, f, provider_config(self.providers, self.folder),
                                    threads, self.manifest, allow_unverified)
        self._check_graph(f)
        # what line_main reports: role -> the file (sha256 checked above) and its precision
        self.files: dict[str, OnnxFile] = {ROLE: f}
        self.precisions: dict[str, str] = {ROLE: "float32"}
        verified = not self.manifest.failed_verification(f.path) and any(
            v.path == f.path for v in self.manifest.verification)
        gpu = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        device = "cuda" if gpu & set(self.session.get_providers()) else "cpu"
        note = (f"onnxruntime {ort.__version__}, providers {', '.join(self.providers)}; "
                f"classes {', '.join(self.classes)}; from weights sha256 "
                f"{self.manifest.weights_sha256[:16]}")
        if not verified:
            note += f"; unverified: {f.path} did not pass the export check"
        self.info = EngineInfo(
            name="finder", model_id=self.model_id, device=device, dtype="float32",
            checkpoint=str(self.folder / f.path), checkpoint_sha256=f.sha256,
            checkpoint_verified=verified, note=note)

    def _check_graph(self, f: OnnxFile) -> None:
        """The graph must take (1, 3, H, W) and give 1 + len(classes) probability channels."""
        shape_in = tuple(self.session.get_inputs()[0].shape)
        outs = self.session.get_outputs()
        n = 1 + len(self.classes)
        if (len(shape_in) != 4 or shape_in[1] != 3 or [o.name for o in outs] != [OUTPUT_NAME]
                or outs[0].shape[1] != n):
            raise CheckpointError(
                f"{self.folder / f.path} takes {shape_in} and gives "
                f"{[(o.name, o.shape) for o in outs]}; this runtime needs {INPUT_NAME} "
                f"(1, 3, H, W) -> {OUTPUT_NAME} (1, {n}, H, W); {REEXPORT_HINT}")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    def probabilities(self, rgb: np.ndarray) -> tuple[np.ndarray, InputInfo]:
        """(softmax (1 + classes, H, W) at input resolution, InputInfo)."""
        x, info = finder_input(rgb, self.geometry)
        (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return probs[0], info

    def find(self, rgb: np.ndarray, wanted: Sequence[str] | None = None,
             settings: PostSettings | None = None) -> FindResult:
        """Every defect of the `wanted` classes (default all) on an RGB image."""
        t0 = time.perf_counter()
        x, info = finder_input(rgb, self.geometry)
        t1 = time.perf_counter()
        (probs,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        t2 = time.perf_counter()
        found = postprocess(probs[0], info, self.classes, wanted, settings or self.settings)
        t3 = time.perf_counter()
        return FindResult(tuple(found), info.image_size,
                          tuple(wanted) if wanted is not None else self.classes, self.model_id,
                          {"preprocess": round((t1 - t0) * 1e3, 2),
                           "network": round((t2 - t1) * 1e3, 2),
                           "postprocess": round((t3 - t2) * 1e3, 2)})
