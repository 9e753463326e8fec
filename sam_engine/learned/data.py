"""Training data for tuning: images with their defect instances, read from folders or COCO.

Every source gives TrainImage values: the RGB image, its instances (class + bool mask), a
content digest and a group name (images that belong together, such as NEU-Seg's four
rotations of one photo, share a group and so always land on the same side of the split).
Problems with single files (a missing or empty mask, a mask whose size differs from its image)
are collected as messages naming the file; the rest is read. A source with nothing usable
raises DataError saying what was looked for.

split() divides images by a hash of their group (or content), so the same data always gives
the same split, whatever order it was read in.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sam_engine.errors import SamEngineError
from sam_engine.image_io import image_digest, load_image

MIN_AREA = 20  # instances smaller than this many pixels are not trained on
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(SamEngineError):
    """Training data that cannot be used; the message says which file and what to do."""


@dataclass(frozen=True)
class Instance:
    """One defect: its class and the bool mask of its pixels (full image size)."""

    cls: str
    mask: np.ndarray = field(repr=False)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 exclusive."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass(frozen=True)
class TrainImage:
    """An image with its instances. digest: content hash of the pixels; group: split unit."""

    rgb: np.ndarray = field(repr=False)
    instances: tuple[Instance, ...]
    digest: str
    group: str
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


@dataclass
class Dataset:
    """Images read from one source, and a message per file that could not be used."""

    images: list[TrainImage]
    problems: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def n_instances(self) -> int:
        return sum(len(im.instances) for im in self.images)

    def classes(self) -> list[str]:
        return sorted({i.cls for im in self.images for i in im.instances})

    def digest(self) -> str:
        """sha256 over the images' digests and their instances (class + mask bytes), sorted."""
        h = hashlib.sha256()
        for im in sorted(self.images, key=lambda t: t.digest):
            h.update(im.digest.encode())
            for inst in im.instances:
                h.update(inst.cls.encode())
                h.update(np.packbits(inst.mask).tobytes())
        return h.hexdigest()


def components(mask: np.ndarray, cls: str, min_area: int = MIN_AREA) -> list[Instance]:
    """The 8-connected components of a bool mask, each an Instance (small ones dropped)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), 8)
    return [Instance(cls, lab == i) for i in range(1, n)
            if stats[i, cv2.CC_STAT_AREA] >= min_area]


def make_image(rgb: np.ndarray, instances: Iterable[Instance], group: str | None = None,
               source: str = "") -> TrainImage:
    digest = image_digest(rgb)
    return TrainImage(rgb, tuple(instances), digest, group or digest, source)


# ------------------------------------------------------------------ folder of image + mask pairs
def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise DataError(f"cannot read mask {path}")
    return m > 127


def _groups_of(folder: Path) -> dict[str, str]:
    """stem -> group from rotation_groups.json files (NEU-Seg's layout) under folder."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("rotation_groups.json")):
        try:
            groups = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable JSON object of groups ({exc})") from None
        if not isinstance(groups, dict):
            raise DataError(f"{path}: expected an object mapping image stems to groups")
        for stem, members in groups.items():
            first = min(map(str, members)) if members else stem
            key = f"{path.parent.name}/{stem.split('_')[0]}/{first}"
            out[stem] = key
    return out


def read_folder(folder: str | Path, *, dataset: str | None = None,
                min_area: int = MIN_AREA) -> Dataset:
    """Images and masks laid out like shared/data/defects.

    With a manifest.csv (dataset, image_path, mask_path, class): its rows (optionally one
    dataset or class). Without one: every images/<stem>.* paired with masks/<stem>.png, class
    "defect", searched recursively. Each mask's 8-connected components are the instances.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give a folder with images/ and masks/")
    pairs: list[tuple[Path, Path, str, str]] = []  # image, mask, class, dataset
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as fh:
            for rec in csv.DictReader(fh):
                ds = rec.get("dataset", "") or ""
                if dataset is not None and dataset not in (ds, rec.get("class")):
                    continue
                pairs.append((folder / rec["image_path"], folder / rec["mask_path"],
                              rec.get("class") or "defect", ds))
    else:
        for img_dir in sorted(p for p in folder.rglob("images") if p.is_dir()):
            for img in sorted(img_dir.iterdir()):
                if img.suffix.lower() in IMAGE_SUFFIXES:
                    pairs.append((img, img_dir.parent / "masks" / f"{img.stem}.png", "defect",
                                  img_dir.parent.name))
    if not pairs and manifest.is_file():
        raise DataError(f"{manifest} has no rows" + (
            f" of dataset or class {dataset!r}" if dataset is not None else ""))
    if not pairs:
        raise DataError(f"no image/mask pairs in {folder}: expected manifest.csv or "
                        "images/<name>.jpg with masks/<name>.png")
    groups = _groups_of(folder)
    data = Dataset([], source=str(folder))
    for img_path, mask_path, cls, ds in pairs:
        try:
            rgb = load_image(img_path)
        except (SamEngineError, OSError) as exc:
            data.problems.append(f"{img_path}: cannot read the image ({exc}); skipped")
            continue
        if not mask_path.is_file():
            data.problems.append(f"{img_path}: its mask {mask_path} is missing; skipped")
            continue
        try:
            mask = _read_mask(mask_path)
        except DataError as exc:
            data.problems.append(f"{exc}; skipped")
            continue
        if mask.shape != rgb.shape[:2]:
            data.problems.append(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{img_path.name} is {rgb.shape[1]}x{rgb.shape[0]}; skipped")
            continue
        inst = components(mask, cls, min_area)
        if not inst:
            data.problems.append(f"{mask_path}: empty mask (no defect of {min_area} px or "
                                 "more); skipped")
            continue
        group = groups.get(img_path.stem)
        group = f"{ds}:{group}" if group else None
        data.images.append(make_image(rgb, inst, group, str(img_path)))
    if not data.images:
        raise DataError(f"no usable image/mask pair in {folder}:\n  " + "\n  ".join(
            data.problems[:10]))
    return data


# ------------------------------------------------------------------ COCO instances file
def read_coco(path: str | Path, image_root: str | Path | None = None,
              min_area: int = MIN_AREA) -> Dataset:
    """A COCO instances file (polygons or RLE); images found relative to image_root (default:
    the file's folder)."""
    from pycocotools import mask as mask_utils

    path = Path(path)
    try:
        coco = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable COCO JSON file ({exc})") from None
    if not isinstance(coco, dict) or not {"images", "annotations"} <= coco.keys():
        raise DataError(f"{path}: a COCO instances file needs 'images' and 'annotations'")
    root = Path(image_root) if image_root else path.parent
    cats = {c["id"]: str(c.get("name", c["id"])) for c in coco.get("categories", [])}
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    data = Dataset([], source=str(path))
    for info in coco["images"]:
        anns = by_image.get(info["id"], [])
        if not anns:
            continue
        img_path = root / info["file_name"]
        try:
            rgb = load_image(img_path)
        except (SamEngineError, OSError) as exc:
            data.problems.append(f"{img_path}: cannot read the image ({exc}); skipped")
            continue
        h, w = rgb.shape[:2]
        if (info.get("height"), info.get("width")) not in ((h, w), (None, None)):
            data.problems.append(f"{path}: image {info['file_name']} is {w}x{h} but the file "
                                 f"says {info.get('width')}x{info.get('height')}; skipped")
            continue
        inst = []
        for a in anns:
            seg = a.get("segmentation")
            if not seg:
                data.problems.append(f"{path}: annotation {a.get('id')} has no segmentation; "
                                     "skipped")
                continue
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            m = mask_utils.decode(rle).astype(bool)
            if m.shape != (h, w):
                data.problems.append(f"{path}: annotation {a.get('id')} mask size differs from "
                                     "its image; skipped")
                continue
            if np.count_nonzero(m) < min_area:
                data.problems.append(f"{path}: annotation {a.get('id')} is empty or under "
                                     f"{min_area} px; skipped")
                continue
            inst.append(Instance(cats.get(a.get("category_id"), "defect"), m))
        if inst:
            data.images.append(make_image(rgb, inst, source=str(img_path)))
    if not data.images:
        raise DataError(f"no usable annotated image in {path}" + (
            ":\n  " + "\n  ".join(data.problems[:10]) if data.problems else ""))
    return data


# ------------------------------------------------------------------ the split
def held_out_fraction(group: str, salt: str = "") -> float:
    """A group's place in [0, 1): the first 8 bytes of sha256(salt + group)."""
    return int(hashlib.sha256((salt + group).encode()).hexdigest()[:16], 16) / 2.0**64


def split(images: list[TrainImage], held_out: float = 0.2,
          salt: str = "") -> tuple[list[TrainImage], list[TrainImage]]:
    """(train, held_out) by group hash; deterministic and independent of order."""
    if not 0.0 < held_out < 1.0:
        raise DataError(f"the held-out share must lie between 0 and 1; got {held_out}")
    train, test = [], []
    for im in images:
        (test if held_out_fraction(im.group, salt) < held_out else train).append(im)
    return train, test
