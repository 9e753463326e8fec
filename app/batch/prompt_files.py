"""Reading prompt files from an upstream detector: our JSON, COCO boxes and YOLO txt.

Our JSON (`<stem>.json`, the samples' sidecar format): a list of defects, or {"defects": [...]};
each defect has "kind" (or "class"; default "defect"), and a "box" [x0, y0, x1, y1] in pixels
and/or "points" [[x, y], ...] with optional "labels" (1 positive, 0 negative); a single "point"
[x, y] is used only when there is neither a box nor points (the samples' sidecars give both a
box and an informational interior point).
COCO: one instances file (`images`, `annotations` with `bbox` [x, y, w, h] in pixels,
`categories`); images are matched by `file_name` (relative path or file name).
YOLO (`<stem>.txt`): one line per box, `class cx cy w h [confidence]`, normalised to 0..1; class
names from `classes.txt` (one per line) or `data.yaml` (`names`) in the prompt folder, else
`class_<n>`.
Every problem raises PromptFileError naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from app.inspection.recipe import PromptSpec
from sam_engine.errors import SamEngineError


class PromptFileError(SamEngineError, ValueError):
    """A prompt file cannot be read or is malformed."""


def _num_list(v, n: int | None, path: Path, what: str) -> tuple[float, ...]:
    ok = isinstance(v, list) and (n is None or len(v) == n) and all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in v
    )
    if not ok:
        raise PromptFileError(f"{path}: {what} must be a list of {n or 'some'} numbers; got {v!r}")
    return tuple(float(c) for c in v)


def read_json_prompts(path: Path) -> list[PromptSpec]:
    """Prompts from one of our JSON prompt files (module doc)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"{path}: cannot read prompt file: {exc}") from None
    items = data.get("defects") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise PromptFileError(f"{path}: expected a list of defects or {{\"defects\": [...]}}")
    out = []
    for i, d in enumerate(items):
        where = f"defects[{i}]"
        if not isinstance(d, dict):
            raise PromptFileError(f"{path}: {where} must be an object; got {d!r}")
        cls = d.get("class", d.get("kind", "defect"))
        if not isinstance(cls, str) or not cls:
            raise PromptFileError(f"{path}: {where}.kind must be a defect class name; got {cls!r}")
        box = _num_list(d["box"], 4, path, f"{where}.box") if "box" in d else None
        if box is not None and not (box[0] < box[2] and box[1] < box[3]):
            raise PromptFileError(f"{path}: {where}.box must be [x0, y0, x1, y1] with x0 < x1 "
                                  f"and y0 < y1; got {list(box)}")
        pts_raw = d.get("points")
        if pts_raw is None and box is None and "point" in d:
            pts_raw = [d["point"]]
        pts: tuple[tuple[float, float], ...] = ()
        if pts_raw is not None:
            if not isinstance(pts_raw, list):
                raise PromptFileError(f"{path}: {where}.points must be a list of [x, y]")
            pts = tuple(_num_list(p, 2, path, f"{where}.points") for p in pts_raw)
        labels = d.get("labels", [1] * len(pts))
        if not isinstance(labels, list) or len(labels) != len(pts) or any(
            lb not in (0, 1) for lb in labels
        ):
            raise PromptFileError(f"{path}: {where}.labels must be one 1 or 0 per point")
        if box is None and not pts:
            raise PromptFileError(f"{path}: {where} needs a \"box\" or \"points\"")
        out.append(PromptSpec(cls, box, pts, tuple(int(v) for v in labels)))
    return out


def yolo_class_names(folder: Path) -> list[str] | None:
    """Class names from classes.txt or data.yaml (`names`: list or {index: name}) in folder."""
    txt = folder / "classes.txt"
    if txt.is_file():
        return [ln.strip() for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
    yml = folder / "data.yaml"
    if yml.is_file():
        import yaml  # PyYAML (a dependency of ray and transformers); only for YOLO data.yaml

        try:
            names = (yaml.safe_load(yml.read_text(encoding="utf-8")) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as exc:
            raise PromptFileError(f"{yml}: cannot read class names: {exc}") from None
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
        raise PromptFileError(f"{yml}: expected `names:` as a list or a mapping")
    return None


def read_yolo_prompts(path: Path, names: list[str] | None) -> list[PromptSpec]:
    """Boxes from a YOLO txt file as prompts in the relative frame (clipped to the image)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"{path}: cannot read prompt file: {exc}") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) not in (5, 6):
                raise ValueError
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
            if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w <= 0 or h <= 0 or cls < 0:
                raise ValueError
        except ValueError:
            raise PromptFileError(
                f"{path}:{no}: expected `class cx cy w h [confidence]` (class an integer >= 0, "
                f"w and h > 0, normalised to 0..1); got {line.strip()!r}"
            ) from None
        if names is not None and cls >= len(names):
            raise PromptFileError(f"{path}:{no}: class {cls} but only {len(names)} class names")
        name = names[cls] if names is not None else f"class_{cls}"
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        out.append(PromptSpec(name, box, frame="relative"))
    return out


def read_coco_index(path: Path) -> dict[str, list[PromptSpec]]:
    """{file_name: box prompts} from a COCO instances file (bbox x, y, w, h in pixels)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cats = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
        names = {im["id"]: str(im["file_name"]) for im in data["images"]}
        out: dict[str, list[PromptSpec]] = {n: [] for n in names.values()}
        for i, a in enumerate(data["annotations"]):
            x, y, w, h = _num_list(a.get("bbox"), 4, path, f"annotations[{i}].bbox")
            if w <= 0 or h <= 0:
                raise PromptFileError(f"{path}: annotations[{i}].bbox has no area: {a['bbox']}")
            cls = cats.get(a.get("category_id"), f"class_{a.get('category_id')}")
            out[names[a["image_id"]]].append(PromptSpec(cls, (x, y, x + w, y + h)))
    except PromptFileError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PromptFileError(f"{path}: not a readable COCO instances file: {exc!r}") from None
    return out


def is_coco_file(path: Path) -> bool:
    """True for a JSON file whose top level has "images" and "annotations"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "images" in data and "annotations" in data
