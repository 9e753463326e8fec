"""Export a finder (sam_engine.finder) to ONNX, verify it against PyTorch, write its manifest.

`export_finder(folder_or_finder, out_dir)` writes finder.onnx (input `image` float32
(1, 3, H, W) with dynamic H and W; output `probs` (1, 1 + classes, H, W): the softmax over
dim 1 is part of the graph) and manifest.json (onnx.finder_runtime.FinderOnnxManifest: the
finder's name, version, weights_sha256 and net (classes, geometry, post-processing settings),
the graph's sha256 as computed). The export is checked by running the torch-free runtime
(OnnxFinder, loaded from the folder as the line loads it) and the PyTorch Finder on synthetic
hard parts of several shapes: both must find the same number of defects, each matched pair's
masks must agree (IoU >= MIN_IOU), and the probabilities must agree within MAX_PROB_DIFF. A
failing export keeps its manifest (for diagnosis) with passed=False, so the runtime refuses it,
and raises FinderExportError.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from sam_engine.errors import SamEngineError
from sam_engine.finder.finder import Finder, load_finder, post_settings
from sam_engine.finder.metrics import mask_iou
from sam_engine.finder.preprocess import postprocess
from sam_engine.finder.types import Found
from sam_engine.learned.weights import write_atomic
from sam_engine.onnx.finder_runtime import (
    GRAPH_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    ROLE,
    FinderOnnxManifest,
    FinderVerifyResult,
    OnnxFinder,
    ShapeCheck,
)
from sam_engine.onnx.manifest import MANIFEST_NAME, OnnxFile, TensorSpec, graph_digest
from sam_engine.onnx.trace import DEFAULT_OPSET, trace

log = logging.getLogger(__name__)

EXPORTER_VERSION = "finder-1"
MIN_IOU = 0.99  # fp32 graph vs PyTorch: every matched defect's mask on every shape
MAX_PROB_DIFF = 1e-3  # fp32 agrees to ~1e-6; more means a different graph, not rounding
VERIFY_SIZES = ((200, 200), (480, 320), (1000, 1100))  # (H, W): small square, portrait, ~1 MP
PREPROCESSING_NOTE = (
    "outside the graph: sam_engine.finder.preprocess (finder_input with the manifest's "
    "net.geometry; postprocess with net.post: threshold, grouping, class per defect)")


class FinderExportError(SamEngineError):
    """A finder export failed or does not reproduce the PyTorch finder."""


@dataclass(frozen=True)
class FinderExportOptions:
    opset: int = DEFAULT_OPSET
    seed: int = 0  # the synthetic parts of the check
    sizes: tuple[tuple[int, int], ...] = VERIFY_SIZES
    min_iou: float = MIN_IOU
    max_prob_diff: float = MAX_PROB_DIFF


@dataclass(frozen=True)
class FinderExportResult:
    out_dir: Path
    manifest: FinderOnnxManifest

    @property
    def passed(self) -> bool:
        return bool(self.manifest.verification) and all(
            v.passed for v in self.manifest.verification)


class ProbsGraph(nn.Module):
    """The finder network with its softmax: what finder.onnx computes."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(image), dim=1)


# ------------------------------------------------------------------ graph
def write_graph(net: nn.Module, path: Path, opset: int) -> None:
    """Trace network + softmax with dynamic H and W and write it atomically."""
    m = net.config.geometry.multiple
    model = ProbsGraph(copy.deepcopy(net).eval().cpu().float().requires_grad_(False))
    dummy = torch.randn(1, 3, 10 * m, 14 * m, generator=torch.Generator().manual_seed(0))
    dynamic = {INPUT_NAME: {2: "h", 3: "w"}, OUTPUT_NAME: {2: "h", 3: "w"}}
    graph = trace(model, (dummy,), (INPUT_NAME,), (OUTPUT_NAME,), dynamic, opset)
    write_atomic(path, graph.SerializeToString())  # a few MB: no external data


def describe(path: Path) -> OnnxFile:
    """The manifest entry of the graph at `path` (sha256 computed from the file)."""
    g = onnx.load(str(path), load_external_data=False).graph

    def specs(values) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(v.name, "float32",
                                tuple(d.dim_param or int(d.dim_value)
                                      for d in v.type.tensor_type.shape.dim))
                     for v in values)

    return OnnxFile(path.name, ROLE, False, graph_digest(path.parent, path.name),
                    path.stat().st_size, specs(g.input), specs(g.output))


# ------------------------------------------------------------------ verification
def match_ious(a: list[Found], b: list[Found]) -> list[float]:
    """For every defect on either side, its best mask IoU with a defect of the same class on
    the other side (0.0 when there is none)."""

    def best(f: Found, others: list[Found]) -> float:
        return max((mask_iou(f.mask, g.mask) for g in others if g.cls == f.cls), default=0.0)

    return [best(f, b) for f in a] + [best(g, a) for g in b]


def verify_images(options: FinderExportOptions) -> list[np.ndarray]:
    """One synthetic hard part (sam_engine.synthetic.hard) per size in options.sizes."""
    from sam_engine.synthetic.hard import make_hard_part

    return [make_hard_part(options.seed + i, size=tuple(size)).image
            for i, size in enumerate(options.sizes)]


def verify_finder(reference: Finder, runtime: OnnxFinder, options: FinderExportOptions,
                  path: str = GRAPH_NAME,
                  images: Sequence[np.ndarray] | None = None) -> FinderVerifyResult:
    """Found defects and probabilities of the ONNX runtime vs the PyTorch finder on `images`
    (default verify_images(options)), all classes, the finder's own post settings."""
    checks = []
    for rgb in verify_images(options) if images is None else images:
        pa, info = reference.probabilities(rgb)
        pb, info_b = runtime.probabilities(rgb)
        if info_b != info or pa.shape != pb.shape:
            raise FinderExportError(f"{path}: ONNX input {info_b} / output {pb.shape} differ "
                                    f"from PyTorch's {info} / {pa.shape}")
        diff = float(np.abs(pa - pb).max())
        fa = postprocess(pa, info, reference.classes, None, reference.settings)
        fb = postprocess(pb, info, runtime.classes, None, runtime.settings)
        ious = match_ious(fa, fb)
        low = min(ious, default=1.0)
        ok = (len(fa) == len(fb) and low >= options.min_iou
              and diff <= options.max_prob_diff)
        checks.append(ShapeCheck(info.image_size, info.padded, len(fa), len(fb), low, diff, ok))
        log.info("verify %s at %dx%d: %d / %d defects (PyTorch / ONNX), mask IoU min %.4f, "
                 "max |prob diff| %.2e", path, *info.image_size, len(fa), len(fb), low, diff)
    if not checks:
        raise FinderExportError("no images to verify the finder export on: give sizes")
    return FinderVerifyResult(
        path, tuple(checks), max(c.max_abs_prob_diff for c in checks),
        min(c.min_mask_iou for c in checks), options.min_iou, options.max_prob_diff,
        all(c.passed for c in checks))


def describe_checks(v: FinderVerifyResult) -> str:
    """The verification as a table, one line per image size (what export-onnx prints)."""
    lines = [f"{'image (HxW)':>12} {'input':>9} {'defects pt/onnx':>15} {'min IoU':>8} "
             f"{'max|prob diff|':>15}  ok"]
    for c in v.checks:
        lines.append(f"{c.image_size[0]:>5}x{c.image_size[1]:<6} "
                     f"{c.input_size[0]:>4}x{c.input_size[1]:<4} "
                     f"{c.defects_torch:>7} / {c.defects_onnx:<5} {c.min_mask_iou:8.4f} "
                     f"{c.max_abs_prob_diff:15.2e}  {'yes' if c.passed else 'NO'}")
    lines.append(f"{v.path}: need mask IoU >= {v.iou_threshold}, max |prob diff| <= "
                 f"{v.prob_tolerance:g}, equal defect counts: "
                 f"{'passed' if v.passed else 'FAILED'}")
    return "\n".join(lines)


# ------------------------------------------------------------------ entry point
def export_finder(source: str | Path | Finder, out_dir: str | Path, *,
                  options: FinderExportOptions | None = None) -> FinderExportResult:
    """Export a finder (a model folder, sha256 checked, or a loaded Finder) to out_dir, verify
    it and write manifest.json; raises FinderExportError when the check fails (the manifest
    is still written, with the failing result, and the runtime refuses the graph)."""
    opts = options or FinderExportOptions()
    finder = source if isinstance(source, Finder) else load_finder(source, device="cpu")
    src = finder.manifest
    reference = Finder(copy.deepcopy(finder.net), src, device="cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # never a stale manifest beside a new graph
    path = out / GRAPH_NAME
    write_graph(reference.net, path, opts.opset)
    f = describe(path)
    pending = FinderVerifyResult(f.path, (), 0.0, 0.0, opts.min_iou, opts.max_prob_diff, False)
    fm = FinderOnnxManifest(
        name=src.name, version=src.version, weights_sha256=src.weights_sha256,
        net={**src.net, "post": post_settings(src).to_dict()}, opset=opts.opset,
        exporter_version=EXPORTER_VERSION, torch_version=torch.__version__,
        preprocessing=PREPROCESSING_NOTE, base=src.base, files=[f], verification=[pending])
    fm.save(out)  # refused by the runtime until the check below passes
    runtime = OnnxFinder(out, providers=["CPUExecutionProvider"], allow_unverified=True)
    fm.verification = [verify_finder(reference, runtime, opts, f.path)]
    fm.save(out)
    result = FinderExportResult(out, fm)
    v = fm.verification[0]
    log.debug("finder export %s -> %s\n%s", src.model_id, out, describe_checks(v))
    if not result.passed:
        raise FinderExportError(
            f"ONNX export of finder {src.model_id} to {out} does not reproduce PyTorch: "
            f"{v.path} mask IoU min {v.min_mask_iou:.4f} (need >= {v.iou_threshold}), max "
            f"|prob diff| {v.max_abs_prob_diff:.2e} (need <= {v.prob_tolerance:g}), defect "
            f"counts {[(c.defects_torch, c.defects_onnx) for c in v.checks]}; see "
            f"{out / MANIFEST_NAME}; do not deploy this file")
    return result
