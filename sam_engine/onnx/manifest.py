"""manifest.json written beside exported ONNX models and read by the line runtime (no torch).

Roles of the files an export writes (OnnxFile.role):
  "decoder_meta"   Meta-compatible decoder (SamOnnxModel interface, full-res logits inside)
  "image_terms"    image_embeddings -> the fast decoders' per-image terms (run once per image):
                   src, k1, v1, q1, and k1h, v1h (k1, v1 split per head) for decoder_click
  "decoder_fast"   our decoder on those terms: N prompts (batch) per call, low-res logits + IoU
  "decoder_fast_nomask"  decoder_fast without the mask_input path (prompts without a mask)
  "decoder_click"  our decoder for one prompt per call without mask input, written for
                   onnxruntime's CPU kernels (static batch 1): the runtime's fastest on a CPU
  "decoder_fused"  our decoder computing the image terms itself from image_embeddings
  "decoder_fixed"  decoder_fast with fixed shapes (1 prompt of 2 points) for TensorRT
  "encoder"        padded uint8 image + its unpadded size -> image_embeddings (fixed shapes)
  "encoder_float"  samexporter's / X-AnyLabeling's encoder: input_image float32 (H, W, 3) RGB
                   0..255, longest side <= 1024 -> image_embeddings (normalised, padded inside)
and the same roles with quantized=True for dynamic-int8 copies.

Integrity: OnnxFile.sha256 is file_digest() of the file (with external data: one digest over
the graph's and the data files' digests, in order); OnnxManifest.verification holds the export's
check of each file against PyTorch (VerifyResult.path = OnnxFile.path). The runtime loads a file
only when its digest matches and no VerifyResult for it has passed=False (check_file).

A learned-engine export (onnx.learned_export) writes LearnedOnnxManifest instead: "kind":
"learned", one file of role "learned" (crops -> logits, iou), the source model's name, version,
weights_sha256 and NetConfig (crop geometry included); the same files, checks and save.
export_kind tells the two apart (a manifest without "kind" is SAM's).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sam_engine.errors import CheckpointError
from sam_engine.weights.file_hash import file_sha256

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
SAM_KIND = "sam"  # manifest.json's "kind" (absent in SAM exports)
LEARNED_KIND = "learned"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input/output: name, element type and shape (str entries are dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class OnnxFile:
    """One exported graph."""

    path: str  # relative to the manifest's folder
    role: str
    quantized: bool
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: tuple[str, ...] = ()  # companion data files (models over 2 GB)


@dataclass(frozen=True)
class Preprocessing:
    """The constants of sam_engine.constants the graphs were exported with."""

    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    img_size: int
    low_res_size: int
    mask_threshold: float
    version: str
    resize: str  # where and how the image is resized (outside the graph)


@dataclass(frozen=True)
class VerifyResult:
    """ONNX vs PyTorch engine on random prompts, for one file."""

    path: str
    cases: int
    max_abs_logit_diff: float
    min_mask_iou: float
    mean_mask_iou: float
    iou_threshold: float
    passed: bool


class _ExportFiles:
    """What every export manifest has: its files, their export checks, the atomic save."""

    files: list[OnnxFile]
    verification: list[VerifyResult]

    def failed_verification(self, path: str) -> list[VerifyResult]:
        """The export checks of file `path` (OnnxFile.path) that failed."""
        return [v for v in self.verification if v.path == path and not v.passed]

    def find(self, role: str, quantized: bool = False) -> OnnxFile | None:
        for f in self.files:
            if f.role == role and f.quantized == quantized:
                return f
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, folder: str | Path) -> Path:
        """Write manifest.json atomically (a reader never sees half a manifest), mode 0644."""
        path = Path(folder) / MANIFEST_NAME
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json() + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


@dataclass
class OnnxManifest(_ExportFiles):
    model_id: str
    checkpoint_sha256: str | None
    opset: int
    exporter_version: str
    torch_version: str
    preprocessing: Preprocessing
    files: list[OnnxFile] = field(default_factory=list)
    verification: list[VerifyResult] = field(default_factory=list)
    format: int = MANIFEST_FORMAT

    @classmethod
    def load(cls, folder: str | Path) -> OnnxManifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise CheckpointError(
                f"no {MANIFEST_NAME} in {folder}: export the models first with "
                "`sam-inspect export-onnx --model NAME --out DIR`"
            )
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {MANIFEST_FORMAT}")
            if d.get("kind", SAM_KIND) != SAM_KIND:
                raise CheckpointError(
                    f"{path} describes a {d.get('kind')} export ({d.get('model_id')}), not SAM "
                    "graphs: load it with load_engine('onnx', models_dir=...) or "
                    "sam-inspect-line, which choose its runtime")
            return cls(
                model_id=d["model_id"],
                checkpoint_sha256=d["checkpoint_sha256"],
                opset=int(d["opset"]),
                exporter_version=d["exporter_version"],
                torch_version=d["torch_version"],
                preprocessing=Preprocessing(**{
                    **d["preprocessing"],
                    "pixel_mean": tuple(d["preprocessing"]["pixel_mean"]),
                    "pixel_std": tuple(d["preprocessing"]["pixel_std"]),
                }),
                files=[_file(f) for f in d["files"]],
                verification=[VerifyResult(**v) for v in d.get("verification", [])],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path} is not a valid ONNX export manifest ({exc}); re-run export-onnx"
            ) from exc


@dataclass
class LearnedOnnxManifest(_ExportFiles):
    """manifest.json of a learned-engine export: the source model (name, version, its
    model.safetensors' weights_sha256, base = the model it was tuned from, net =
    NetConfig.to_dict() with the crop geometry the runtime must use), the graph (files: role
    "learned", sha256 as computed) and the export's check against PyTorch (verification)."""

    name: str
    version: str
    weights_sha256: str
    net: dict
    opset: int
    exporter_version: str
    torch_version: str
    preprocessing: str  # where the network input is made (outside the graph)
    base: str | None = None
    files: list[OnnxFile] = field(default_factory=list)
    verification: list[VerifyResult] = field(default_factory=list)
    kind: str = LEARNED_KIND
    format: int = MANIFEST_FORMAT

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> str:
        return json.dumps({"model_id": self.model_id, **asdict(self)}, indent=2)

    @classmethod
    def load(cls, folder: str | Path) -> LearnedOnnxManifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise CheckpointError(
                f"no {MANIFEST_NAME} in {folder}: export a learned model first with "
                "`sam-inspect export-onnx --model learned-base --out DIR`")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {MANIFEST_FORMAT}")
            if d.get("kind") != LEARNED_KIND:
                raise CheckpointError(f"{path} describes SAM graphs ({d.get('model_id')}), not "
                                      "a learned-engine export: load it with OnnxEngine")
            return cls(
                name=d["name"], version=str(d["version"]), weights_sha256=d["weights_sha256"],
                net=dict(d["net"]), opset=int(d["opset"]),
                exporter_version=d["exporter_version"], torch_version=d["torch_version"],
                preprocessing=d["preprocessing"], base=d.get("base"),
                files=[_file(f) for f in d["files"]],
                verification=[VerifyResult(**v) for v in d.get("verification", [])],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path} is not a valid learned ONNX export manifest ({exc}); re-run "
                "export-onnx") from exc


def export_kind(folder: str | Path) -> str | None:
    """SAM_KIND or LEARNED_KIND for an export folder; None when it has no readable
    manifest.json (the runtime that loads it says what is wrong)."""
    try:
        d = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(d.get("kind", SAM_KIND)) if isinstance(d, dict) else None


def _spec(d: dict) -> TensorSpec:
    return TensorSpec(d["name"], d["dtype"], tuple(d["shape"]))


def _file(d: dict) -> OnnxFile:
    return OnnxFile(
        path=d["path"],
        role=d["role"],
        quantized=bool(d["quantized"]),
        sha256=d["sha256"],
        size_bytes=int(d["size_bytes"]),
        inputs=tuple(_spec(s) for s in d["inputs"]),
        outputs=tuple(_spec(s) for s in d["outputs"]),
        external_data=tuple(d.get("external_data", ())),
    )


REEXPORT_HINT = "re-run `sam-inspect export-onnx` into this folder"


def graph_digest(folder: str | Path, name: str, external_data: tuple[str, ...] = ()) -> str:
    """The sha256 a manifest records for graph `name` in `folder` (see module doc): the file's
    own sha256, or one digest over it and its external data files in order. Each file's hash
    is cached per path, size and mtime (file_hash), so the export's hashes serve its loads."""
    folder = Path(folder)
    sha = file_sha256(folder / name)
    if not external_data:
        return sha
    h = hashlib.sha256(sha.encode())
    for e in external_data:
        h.update(file_sha256(folder / e).encode())
    return h.hexdigest()


def file_digest(folder: str | Path, f: OnnxFile) -> str:
    """The sha256 the manifest records for `f`, computed from the files in `folder`."""
    return graph_digest(folder, f.path, f.external_data)


def check_file(
    folder: str | Path, manifest: OnnxManifest | LearnedOnnxManifest, f: OnnxFile,
    allow_unverified: bool = False,
) -> bool:
    """Raise CheckpointError unless `f` in `folder` has the manifest's sha256 and did not fail
    the export's verification (with allow_unverified a failed verification is let through).
    Returns True when an export check passed for it, False when none is recorded or one failed
    (allowed)."""
    folder = Path(folder)
    path = folder / f.path
    try:
        got = file_digest(folder, f)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path} ({exc.strerror or exc}); {REEXPORT_HINT}"
                              ) from None
    if got != f.sha256:
        raise CheckpointError(
            f"{path} has sha256 {got} but the manifest says {f.sha256}: the file is corrupt or "
            f"was replaced; {REEXPORT_HINT} (or restore the exported files)"
        )
    failed = manifest.failed_verification(f.path)
    if failed and not allow_unverified:
        v = failed[0]
        raise CheckpointError(
            f"{path} failed the export's verification against PyTorch (mask IoU min "
            f"{v.min_mask_iou:.4f} < {v.iou_threshold}, see {folder / MANIFEST_NAME}): its "
            f"masks would be wrong; {REEXPORT_HINT}, or pass allow_unverified=True to load it "
            "anyway"
        )
    return not failed and any(v.path == f.path for v in manifest.verification)
