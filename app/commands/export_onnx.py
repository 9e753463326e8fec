"""`sam-inspect export-onnx --model NAME --out DIR`: ONNX graphs for the torch-free line runtime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sam_engine.onnx_export import DEFAULT_OPSET, ExportError, ExportOptions, export_onnx


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-onnx", help="export SAM's decoder (and encoder) to ONNX, verified against PyTorch"
    )
    p.add_argument("--model", required=True, help="SAM model id (vit_b, vit_h, ...)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default: the installed one)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--encoder", action="store_true", help="also export the image encoder")
    p.add_argument("--quantize", action="store_true", help="also write dynamic-int8 copies")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help="ONNX opset (default %(default)s)")
    p.set_defaults(func=run)


def load_model(model_id: str, checkpoint: Path | None):
    """(SAM model, checkpoint sha256) for the export; tests replace this."""
    from sam_engine.checkpoint import file_sha256, load_sam
    from sam_engine.registry import find_checkpoint

    sam = load_sam(model_id, checkpoint)
    path = checkpoint if checkpoint is not None else find_checkpoint(model_id)
    return sam, (file_sha256(path) if path is not None else None)


def run(args: argparse.Namespace) -> int:
    sam, sha = load_model(args.model, args.checkpoint)
    opts = ExportOptions(encoder=args.encoder, quantize=args.quantize, opset=args.opset)
    try:
        result = export_onnx(sam, args.model, args.out, checkpoint_sha256=sha, options=opts)
        failed = False
        verification = result.manifest.verification
    except ExportError as exc:
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        from sam_engine.onnx_manifest import OnnxManifest

        verification = OnnxManifest.load(args.out).verification
        failed = True
    print(f"{'file':28} {'max|logit diff|':>16} {'min IoU':>8} {'mean IoU':>9} {'need':>5}  ok")
    for v in verification:
        print(f"{v.path:28} {v.max_abs_logit_diff:16.2e} {v.min_mask_iou:8.4f} "
              f"{v.mean_mask_iou:9.4f} {v.iou_threshold:5.2f}  {'yes' if v.passed else 'NO'}")
    if not failed:
        print(f"wrote {len(result.manifest.files)} models and manifest.json to {args.out}")
    return 1 if failed else 0
