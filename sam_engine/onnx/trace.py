"""Tracing torch modules into ONNX models, and the opset and tensor names the graphs share.

Used by the export (onnx.export) and by SamEngine's cached click decoder (sam.click_decoder);
imports torch and onnx, nothing of the SAM backend, so neither import cycles through the other.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch

DEFAULT_OPSET = 17
PROMPT_INPUTS = ("point_coords", "point_labels", "mask_input", "has_mask_input")
TERM_OUTPUTS = ("src", "k1", "v1", "q1", "k1h", "v1h")  # image_terms.onnx
CLICK_TERMS = ("src", "k1h", "v1h", "q1")  # decoder_click.onnx's per-image inputs
FAST_OUTPUTS = ("low_res_masks", "iou_predictions")


def trace(module: torch.nn.Module, args: tuple, names_in, names_out, dynamic, opset,
           fixed_out: tuple[tuple[int, ...], ...] | None = None) -> onnx.ModelProto:
    """The module traced to an ONNX model (weights loaded, whatever their size). fixed_out:
    output shapes to write into the graph (fixed-shape variants; the tracer leaves some symbolic,
    which TensorRT dislikes). Traced into a file, not memory: over 2 GB the exporter must write
    external data, which only works with a path."""
    # A fresh wrapper module is in training mode, and the exporter restores the mode it found
    # after tracing, which would put the wrapped SAM (shared with the engine) in training mode:
    # MobileSAM's BatchNorms would then use batch statistics. Wrappers are for inference.
    module.eval()
    with tempfile.TemporaryDirectory(prefix="sam_onnx_trace_") as tmp:
        path = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings and the legacy-exporter notice
            torch.onnx.export(
                module, args, str(path), dynamo=False, opset_version=opset,
                do_constant_folding=True, input_names=list(names_in),
                output_names=list(names_out), dynamic_axes=dynamic or None,
            )
        model = onnx.load(str(path))  # pulls in external data files, if any
    for out, shape in zip(model.graph.output, fixed_out or (), strict=False):
        dims = out.type.tensor_type.shape.dim
        for d, n in zip(dims, shape, strict=True):
            d.Clear()
            d.dim_value = n
    return model
