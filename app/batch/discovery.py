"""Finding the images of a batch: recursive, by suffix, in a stable order."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from sam_engine.image_io import IMAGE_SUFFIXES


@dataclass(frozen=True)
class ImageFile:
    """An image to inspect: its path, its path relative to the input (posix), and the stem its
    outputs are named by (the relative path without suffix; with it when two files share one)."""

    path: Path
    rel: str
    out_stem: str


def find_images(root: Path, exclude: Path | None = None,
                patterns: tuple[str, ...] = ()) -> list[ImageFile]:
    """Every image file (jpg, jpeg, png, bmp, tif, tiff; any case) under root, sorted by relative
    path; hidden files and folders, everything under `exclude` (the output folder) and relative
    paths matching a glob in `patterns` (e.g. "gt/*") are left out. A single image file as root
    gives just that file."""
    root = Path(root)
    if root.is_file():
        return [ImageFile(root, root.name, root.stem)]
    if not root.is_dir():
        raise FileNotFoundError(f"input {root} is neither an image file nor a folder")
    skip = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and (skip is None or (here / d).resolve() != skip)
        )
        found += [here / f for f in filenames
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    rels = sorted((p.relative_to(root).as_posix(), p) for p in found)
    rels = [(r, p) for r, p in rels if not any(fnmatch.fnmatch(r, g) for g in patterns)]
    stems: dict[str, int] = {}
    for rel, _ in rels:
        stem = rel.rsplit(".", 1)[0]
        stems[stem] = stems.get(stem, 0) + 1
    out = []
    for rel, p in rels:
        stem = rel.rsplit(".", 1)[0]
        out.append(ImageFile(p, rel, stem if stems[stem] == 1 else rel.replace(".", "_")))
    return out
