"""`sam-inspect teach`: teach a recipe to find a defect class from accepted examples.

Each accepted defect mask of the class (from the inspection store, a folder of image + mask
pairs, or one image with its mask) is an example; a per-class probe on pixel features
(sam_engine.finder.fewshot) learns them, is written to the tuned-model registry and, with
--recipe-name, becomes that recipe's example model. More examples: teach again with them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from sam_engine.errors import SamEngineError
from sam_engine.learned import registry


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teach", help="teach zero-click finding of a defect class by accepted examples",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--class", dest="classes", action="append", required=True, metavar="C",
                   help="the defect class to learn (repeat for several)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", metavar="STORE", help="the inspection store (path or URL): its "
                     "accepted defects of the class")
    src.add_argument("--folder", type=Path, metavar="DIR",
                     help="images/ + masks/ (+ manifest.csv), as shared/data/defects")
    src.add_argument("--example", type=Path, metavar="IMAGE", help="one image (with --mask)")
    p.add_argument("--mask", type=Path, metavar="MASK",
                   help="with --example: the defect's mask (white on black, same size)")
    p.add_argument("--recipe", metavar="PART", help="with --db: only this recipe's inspections")
    p.add_argument("--dataset", help="with --folder: only this dataset or class of the manifest")
    p.add_argument("--max", type=int, metavar="N", help="at most N examples per class (the "
                   "first ones read)")
    p.add_argument("--name", help="the model's name in the registry (default: "
                   "<recipe>-examples, else examples-<class>)")
    p.add_argument("--recipe-name", metavar="PART",
                   help="promote the model for this recipe (default: --recipe, if given)")
    p.set_defaults(func=run)


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise SamEngineError(f"mask file not found: {path}")
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise SamEngineError(f"cannot read the mask {path} (not an image OpenCV decodes)")
    if m.shape != shape:
        raise SamEngineError(f"the mask {path} is {m.shape[1]}x{m.shape[0]} but its image is "
                             f"{shape[1]}x{shape[0]}")
    if not (m > 127).any():
        raise SamEngineError(f"the mask {path} is empty: mark the defect white on black")
    return m > 127


def read_examples(args: argparse.Namespace) -> tuple[list, str]:
    """(Examples of the wanted classes, a description of the source)."""
    from sam_engine.finder.fewshot import Example
    from sam_engine.image_io import load_image

    wanted = list(dict.fromkeys(args.classes))
    if args.example is not None:
        if args.mask is None:
            raise SamEngineError("--example IMAGE needs --mask MASK")
        if len(wanted) != 1:
            raise SamEngineError("--example teaches one class: give --class once")
        rgb = load_image(args.example)
        return [Example(rgb, _read_mask(args.mask, rgb.shape[:2]), wanted[0])], \
            str(args.example)
    if args.mask is not None:
        raise SamEngineError("--mask goes with --example IMAGE")
    if args.db:
        from app.tuning.sources import StoreFilter, read_store

        data = read_store(args.db, StoreFilter(args.recipe))
    else:
        from sam_engine.learned.data import read_folder

        data = read_folder(args.folder, dataset=args.dataset)
    for problem in data.problems:
        print(f"warning: {problem}", file=sys.stderr)
    missing = [c for c in wanted if c not in data.classes()]
    if missing:
        raise SamEngineError(f"{data.source} has no example of {', '.join(missing)}; its "
                             f"classes: {', '.join(data.classes()) or 'none'}")
    out, count = [], dict.fromkeys(wanted, 0)
    for im in data.images:
        for inst in im.instances:
            if inst.cls in count and (args.max is None or count[inst.cls] < args.max):
                others = [i.mask for i in im.instances if i is not inst and i.cls == inst.cls]
                ignore = np.logical_or.reduce(others) if others else None
                out.append(Example(im.rgb, inst.mask, inst.cls, ignore))
                count[inst.cls] += 1
    return out, data.source


def run(args: argparse.Namespace) -> int:
    from sam_engine.finder.fewshot import TeachError, teach

    if args.max is not None and args.max < 1:
        raise SamEngineError(f"--max must be at least 1; got {args.max}")
    if args.recipe and not args.db:
        raise SamEngineError("--recipe filters the store: it goes with --db (promote with "
                             "--recipe-name PART)")
    examples, source = read_examples(args)
    try:
        model = teach(examples)
    except TeachError as exc:
        raise SamEngineError(str(exc)) from None
    recipe = args.recipe_name or args.recipe
    # its own name: the recipe's name alone is its tuned prompt model's (`tune`)
    name = args.name or (f"{recipe}-examples" if recipe else
                         f"examples-{'-'.join(model.classes)}")
    version = registry.next_version(name)
    folder = registry.model_dir(name, version)
    manifest = model.save(folder, name, version, data={
        "source": source, "classes": list(model.classes), "n_examples": model.n_examples})
    print(f"taught {manifest.model_id} from {source}:")
    for cls in model.classes:
        print(f"  {cls:<24}{model.n_examples[cls]:>6} examples")
    print(f"model folder: {folder}")
    if recipe:
        registry.promote(recipe, manifest, f"taught from {sum(model.n_examples.values())} "
                         f"examples of {source}", section="examples")
        print(f"recipe {recipe} now finds {', '.join(model.classes)} by these examples")
    else:
        print("not promoted for any recipe (give --recipe-name PART)")
    return 0
