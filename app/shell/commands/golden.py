"""`sam-inspect golden`: learn what a good part looks like from a folder of good parts.

The photos of good parts of one part type (3 to 20 is typical) become a golden-sample model
(sam_engine.finder.anomaly): anything on a later part unlike all of them is found as an
unknown defect. Its threshold is calibrated on the good parts themselves, so they give no
finds. The model is written to the tuned-model registry and promoted for the recipe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sam_engine.errors import SamEngineError
from sam_engine.learned import registry


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "golden", help="learn good parts (golden samples) to find any unlike them",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--good", type=Path, required=True, metavar="DIR",
                   help="a folder of photos of good parts of one part type")
    p.add_argument("--recipe-name", required=True, metavar="PART",
                   help="the recipe (part type) that uses the model")
    p.add_argument("--name", help="the model's name in the registry (default: "
                   "<recipe>-golden)")
    p.set_defaults(func=run)


def read_good(folder: Path) -> list:
    """The images in folder (sorted by name); unreadable ones are named and skipped."""
    from sam_engine.image_io import load_image
    from sam_engine.learned.data import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise SamEngineError(f"{folder} is not a folder of good parts")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SamEngineError(f"no images in {folder} (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)})")
    out = []
    for path in paths:
        try:
            out.append(load_image(path))
        except (SamEngineError, OSError) as exc:
            print(f"warning: {path}: cannot read it ({exc}); skipped", file=sys.stderr)
    return out


def run(args: argparse.Namespace) -> int:
    from sam_engine.finder.anomaly import GoldenError, fit_golden

    good = read_good(args.good)
    try:
        model = fit_golden(good)
    except GoldenError as exc:
        raise SamEngineError(f"{args.good}: {exc}") from None
    name = args.name or f"{args.recipe_name}-golden"
    version = registry.next_version(name)
    folder = registry.model_dir(name, version)
    manifest = model.save(folder, name, version,
                          data={"source": str(args.good), "n_good": len(good)})
    registry.promote(args.recipe_name, manifest, f"golden samples: {len(good)} good parts in "
                     f"{args.good}", section="golden")
    print(f"learnt {manifest.model_id} from {len(good)} good parts in {args.good}")
    print(f"  anomaly threshold {model.threshold:.3f} (leave-one-out peaks "
          f"{', '.join(f'{p:.3f}' for p in model.calibration['peaks'])})")
    print(f"model folder: {folder}")
    print(f"recipe {args.recipe_name} now flags anything unlike these good parts")
    return 0
