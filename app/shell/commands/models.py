"""`sam-inspect models list|download|verify`: the known SAM checkpoints and installing them."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

from sam_engine.errors import CheckpointError
from sam_engine.weights.checkpoint import (
    check_checkpoint,
    guess_arch,
    load_sam,
    read_state_dict,
)
from sam_engine.weights.download import download
from sam_engine.weights.registry import (
    ENV_MODELS,
    ModelSpec,
    default_download_dir,
    find_checkpoint,
    get_spec,
    installed,
    model_dirs,
    spec_for_file,
)

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, download and verify SAM checkpoints")
    p.set_defaults(func=run)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")

    msub.add_parser("list", help="known models, where each is installed, search folders")

    dl = msub.add_parser("download", help="download a model's checkpoint (resumes if cut off)")
    dl.add_argument("name", help="model id, e.g. vit_b")
    dl.add_argument("--dir", type=Path, help=f"target folder (default: {default_download_dir()})")
    dl.add_argument("--url", help="download from this URL instead (a mirror); still verified")
    dl.add_argument("--no-progress", action="store_true", help="no progress bar")

    vf = msub.add_parser("verify", help="check a checkpoint's size, format and full sha256")
    vf.add_argument("target", metavar="NAME|PATH", help="model id or checkpoint file")
    vf.add_argument("--load", action="store_true", help="also build the model and load it")
    vf.add_argument("--model", help="architecture to load PATH as (default: guessed)")
    vf.add_argument("--sha256", metavar="HEX",
                    help="expected sha256 of a custom checkpoint (default: PATH.sha256 if present)")


def add_checkpoint_check_args(parser: argparse.ArgumentParser) -> None:
    """--checkpoint-sha256 and --allow-unverified-checkpoint, for commands taking --checkpoint;
    pass checkpoint_check_options(args) on to sam_engine.factory.load_engine."""
    parser.add_argument("--checkpoint-sha256", metavar="HEX",
                        help="expected sha256 of a custom --checkpoint (default: PATH.sha256 "
                             "if present; official files are checked against the manifest)")
    parser.add_argument("--allow-unverified-checkpoint", action="store_true",
                        help="use a checkpoint whose sha256 differs from the expected one; "
                             "results record its real sha256 as unverified")


def checkpoint_check_options(args: argparse.Namespace) -> dict[str, object]:
    """load_engine keyword arguments from add_checkpoint_check_args' options."""
    return {"checkpoint_sha256": getattr(args, "checkpoint_sha256", None),
            "allow_unverified": bool(getattr(args, "allow_unverified_checkpoint", False))}


def run(args: argparse.Namespace) -> int:
    actions = {"download": run_download, "verify": run_verify}
    return actions.get(args.models_command, run_list)(args)


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _extra_cmd(spec: ModelSpec) -> str:
    return f"`pip install sam-inspect[{spec.extra or 'mobile'}]`"


def _extra_missing(spec: ModelSpec) -> bool:
    return spec.arch == "vit_t" and importlib.util.find_spec("mobile_sam") is None


def run_list(args: argparse.Namespace) -> int:
    rows = [("ID", "ARCH", "SIZE", "INSTALLED", "LICENCE")]
    notes = []
    for spec, path in installed():
        rows.append((spec.id, spec.arch, _size(spec.size_bytes),
                     str(path) if path else "not installed", spec.licence))
        if _extra_missing(spec):
            notes.append(f"{spec.id} also needs {_extra_cmd(spec)}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    for note in notes:
        print(f"note: {note}")
    print(f"\nSearch folders, first match wins (set {ENV_MODELS} to add yours):")
    for d in model_dirs():
        print(f"  {d}{'' if d.is_dir() else '  (does not exist)'}")
    print(f"Downloads go to: {default_download_dir()}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    spec = get_spec(args.name)
    existing = find_checkpoint(spec.id)
    if args.dir is None and existing is not None:
        check = check_checkpoint(existing, spec)
        print(f"{spec.id} is already installed: {existing} (sha256 {check.sha256}"
              f"{'' if check.verified else ', not in the manifest: unverified'})")
        return 0
    dest = (args.dir.expanduser() if args.dir else default_download_dir()) / spec.filename
    url = args.url or spec.url
    print(f"downloading {spec.id} ({_size(spec.size_bytes)}, licence {spec.licence}) "
          f"from {url}\n  to {dest}")
    download(url, dest, spec.size_bytes, spec.sha256, progress=not args.no_progress)
    print(f"installed {spec.id}: {dest}")
    if spec.sha256 is None:
        print("note: the manifest has no sha256 for this model, so the file was not checksummed")
    if _extra_missing(spec):
        print(f"note: {spec.id} also needs {_extra_cmd(spec)}")
    if args.dir is not None and args.dir.expanduser().resolve() not in [
        d.expanduser().resolve() for d in model_dirs()
    ]:
        print(f"note: {args.dir} is not searched; set {ENV_MODELS}={args.dir} "
              "or pass --checkpoint")
    return 0


def _resolve_target(target: str) -> tuple[ModelSpec | None, Path]:
    path = Path(target).expanduser()
    if path.exists() or any(sep in target for sep in ("/", "\\")) or path.suffix:
        return spec_for_file(path), path
    spec = get_spec(target)
    found = find_checkpoint(spec.id)
    if found is None:
        dirs = ", ".join(str(d) for d in model_dirs())
        raise CheckpointError(
            f"{spec.id} ({spec.filename}) is not installed in {dirs}; "
            f"run `sam-inspect models download {spec.id}` or pass the file's path"
        )
    return spec, found


def run_verify(args: argparse.Namespace) -> int:
    spec, path = _resolve_target(args.target)
    check = check_checkpoint(path, spec, expected_sha256=getattr(args, "sha256", None))
    sha = check.sha256
    if check.verified and spec is not None and check.expected_sha256 == spec.sha256:
        print(f"OK {path}: {spec.id}, size and sha256 match the manifest ({sha})")
    elif check.verified:
        print(f"OK {path}: sha256 {sha} matches {check.source}")
    elif spec is not None:
        print(f"{path}: {spec.id}, sha256 {sha} (the manifest has no sha256 to compare with: "
              "unverified)")
    else:
        print(f"{path}: readable checkpoint, sha256 {sha} (not a known model file and no "
              f"expected sha256 (--sha256 or {path.name}.sha256): unverified)")
    if args.load:
        model_id = args.model or (spec.id if spec is not None else None)
        if model_id is None:
            model_id = guess_arch(read_state_dict(path)).arch or "vit_b"
        load_sam(model_id, path, expected_sha256=getattr(args, "sha256", None))
        print(f"OK {path}: loads as {model_id}")
    return 0
