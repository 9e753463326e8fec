"""`sam-inspect export-onnx --model NAME --out DIR`: ONNX graphs for the torch-free line runtime.

NAME is a SAM model id (vit_b, ...), or a learned model: learned-base, a tuned model
(NAME[@VERSION] in the registry) or a learned model folder; a learned model is exported to
learned.onnx (sam_engine.onnx.learned_export) and verified the same way.
`--finder NAME[@VERSION]|FOLDER` (instead of --model) exports a zero-click finder to finder.onnx
(sam_engine.onnx.finder_export), verified against PyTorch on three image shapes; the line tool
then finds defects without prompts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.shell.commands.models import add_checkpoint_check_args, checkpoint_check_options
from sam_engine.errors import CheckpointError, SamEngineError
from sam_engine.finder.finder import is_finder
from sam_engine.learned.registry import is_sam_delta
from sam_engine.onnx.export import (
    DEFAULT_OPSET,
    FORMATS,
    X_ANYLABELING_CONFIG,
    ExportError,
    ExportOptions,
    export_onnx,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-onnx", help="export SAM's decoder (and encoder), or a learned model, to ONNX, "
        "verified against PyTorch"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model",
                       help="SAM model id (vit_b, vit_h, ...), or a learned model: learned-base, "
                       "a tuned model NAME[@VERSION], or a learned model folder")
    which.add_argument("--finder", metavar="NAME[@VERSION]|FOLDER",
                       help="a zero-click finder (a tuned model of the registry or a finder "
                       "model folder): exported to finder.onnx for sam-inspect-line")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default: the installed one)")
    add_checkpoint_check_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--encoder", action="store_true",
                   help="also export our image encoder (format sam-inspect)")
    p.add_argument("--format", action="append", choices=FORMATS, dest="format",
                   help="what to write (repeatable; default sam-inspect): sam-inspect = the "
                   "line runtime's graphs; samexporter = its encoder convention "
                   "(encoder_float.onnx); x-anylabeling = that encoder plus "
                   f"{X_ANYLABELING_CONFIG}. Every format writes Meta's decoder_meta.onnx")
    p.add_argument("--quantize", action="store_true", help="also write dynamic-int8 copies")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help="ONNX opset (default %(default)s)")
    p.set_defaults(func=run)


def load_model(model_id: str, checkpoint: Path | None, **check_options):
    """(SAM model, the checkpoint's computed sha256) for the export; tests replace this.
    check_options: checkpoint_check_options' keywords (expected sha256, allow unverified)."""
    from sam_engine.weights.checkpoint import load_sam_checked

    loaded = load_sam_checked(model_id, checkpoint,
                              expected_sha256=check_options.get("checkpoint_sha256"),
                              allow_unverified=bool(check_options.get("allow_unverified")))
    return loaded.model, loaded.check.sha256


def learned_model_folder(spec: str) -> Path | None:
    """The learned model folder `spec` names (learned-base, a tuned NAME[@VERSION] of the
    registry, or a folder with a learned model's manifest), or None for a SAM model id."""
    from sam_engine.learned.registry import BASE_NAME, resolve, versions
    from sam_engine.learned.weights import MANIFEST_NAME
    from sam_engine.weights.checkpoint import KNOWN_ARCHES

    if spec in KNOWN_ARCHES:
        return None
    name = spec.partition("@")[0]
    if not (name == BASE_NAME or "@" in spec or versions(name)
            or (Path(spec).expanduser() / MANIFEST_NAME).is_file()):
        return None
    folder = resolve(spec)  # a clear error when a named model or version does not exist
    if not (folder / MANIFEST_NAME).is_file():
        raise CheckpointError(f"learned model {spec} is not installed: {folder} has no "
                              f"{MANIFEST_NAME} (train the base with `python -m "
                              "sam_engine.learned.base`, or name a tuned model)")
    return folder


def print_checks(verification) -> None:
    print(f"{'file':28} {'max|logit diff|':>16} {'min IoU':>8} {'mean IoU':>9} {'need':>5}  ok")
    for v in verification:
        print(f"{v.path:28} {v.max_abs_logit_diff:16.2e} {v.min_mask_iou:8.4f} "
              f"{v.mean_mask_iou:9.4f} {v.iou_threshold:5.2f}  {'yes' if v.passed else 'NO'}")


def run_learned(args: argparse.Namespace, folder: Path) -> int:
    """Export the learned model in `folder` (SAM's --checkpoint/--encoder/--quantize/--format
    do not apply to it)."""
    from sam_engine.onnx.learned_export import (
        LearnedExportError,
        LearnedExportOptions,
        export_learned,
    )
    from sam_engine.onnx.manifest import LearnedOnnxManifest

    sam_only = sam_only_flags(args)
    if sam_only:
        print(f"sam-inspect: error: {', '.join(sam_only)} apply to SAM models only; "
              f"{args.model} is a learned model", file=sys.stderr)
        return 2
    try:
        result = export_learned(folder, args.out, options=LearnedExportOptions(opset=args.opset))
        failed, verification = False, result.manifest.verification
    except LearnedExportError as exc:
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        failed, verification = True, LearnedOnnxManifest.load(args.out).verification
    print_checks(verification)
    if not failed:
        m = result.manifest
        print(f"wrote {m.files[0].path} ({m.model_id}, sha256 {m.files[0].sha256}) and "
              f"manifest.json to {args.out}")
    return 1 if failed else 0


def sam_only_flags(args: argparse.Namespace) -> list[str]:
    """The SAM-only options given (--checkpoint, --encoder, --quantize, --format)."""
    return [flag for flag, on in (("--checkpoint", args.checkpoint is not None),
                                  ("--encoder", args.encoder), ("--quantize", args.quantize),
                                  ("--format", bool(args.format))) if on]


def run_finder(args: argparse.Namespace) -> int:
    """Export the finder --finder names (registry.resolve: NAME, NAME@VERSION or a folder) to
    --out and print its check against PyTorch per image shape."""
    from sam_engine.learned.registry import resolve
    from sam_engine.onnx.finder_export import (
        FinderExportError,
        FinderExportOptions,
        describe_checks,
        export_finder,
    )
    from sam_engine.onnx.finder_runtime import FinderOnnxManifest

    sam_only = sam_only_flags(args)
    if sam_only:
        print(f"sam-inspect: error: {', '.join(sam_only)} apply to SAM models only; "
              f"{args.finder} is a finder", file=sys.stderr)
        return 2
    folder = resolve(args.finder)  # a clear error when a named model or version does not exist
    if not is_finder(folder):
        raise CheckpointError(f"{args.finder} ({folder}) is not a finder (its manifest has no "
                              "net kind \"finder\"): export prompt models with --model")
    try:
        result = export_finder(folder, args.out, options=FinderExportOptions(opset=args.opset))
        failed, manifest = False, result.manifest
    except FinderExportError as exc:
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        failed, manifest = True, FinderOnnxManifest.load(args.out)
    for v in manifest.verification:
        print(describe_checks(v))
    if not failed:
        f = manifest.files[0]
        print(f"wrote {f.path} ({manifest.model_id}, classes {', '.join(manifest.classes)}, "
              f"sha256 {f.sha256}) and manifest.json to {args.out}")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "finder", None):
        return run_finder(args)
    folder = learned_model_folder(args.model)
    if folder is not None and is_finder(folder):  # --model FINDER: what --finder does
        return run_finder(argparse.Namespace(**{**vars(args), "finder": args.model}))
    if folder is not None and is_sam_delta(folder):  # a tuned SAM: its base + the delta
        if args.checkpoint is not None:
            raise SamEngineError(f"{args.model} is a tuned SAM model: its base checkpoint is "
                                 "the one recorded in its manifest; drop --checkpoint")
        from sam_engine.factory import load_sam_delta

        delta = load_sam_delta(folder)
        sam, sha = delta.model, delta.manifest.weights_sha256
    elif folder is not None:
        return run_learned(args, folder)
    else:
        sam, sha = load_model(args.model, args.checkpoint, **checkpoint_check_options(args))
    formats = tuple(dict.fromkeys(args.format or ("sam-inspect",)))
    opts = ExportOptions(encoder=args.encoder, quantize=args.quantize, opset=args.opset,
                         formats=formats)
    try:
        result = export_onnx(sam, args.model, args.out, checkpoint_sha256=sha, options=opts)
        failed = False
        verification = result.manifest.verification
    except ExportError as exc:
        print(f"sam-inspect: error: {exc}", file=sys.stderr)
        from sam_engine.onnx.manifest import OnnxManifest

        verification = OnnxManifest.load(args.out).verification
        failed = True
    print_checks(verification)
    if not failed:
        print(f"wrote {len(result.manifest.files)} models and manifest.json to {args.out}")
        if "x-anylabeling" in formats:
            print(f"X-AnyLabeling: load {args.out / X_ANYLABELING_CONFIG} with "
                  "'Load custom model'")
    return 1 if failed else 0
