"""Export a learned model (sam_engine.learned) to ONNX, verify it against PyTorch, manifest.

`export_learned(folder_or_model, out_dir)` writes learned.onnx (input `crops` float32
(N, 8, S, S), N dynamic; outputs `logits` (N, 1, S, S) and `iou` (N, 1)) and manifest.json
(onnx.manifest.LearnedOnnxManifest: the model's name, version, weights_sha256 and NetConfig,
the graph's sha256 as computed). The export is checked by running the torch-free runtime
(onnx.learned_runtime, loaded from the folder as the line loads it) and the PyTorch
LearnedEngine through the same CropEngine prompt path on synthetic parts of several shapes,
with box, click, click + negative click, several-box and refinement prompts; every candidate
mask must agree (IoU >= MIN_IOU). A failing export keeps its manifest (for diagnosis) with
passed=False, so the runtime refuses it, and raises LearnedExportError.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from sam_engine.errors import SamEngineError
from sam_engine.learned.crops import IN_CHANNELS
from sam_engine.learned.engine import LearnedEngine, load_model
from sam_engine.learned.model import CropUNet
from sam_engine.learned.weights import ModelManifest, write_atomic
from sam_engine.onnx.learned_runtime import (
    GRAPH_NAME,
    INPUT_NAME,
    OUTPUT_NAMES,
    ROLE,
    OnnxLearnedEngine,
)
from sam_engine.onnx.manifest import (
    MANIFEST_NAME,
    LearnedOnnxManifest,
    OnnxFile,
    TensorSpec,
    VerifyResult,
    graph_digest,
)
from sam_engine.onnx.trace import DEFAULT_OPSET, trace
from sam_engine.prompts import Prompts

log = logging.getLogger(__name__)

EXPORTER_VERSION = "learned-1"
MIN_IOU = 0.99  # fp32 graph vs PyTorch: every candidate mask of every case
VERIFY_SIZES = ((120, 200), (480, 640), (333, 517))  # (H, W): small, 3:4, odd sides
PREPROCESSING_NOTE = (
    "outside the graph: sam_engine.learned.crops (prompt windows, network_input with the "
    "manifest's net.geometry; logits back to the image by the inverse resize)")


class LearnedExportError(SamEngineError):
    """A learned-model export failed or does not reproduce the PyTorch engine."""


@dataclass(frozen=True)
class LearnedExportOptions:
    opset: int = DEFAULT_OPSET
    seed: int = 0  # the synthetic parts of the check
    sizes: tuple[tuple[int, int], ...] = VERIFY_SIZES
    instances_per_part: int = 2
    min_iou: float = MIN_IOU


@dataclass(frozen=True)
class LearnedExportResult:
    out_dir: Path
    manifest: LearnedOnnxManifest

    @property
    def passed(self) -> bool:
        return bool(self.manifest.verification) and all(
            v.passed for v in self.manifest.verification)


# ------------------------------------------------------------------ graph
def _write_graph(model: CropUNet, path: Path, opset: int) -> None:
    """Trace the network with a dynamic batch and write it atomically (mode per umask)."""
    s = model.config.geometry.size
    net = copy.deepcopy(model).eval().cpu().float().requires_grad_(False)
    dummy = torch.randn(2, IN_CHANNELS, s, s, generator=torch.Generator().manual_seed(0))
    dynamic = {INPUT_NAME: {0: "n"}, **{o: {0: "n"} for o in OUTPUT_NAMES}}
    graph = trace(net, (dummy,), (INPUT_NAME,), OUTPUT_NAMES, dynamic, opset)
    write_atomic(path, graph.SerializeToString())  # a few MB: no external data


def _describe(path: Path) -> OnnxFile:
    g = onnx.load(str(path), load_external_data=False).graph

    def specs(values) -> tuple[TensorSpec, ...]:
        out = []
        for v in values:
            dims = tuple(d.dim_param or int(d.dim_value) for d in v.type.tensor_type.shape.dim)
            out.append(TensorSpec(v.name, "float32", dims))
        return tuple(out)

    return OnnxFile(path.name, ROLE, False, graph_digest(path.parent, path.name),
                    path.stat().st_size, specs(g.input), specs(g.output))


# ------------------------------------------------------------------ verification
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def verify_cases(seed: int, sizes, per_part: int) -> list[tuple[np.ndarray, list[Prompts]]]:
    """(image, prompts) on one synthetic part per size: per defect (up to per_part) its box,
    a click on it, and that click with a negative click beside the defect; all the part's
    boxes in one prompt. Refinement steps are added by the check itself."""
    from sam_engine.synthetic.generator import make_part

    out = []
    for i, size in enumerate(sizes):
        part = make_part(seed + i, size=size)
        h, w = size
        rng = np.random.default_rng(seed + i)
        insts = [d for d in part.instances if d.mask.any()][:per_part]
        prompts: list[Prompts] = []
        boxes = []
        for d in insts:
            x0, y0, x1, y1 = d.bbox
            boxes.append([x0, y0, x1, y1])
            prompts.append(Prompts.from_boxes([[x0, y0, x1, y1]]))
            ys, xs = np.nonzero(d.mask)
            k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
            click = [xs[k] + 0.5, ys[k] + 0.5]
            prompts.append(Prompts.from_points([click]))
            neg = [min(max(x1 + 4.0, 0.0), w), min(max(y0 - 4.0, 0.0), h)]
            prompts.append(Prompts.from_points([click, neg], [1, 0]))
        if not insts:  # no visible defect: random prompts still exercise the graph
            x0, y0 = rng.uniform((0, 0), (w * 0.6, h * 0.6))
            boxes.append([x0, y0, x0 + w * 0.3, y0 + h * 0.3])
            prompts += [Prompts.from_boxes(boxes[-1:]),
                        Prompts.from_points([[x0 + w * 0.15, y0 + h * 0.15]])]
        if len(boxes) > 1:
            prompts.append(Prompts.from_boxes(boxes))
        out.append((part.image, prompts))
    return out


def verify_learned(reference: LearnedEngine, runtime: OnnxLearnedEngine,
                   options: LearnedExportOptions, path: str = GRAPH_NAME) -> VerifyResult:
    """Every candidate mask of the ONNX runtime vs the PyTorch engine (same CropEngine prompt
    path) on verify_cases, each prompt also with multimask_output=False and as a refinement
    (the PyTorch best low-res mask fed back as mask_input)."""
    ious, diff, n = [], 0.0, 0
    for image, prompts in verify_cases(options.seed, options.sizes, options.instances_per_part):
        ht, ho = reference.set_image(image), runtime.set_image(image)
        for p in prompts:
            refined = None
            for multi in (True, False):
                a = reference.predict(ht, p, multimask_output=multi)
                b = runtime.predict(ho, p, multimask_output=multi)
                diff = max(diff, float(np.abs(a.low_res_logits - b.low_res_logits).max()))
                ious += [_iou(x, y) for x, y in zip(a.masks.reshape(-1, *a.image_size),
                                                    b.masks.reshape(-1, *b.image_size),
                                                    strict=True)]
                n += 1
                if multi:
                    refined = Prompts(points=p.points, labels=p.labels, boxes=p.boxes,
                                      mask_input=a.low_res_logits[0, a.best_index(0)][None])
            a = reference.predict(ht, refined)
            b = runtime.predict(ho, refined)
            diff = max(diff, float(np.abs(a.low_res_logits - b.low_res_logits).max()))
            ious += [_iou(x, y) for x, y in zip(a.masks.reshape(-1, *a.image_size),
                                                b.masks.reshape(-1, *b.image_size), strict=True)]
            n += 1
    v = VerifyResult(path, n, diff, float(min(ious)), float(np.mean(ious)), options.min_iou,
                     bool(min(ious) >= options.min_iou))
    log.info("verify %s on %d image sizes, %d cases: max |logit diff| %.2e, mask IoU min %.4f "
             "mean %.4f (need >= %.2f)", path, len(options.sizes), n, diff, v.min_mask_iou,
             v.mean_mask_iou, options.min_iou)
    return v


# ------------------------------------------------------------------ entry point
def export_learned(
    source: str | Path | CropUNet,
    out_dir: str | Path,
    *,
    manifest: ModelManifest | None = None,
    options: LearnedExportOptions | None = None,
) -> LearnedExportResult:
    """Export a learned model (a model folder, sha256 checked, or a CropUNet with its
    `manifest`) to out_dir, verify it and write manifest.json; raises LearnedExportError when
    the check fails (the manifest is still written, with the failing result)."""
    opts = options or LearnedExportOptions()
    if isinstance(source, CropUNet):
        if manifest is None:
            raise TypeError("export_learned(CropUNet) needs the model's manifest")
        model, src = source, manifest
    else:
        model, src = load_model(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # never a stale manifest beside a new graph
    path = out / GRAPH_NAME
    _write_graph(model, path, opts.opset)
    f = _describe(path)
    pending = VerifyResult(f.path, 0, 0.0, 0.0, 0.0, opts.min_iou, False)
    lm = LearnedOnnxManifest(
        name=src.name, version=src.version, weights_sha256=src.weights_sha256,
        net=model.config.to_dict(), opset=opts.opset, exporter_version=EXPORTER_VERSION,
        torch_version=torch.__version__, preprocessing=PREPROCESSING_NOTE, base=src.base,
        files=[f], verification=[pending])
    lm.save(out)  # refused by the runtime until the check below passes
    reference = LearnedEngine(model, src, device="cpu")
    runtime = OnnxLearnedEngine(out, providers=["CPUExecutionProvider"], allow_unverified=True)
    lm.verification = [verify_learned(reference, runtime, opts, f.path)]
    lm.save(out)
    result = LearnedExportResult(out, lm)
    if not result.passed:
        v = lm.verification[0]
        raise LearnedExportError(
            f"ONNX export of {src.name}@{src.version} to {out} does not reproduce PyTorch: "
            f"{v.path} mask IoU min {v.min_mask_iou:.4f} < {v.iou_threshold}; see "
            f"{out / MANIFEST_NAME}; do not deploy this file")
    return result
