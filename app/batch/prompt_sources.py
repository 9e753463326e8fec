"""Where each image's prompts come from: the recipe, per-image prompt files, or automatic masks.

A source answers two questions per image: `locate` (which prompt file, and a digest of what
defines the prompts, so the resume ledger redoes an image whose prompts changed) and `load` (the
prompts as recipe PromptSpecs; PromptFileError for a bad file). Sources are plain picklable
objects so the Ray backend can ship them to its workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from app.batch.discovery import ImageFile
from app.batch.prompt_files import (
    PromptFileError,
    is_coco_file,
    read_coco_index,
    read_json_prompts,
    read_yolo_prompts,
    yolo_class_names,
)
from app.inspection.recipe import PromptSpec, Recipe

log = logging.getLogger(__name__)

_COCO_NAMES = ("annotations.json", "coco.json", "instances.json")


@dataclass(frozen=True)
class PromptRef:
    """The prompt file of one image (None when there is none) and a digest of its prompts."""

    path: str | None
    digest: str


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class RecipePrompts:
    """The recipe's fixed prompts, the same for every image."""

    recipe: Recipe
    kind: str = "recipe"

    def describe(self) -> dict:
        return {"kind": self.kind}  # the recipe text is hashed into the settings already

    def locate(self, image: ImageFile) -> PromptRef:
        return PromptRef(None, "")

    def load(self, image: ImageFile) -> list[PromptSpec]:
        return list(self.recipe.prompts)


@dataclass(frozen=True)
class AutoPrompts:
    """No prompts: the pipeline runs automatic mask generation instead."""

    kind: str = "auto"

    def describe(self) -> dict:
        return {"kind": self.kind}

    def locate(self, image: ImageFile) -> PromptRef:
        return PromptRef(None, "")

    def load(self, image: ImageFile) -> list[PromptSpec]:
        return []


@dataclass(frozen=True)
class FindPrompts:
    """No prompts: the pipeline finds the defects (app.finding) instead. models: the ids of the
    models the plan resolved, so a newly promoted finder redoes the images."""

    wanted: tuple[str, ...] = ()
    models: str = ""
    kind: str = "find"

    def describe(self) -> dict:
        return {"kind": self.kind, "wanted": list(self.wanted), "models": self.models}

    def locate(self, image: ImageFile) -> PromptRef:
        return PromptRef(None, "")

    def load(self, image: ImageFile) -> list[PromptSpec]:
        return []


@dataclass(frozen=True)
class FilePrompts:
    """Per-image prompt files under `folder` (module doc of prompt_files for the formats).

    For image a/b.png it looks for a/b.json, a/b.txt, then b.json, b.txt in the folder; a COCO
    file (`folder` itself, or annotations.json / coco.json / instances.json in it) answers for
    every image it lists. An image without a prompt file (or not listed in the COCO file) fails:
    nobody looked at it, so it gets no verdict; an image listed with no annotations has none."""

    folder: Path
    coco: dict[str, list[PromptSpec]] | None = field(default=None, repr=False)
    yolo_names: list[str] | None = None
    coco_path: str | None = None
    kind: str = "files"

    @classmethod
    def open(cls, path: Path) -> FilePrompts:
        path = Path(path)
        if path.is_file():
            if not is_coco_file(path):
                raise PromptFileError(f"{path}: --prompts takes a folder of prompt files or a "
                                      "COCO instances JSON file (with images and annotations)")
            return cls(path.parent, read_coco_index(path), None, str(path))
        if not path.is_dir():
            raise PromptFileError(f"prompt folder {path} does not exist")
        for name in _COCO_NAMES:
            if (path / name).is_file() and is_coco_file(path / name):
                return cls(path, read_coco_index(path / name), None, str(path / name))
        return cls(path, None, yolo_class_names(path))

    def describe(self) -> dict:
        return {"kind": self.kind, "yolo_names": self.yolo_names}

    def _coco_key(self, image: ImageFile) -> str | None:
        for name in (image.rel, Path(image.rel).name):
            if self.coco is not None and name in self.coco:
                return name
        return None

    def _file(self, image: ImageFile) -> Path | None:
        stem = image.rel.rsplit(".", 1)[0]
        base = Path(stem).name
        for cand in (f"{stem}.json", f"{stem}.txt", f"{base}.json", f"{base}.txt"):
            p = self.folder / cand
            if p.is_file():
                return p
        return None

    def locate(self, image: ImageFile) -> PromptRef:
        if self.coco is not None:
            key = self._coco_key(image)
            specs = [] if key is None else self.coco[key]
            text = json.dumps([(s.defect_class, s.box) for s in specs])
            return PromptRef(self.coco_path if key is not None else None, _digest(text.encode()))
        p = self._file(image)
        if p is None:
            return PromptRef(None, "")
        try:
            return PromptRef(str(p), _digest(p.read_bytes()))
        except OSError as exc:
            raise PromptFileError(f"{p}: cannot read prompt file: {exc}") from None

    def unmatched(self, images: list[ImageFile]) -> list[str]:
        """The COCO file's image names that match none of `images` (sorted; [] without COCO)."""
        if self.coco is None:
            return []
        seen = {name for image in images for name in (image.rel, Path(image.rel).name)}
        return sorted(n for n in self.coco if n not in seen)

    def load(self, image: ImageFile) -> list[PromptSpec]:
        if self.coco is not None:
            key = self._coco_key(image)
            if key is None:
                raise PromptFileError(f"{image.path}: not listed in {self.coco_path}: no prompts, "
                                      "so not inspected; add it to the COCO file")
            return list(self.coco[key])
        p = self._file(image)
        if p is None:
            stem = Path(image.rel).with_suffix("")
            raise PromptFileError(f"{image.path}: no prompt file ({stem}.json or {stem}.txt) in "
                                  f"{self.folder}, so not inspected; add one (an empty list "
                                  "for no defects)")
        if p.suffix == ".txt":
            return read_yolo_prompts(p, self.yolo_names)
        return read_json_prompts(p)


PromptSource = RecipePrompts | FilePrompts | AutoPrompts | FindPrompts
