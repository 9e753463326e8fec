"""Inspection recipes: one TOML file per part type (schema_version 1), read into typed dataclasses.

A recipe names the part and its version, the calibration, an optional datum, lot sampling
(inspection level, AQL), forbidden zones, the defect classes with their tolerances, prompts for
batch/line runs, and optionally the model it must be inspected with ([model]: name and weights
sha256). See samples/recipes/demo_part.toml. Every error names the file, the line and the
field at fault (RecipeError). Each section has its own parser returning its typed value
(PartInfo, CalibrationSpec, Datum, LotPlan, Zone, ClassRule, PromptSpec, ModelPin), and
parse_recipe composes them.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage.draw import polygon2mask

from app.inspection.measure import FIELD_OF_VIEW_MM, Calibration, Datum
from app.inspection.sampling import AQL_VALUES, INSPECTION_LEVELS
from sam_engine.errors import SamEngineError
from sam_engine.prompts import Prompts

SCHEMA_VERSION = 1


class RecipeError(SamEngineError, ValueError):
    """A recipe cannot be read or is invalid; names the file, line and field at fault."""

    def __init__(self, path: str, line: int | None, field: str, problem: str) -> None:
        self.path, self.line, self.field, self.problem = path, line, field, problem
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


@dataclass(frozen=True)
class Zone:
    """A forbidden zone in image pixels: a polygon (a box is stored as its 4 corners)."""

    name: str
    polygon: tuple[tuple[float, float], ...]

    def mask(self, image_size: tuple[int, int]) -> np.ndarray:
        """Bool (H, W) mask of the pixels whose centres lie in the zone."""
        xy = np.asarray(self.polygon, dtype=np.float64) - 0.5  # skimage: pixel centres at integers
        return polygon2mask(image_size, xy[:, ::-1])


@dataclass(frozen=True)
class ClassRule:
    """Tolerances of one defect class; None means no limit. Lengths in mm need a calibration."""

    name: str
    description: str = ""
    max_count: int | None = None
    max_area_mm2: float | None = None
    max_length_mm: float | None = None
    max_width_mm: float | None = None
    min_edge_distance_mm: float | None = None
    min_datum_distance_mm: float | None = None
    max_area_px: float | None = None
    max_length_px: float | None = None
    max_width_px: float | None = None
    forbidden_zones: tuple[str, ...] = ()
    min_score: float = 0.0  # findings scored below this are ignored by the verdict


@dataclass(frozen=True)
class LotPlan:
    """Attribute sampling for lots: MIL-STD-105E / ISO 2859-1 normal inspection."""

    inspection_level: str = "II"
    aql: float = 1.0


PROMPT_FRAMES = ("pixels", "relative", "fiducial")


@dataclass(frozen=True)
class PromptSpec:
    """A prompt for batch/line runs for one defect class.

    frame: "pixels" (image pixels, the default), "relative" (fractions 0..1 of the image width
    and height, for parts photographed at several resolutions) or "fiducial" (pixel offsets from
    the centroid of the fiducial segmented in calibration.fiducial_box, for parts that shift).
    """

    defect_class: str
    box: tuple[float, float, float, float] | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    frame: str = "pixels"

    def to_prompts(
        self,
        image_size: tuple[int, int] | None = None,
        fiducial_xy: tuple[float, float] | None = None,
    ) -> Prompts:
        """Prompts in image pixels. "relative" needs image_size (H, W); "fiducial" needs the
        fiducial's centroid xy. With image_size, boxes and points are clipped to the image."""
        box = None if self.box is None else np.asarray(self.box, dtype=np.float64)
        pts = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        if self.frame == "relative":
            if image_size is None:
                raise ValueError("a prompt in the relative frame needs the image size")
            scale = np.array([image_size[1], image_size[0]], dtype=np.float64)
            pts = pts * scale
            box = None if box is None else box * np.tile(scale, 2)
        elif self.frame == "fiducial":
            if fiducial_xy is None:
                raise ValueError("a prompt in the fiducial frame needs the fiducial's position")
            off = np.asarray(fiducial_xy, dtype=np.float64)
            pts = pts + off
            box = None if box is None else box + np.tile(off, 2)
        if image_size is not None:
            h, w = image_size
            pts = np.clip(pts, 0, [w, h])
            box = None if box is None else np.clip(box, 0, [w, h, w, h])
        return Prompts(
            points=pts if self.points else None,
            labels=np.asarray(self.labels, dtype=np.int64) if self.points else None,
            boxes=None if box is None else box[None],
        )


@dataclass(frozen=True)
class PartInfo:
    """The [part] table: which part type and recipe version this is."""

    name: str
    version: str
    description: str = ""


@dataclass(frozen=True)
class CalibrationSpec:
    """The [calibration] table: a fixed scale (mm_per_px) or a fiducial of known diameter found
    in fiducial_box, and the plausible field of view; `calibration.mm_per_px` is None for a
    fiducial (the scale comes from each image) or when the recipe is not calibrated."""

    calibration: Calibration
    fiducial_diameter_mm: float | None = None
    fiducial_box: tuple[float, float, float, float] | None = None

    @property
    def calibrated(self) -> bool:
        """Whether limits in mm can be checked (a scale or a fiducial is given)."""
        return self.calibration.mm_per_px is not None or self.fiducial_diameter_mm is not None


@dataclass(frozen=True)
class ModelPin:
    """The [model] table: the model a recipe must be inspected with and its weights' sha256.

    name: learned-base, a tuned model NAME@VERSION (or NAME) or a SAM id (vit_b, ...)."""

    name: str
    sha256: str
    line: int | None = field(default=None, compare=False)  # where [model] is, for messages


@dataclass(frozen=True)
class Recipe:
    path: str
    schema_version: int
    name: str
    version: str
    description: str
    calibration: Calibration
    fiducial_diameter_mm: float | None
    fiducial_box: tuple[float, float, float, float] | None
    datum: Datum | None
    lot: LotPlan | None
    zones: tuple[Zone, ...]
    classes: tuple[ClassRule, ...]
    prompts: tuple[PromptSpec, ...]
    model: ModelPin | None = None

    def calibrate(self, fiducial_mask: np.ndarray | None = None) -> Calibration:
        """The image scale: mm_per_px from the recipe, or from the segmented fiducial (the mask of
        the object in fiducial_box) when the recipe calibrates by a fiducial."""
        if self.fiducial_diameter_mm is None:
            return self.calibration
        if fiducial_mask is None:
            raise RecipeError(
                self.path,
                None,
                "calibration",
                "this recipe calibrates by a fiducial: segment it first",
            )
        cal = Calibration.from_fiducial(fiducial_mask, self.fiducial_diameter_mm)
        return Calibration(cal.mm_per_px, self.calibration.field_of_view_mm)

    def rule(self, defect_class: str) -> ClassRule | None:
        return next((c for c in self.classes if c.name == defect_class), None)

    def zone(self, name: str) -> Zone:
        return next(z for z in self.zones if z.name == name)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)


# ---------------------------------------------------------------- locating keys in the TOML text

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*="""
)


def _split_key(key: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_\-]+)', key)
    return [a or b or c for a, b, c in parts]


def find_line(text: str, path: tuple) -> int | None:
    """Line (1-based) where the key at `path` (names and array indices) is defined in TOML `text`;
    the line of its closest enclosing table when the key itself is not written out."""
    target = tuple(path)
    best, best_len = None, 0
    table: tuple = ()
    counts: dict[tuple, int] = {}
    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        h = _HEADER.match(line)
        if h:
            names = tuple(_split_key(h.group(2)))
            if h.group(1) == "[[":
                idx = counts.get(names, -1) + 1
                counts[names] = idx
                table = (*names, idx)
            else:
                table = names
            here = table
        else:
            k = _KEY.match(line)
            if not k:
                continue
            here = (*table, *_split_key(k.group(1)))
        n = len(here)
        if here == target:
            return no
        if n > best_len and target[:n] == here:
            best, best_len = no, n
    return best


# ---------------------------------------------------------------- validation


class _Reader:
    """Typed access to the parsed TOML that raises RecipeError with file, line and field."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, where: tuple, problem: str) -> RecipeError:
        field = ".".join(f"[{p}]" if isinstance(p, int) else p for p in where).replace(".[", "[")
        return RecipeError(self.path, find_line(self.text, where), field, problem)

    def table(self, data: dict, where: tuple, allowed: set[str]) -> dict:
        if not isinstance(data, dict):
            raise self.fail(where, f"must be a table; got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                raise self.fail(
                    (*where, key), f"unknown key; allowed here: {', '.join(sorted(allowed))}"
                )
        return data

    def number(self, data: dict, where: tuple, key: str, *, positive=False, integer=False):
        if key not in data:
            return None
        v = data[key]
        kind = "an integer" if integer else "a number"
        if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
            raise self.fail((*where, key), f"must be {kind}; got {v!r}")
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise self.fail(
                (*where, key), f"must be {kind} {'> 0' if positive else '>= 0'}; got {v!r}"
            )
        return v

    def string(self, data: dict, where: tuple, key: str, default: str | None = None) -> str:
        if key not in data:
            if default is None:
                raise self.fail(where, f"missing required key '{key}'")
            return default
        v = data[key]
        if not isinstance(v, str) or (default is None and not v.strip()):
            raise self.fail((*where, key), f"must be a non-empty string; got {v!r}")
        return v

    def points(self, v, where: tuple, n: int | None = None, min_n: int = 1) -> tuple:
        ok = isinstance(v, list) and all(
            isinstance(p, list)
            and len(p) == 2
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p)
            for p in v
        )
        if not ok or len(v) < min_n or (n is not None and len(v) != n):
            count = f"{n}" if n is not None else f"at least {min_n}"
            raise self.fail(where, f"must be a list of {count} [x, y] pairs in pixels; got {v!r}")
        return tuple((float(x), float(y)) for x, y in v)

    def box(self, v, where: tuple) -> tuple[float, float, float, float]:
        ok = (
            isinstance(v, list)
            and len(v) == 4
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in v)
        )
        if not ok or not (v[0] < v[2] and v[1] < v[3]):
            raise self.fail(where, f"must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; got {v!r}")
        return tuple(float(c) for c in v)


_TOP = {"schema_version", "part", "calibration", "datum", "lot", "zones", "classes", "prompts",
        "model"}
_RULE_NUMBERS = (
    "max_area_mm2",
    "max_length_mm",
    "max_width_mm",
    "min_edge_distance_mm",
    "min_datum_distance_mm",
    "max_area_px",
    "max_length_px",
    "max_width_px",
)


# ---------------------------------------------------------------- one parser per section


def _parse_toml(text: str, path: str) -> dict:
    """The TOML document; a syntax error is reported with the line tomllib names."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RecipeError(path, int(m.group(1)) if m else None, "", f"TOML syntax: {exc}") from None


def _schema_version(r: _Reader, data: dict) -> int:
    """schema_version: required, and the one this program reads."""
    version = data.get("schema_version")
    if version is None:
        raise RecipeError(
            r.path, 1, "schema_version", f"missing; add 'schema_version = {SCHEMA_VERSION}'"
        )
    if version != SCHEMA_VERSION:
        raise r.fail(
            ("schema_version",),
            f"unsupported version {version!r}; this program reads {SCHEMA_VERSION}",
        )
    return version


def _part(r: _Reader, data: dict) -> PartInfo:
    """[part]: name and version required, description optional."""
    if "part" not in data:
        raise RecipeError(r.path, None, "part", "missing table [part] with name and version")
    where = ("part",)
    part = r.table(data["part"], where, {"name", "version", "description"})
    return PartInfo(
        name=r.string(part, where, "name"),
        version=r.string(part, where, "version"),
        description=r.string(part, where, "description", default=""),
    )


def _fiducial(
    r: _Reader, cal: dict, mm_per_px: float | None
) -> tuple[float | None, tuple[float, float, float, float] | None]:
    """calibration.fiducial_diameter_mm and fiducial_box: both or neither, and not with a fixed
    mm_per_px."""
    diameter = r.number(cal, ("calibration",), "fiducial_diameter_mm", positive=True)
    box = (
        r.box(cal["fiducial_box"], ("calibration", "fiducial_box"))
        if "fiducial_box" in cal
        else None
    )
    if mm_per_px is not None and diameter is not None:
        raise r.fail(
            ("calibration", "fiducial_diameter_mm"), "give mm_per_px or a fiducial, not both"
        )
    if (diameter is None) != (box is None):
        raise r.fail(
            ("calibration",), "a fiducial needs both fiducial_diameter_mm and fiducial_box"
        )
    return diameter, box


def _field_of_view(r: _Reader, cal: dict) -> tuple[float, float]:
    """calibration.field_of_view_mm = [lo, hi]: the plausible length in mm of a photo's longer
    side (FIELD_OF_VIEW_MM when not given)."""
    if "field_of_view_mm" not in cal:
        return FIELD_OF_VIEW_MM
    v = cal["field_of_view_mm"]
    ok = (
        isinstance(v, list)
        and len(v) == 2
        and all(
            isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in v
        )
        and 0 < v[0] < v[1]
    )
    if not ok:
        raise r.fail(
            ("calibration", "field_of_view_mm"),
            f"must be [lo, hi] in mm with 0 < lo < hi; got {v!r}",
        )
    return float(v[0]), float(v[1])


def _calibration(r: _Reader, data: dict) -> CalibrationSpec:
    """[calibration] (optional): mm_per_px or a fiducial, and field_of_view_mm."""
    cal = r.table(
        data.get("calibration", {}),
        ("calibration",),
        {"mm_per_px", "fiducial_diameter_mm", "fiducial_box", "field_of_view_mm"},
    )
    mm_per_px = r.number(cal, ("calibration",), "mm_per_px", positive=True)
    diameter, box = _fiducial(r, cal, mm_per_px)
    return CalibrationSpec(Calibration(mm_per_px, _field_of_view(r, cal)), diameter, box)


def _datum(r: _Reader, data: dict) -> Datum | None:
    """[datum] (optional): a point or a line in image pixels."""
    if "datum" not in data:
        return None
    d = r.table(data["datum"], ("datum",), {"kind", "points"})
    kind = r.string(d, ("datum",), "kind")
    if kind not in ("point", "line"):
        raise r.fail(("datum", "kind"), f"must be 'point' or 'line'; got {kind!r}")
    if "points" not in d:
        raise r.fail(("datum",), "missing required key 'points'")
    pts = r.points(d["points"], ("datum", "points"), n=1 if kind == "point" else 2)
    if kind == "line" and pts[0] == pts[1]:
        raise r.fail(("datum", "points"), "a line needs two distinct points")
    return Datum(kind, pts)


def _lot(r: _Reader, data: dict) -> LotPlan | None:
    """[lot] (optional): sampling by inspection level (default II) and a table AQL."""
    if "lot" not in data:
        return None
    lt = r.table(data["lot"], ("lot",), {"inspection_level", "aql"})
    level = r.string(lt, ("lot",), "inspection_level", default="II")
    if level not in INSPECTION_LEVELS:
        raise r.fail(
            ("lot", "inspection_level"),
            f"must be one of {', '.join(INSPECTION_LEVELS)}; got {level!r}",
        )
    aql = r.number(lt, ("lot",), "aql", positive=True)
    if aql is None:
        raise r.fail(("lot",), "missing required key 'aql'")
    if not any(math.isclose(aql, a) for a in AQL_VALUES):
        raise r.fail(
            ("lot", "aql"),
            f"must be a table AQL ({', '.join(f'{a:g}' for a in AQL_VALUES)}); got {aql!r}",
        )
    return LotPlan(level, float(aql))


def _zone(r: _Reader, z: dict, where: tuple, taken: set[str]) -> Zone:
    """One [[zones]] entry: a name not yet taken and a box or a polygon."""
    r.table(z, where, {"name", "box", "polygon"})
    name = r.string(z, where, "name")
    if name in taken:
        raise r.fail((*where, "name"), f"zone {name!r} is defined twice")
    if ("box" in z) == ("polygon" in z):
        raise r.fail(where, "give exactly one of box = [x0, y0, x1, y1] or polygon = [[x, y], ...]")
    if "box" in z:
        x0, y0, x1, y1 = r.box(z["box"], (*where, "box"))
        return Zone(name, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    return Zone(name, r.points(z["polygon"], (*where, "polygon"), min_n=3))


def _zones(r: _Reader, data: dict) -> tuple[Zone, ...]:
    """[[zones]] (optional): the forbidden zones, in file order."""
    raw = data.get("zones", [])
    if not isinstance(raw, list):
        raise r.fail(("zones",), "must be an array of tables: write each zone as [[zones]]")
    zones: list[Zone] = []
    for i, z in enumerate(raw):
        zones.append(_zone(r, z, ("zones", i), {zz.name for zz in zones}))
    return tuple(zones)


def _class_rule(
    r: _Reader, name: str, c: dict, calibrated: bool, zone_names: set[str]
) -> ClassRule:
    """One [classes.NAME] table: limits (mm ones need a calibration), zones, min_score."""
    where = ("classes", name)
    r.table(c, where, {*_RULE_NUMBERS, "max_count", "forbidden_zones", "min_score", "description"})
    nums = {k: r.number(c, where, k) for k in _RULE_NUMBERS}
    if not calibrated:
        for k, v in nums.items():
            if v is not None and k.endswith(("_mm", "_mm2")):
                raise r.fail(
                    (*where, k), "a limit in mm needs [calibration] mm_per_px or a fiducial"
                )
    fz = c.get("forbidden_zones", [])
    if not isinstance(fz, list) or not all(isinstance(s, str) for s in fz):
        raise r.fail((*where, "forbidden_zones"), f"must be a list of zone names; got {fz!r}")
    for zn in fz:
        if zn not in zone_names:
            known = ", ".join(sorted(zone_names)) or "none defined"
            raise r.fail((*where, "forbidden_zones"), f"unknown zone {zn!r} (zones: {known})")
    min_score = r.number(c, where, "min_score")
    if min_score is not None and min_score > 1:
        raise r.fail((*where, "min_score"), f"must be between 0 and 1; got {min_score!r}")
    return ClassRule(
        name=name,
        description=r.string(c, where, "description", default=""),
        max_count=r.number(c, where, "max_count", integer=True),
        forbidden_zones=tuple(fz),
        min_score=float(min_score or 0.0),
        **{k: None if v is None else float(v) for k, v in nums.items()},
    )


def _classes(
    r: _Reader, data: dict, calibrated: bool, zone_names: set[str]
) -> tuple[ClassRule, ...]:
    """[classes.*]: at least one defect class."""
    raw = data.get("classes", {})
    r.table(raw, ("classes",), set(raw) if isinstance(raw, dict) else set())
    if not raw:
        raise r.fail(("classes",), "define at least one defect class, e.g. [classes.scratch]")
    return tuple(_class_rule(r, name, c, calibrated, zone_names) for name, c in raw.items())


def _prompt(
    r: _Reader,
    p: dict,
    where: tuple,
    class_names: set[str],
    fiducial_box: tuple[float, float, float, float] | None,
) -> PromptSpec:
    """One [[prompts]] entry: a known class, a frame, a box and/or points with labels."""
    r.table(p, where, {"class", "box", "points", "labels", "frame"})
    pclass = r.string(p, where, "class")
    frame = r.string(p, where, "frame", default="pixels")
    if frame not in PROMPT_FRAMES:
        raise r.fail((*where, "frame"), f"must be one of {', '.join(PROMPT_FRAMES)}; got {frame!r}")
    if frame == "fiducial" and fiducial_box is None:
        raise r.fail((*where, "frame"), "the fiducial frame needs [calibration] fiducial_box")
    if pclass not in class_names:
        raise r.fail(
            (*where, "class"),
            f"unknown class {pclass!r} (classes: {', '.join(sorted(class_names))})",
        )
    box = r.box(p["box"], (*where, "box")) if "box" in p else None
    pts = r.points(p["points"], (*where, "points")) if "points" in p else ()
    labels = p.get("labels", [1] * len(pts))
    if (
        not isinstance(labels, list)
        or len(labels) != len(pts)
        or any(lb not in (0, 1) for lb in labels)
    ):
        raise r.fail(
            (*where, "labels"),
            f"must be one 1 (positive) or 0 (negative) per point; got {labels!r}",
        )
    if box is None and not pts:
        raise r.fail(where, "a prompt needs a box and/or points")
    if frame == "relative" and any(
        not 0 <= c <= 1 for c in (*(box or ()), *(v for pt in pts for v in pt))
    ):
        raise r.fail(where, "relative coordinates must lie between 0 and 1")
    return PromptSpec(pclass, box, pts, tuple(int(lb) for lb in labels), frame)


def _prompts(
    r: _Reader,
    data: dict,
    class_names: set[str],
    fiducial_box: tuple[float, float, float, float] | None,
) -> tuple[PromptSpec, ...]:
    """[[prompts]] (optional): prompts for batch/line runs, in file order."""
    raw = data.get("prompts", [])
    if not isinstance(raw, list):
        raise r.fail(("prompts",), "must be an array of tables: write each prompt as [[prompts]]")
    return tuple(
        _prompt(r, p, ("prompts", i), class_names, fiducial_box) for i, p in enumerate(raw)
    )


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.\-]+(@[A-Za-z0-9_.\-]+)?")


def _model(r: _Reader, data: dict) -> ModelPin | None:
    """[model] (optional): name (learned-base, NAME@VERSION or a SAM id) and sha256."""
    if "model" not in data:
        return None
    where = ("model",)
    m = r.table(data["model"], where, {"name", "sha256"})
    name = r.string(m, where, "name")
    if not _MODEL_NAME.fullmatch(name):
        raise r.fail((*where, "name"), "must be a model id: learned-base, NAME@VERSION or a SAM "
                     f"id such as vit_b; got {name!r}")
    sha = r.string(m, where, "sha256")
    if not _SHA256.fullmatch(sha):
        raise r.fail((*where, "sha256"), "must be the 64 hexadecimal digits of the weights' "
                     f"sha256; got {sha!r}")
    return ModelPin(name, sha.lower(), find_line(r.text, where))


def parse_recipe(text: str, path: str = "<recipe>") -> Recipe:
    """Parse and validate recipe TOML text; `path` is used in error messages.

    Each section has its own parser; they run in a fixed order (schema_version, part,
    calibration, datum, lot, zones, classes, prompts, model) whatever the order in the file, and the
    later ones get what they check against (the calibration, zone and class names)."""
    data = _parse_toml(text, path)
    r = _Reader(path, text)
    r.table(data, (), _TOP)
    version = _schema_version(r, data)
    part = _part(r, data)
    cal = _calibration(r, data)
    datum = _datum(r, data)
    lot = _lot(r, data)
    zones = _zones(r, data)
    classes = _classes(r, data, cal.calibrated, {z.name for z in zones})
    prompts = _prompts(r, data, {c.name for c in classes}, cal.fiducial_box)
    model = _model(r, data)
    return Recipe(
        path=path,
        schema_version=version,
        name=part.name,
        version=part.version,
        description=part.description,
        calibration=cal.calibration,
        fiducial_diameter_mm=cal.fiducial_diameter_mm,
        fiducial_box=cal.fiducial_box,
        datum=datum,
        lot=lot,
        zones=zones,
        classes=classes,
        prompts=prompts,
        model=model,
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; RecipeError names the file, line and field at fault."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(str(p), None, "", "no such recipe file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(str(p), None, "", f"cannot read the recipe: {exc}") from None
    return parse_recipe(text, str(p))


# ---------------------------------------------------------------- the pinned model


def engine_for_recipe(recipe: Recipe | None, engine: str,
                      model: str | None) -> tuple[str, str | None]:
    """(engine, model) to load for a run with `recipe`: its pinned model when it pins one
    (engine "sam" for a SAM id, else "learned"); an --engine/--model that names another
    model is refused rather than silently overridden."""
    pin = recipe.model if recipe is not None else None
    if pin is None:
        return engine, model
    from sam_engine.weights.registry import load_manifest  # light: no torch (line tool)

    kind = "sam" if pin.name in load_manifest() else "learned"  # as factory.model_kind
    if engine not in ("auto", kind) or model not in (None, pin.name):
        asked = " ".join(f"--{k} {v}" for k, v in (("engine", engine), ("model", model))
                         if v is not None and v != "auto")
        raise RecipeError(recipe.path, pin.line, "model", f"pins {pin.name} (the {kind} "
                          f"engine) but {asked} asks for another; drop that option or edit the "
                          "recipe")
    return kind, pin.name


def check_pinned(recipe: Recipe | None, model_id: str, sha256: str | None) -> None:
    """Refuse a loaded model whose weights' sha256 is not the one the recipe pins."""
    pin = recipe.model if recipe is not None else None
    if pin is None or (sha256 or "").lower() == pin.sha256:
        return
    raise RecipeError(recipe.path, pin.line, "model.sha256",
                      f"pins {pin.name} with weights sha256 {pin.sha256}, but the model loaded "
                      f"({model_id}) has sha256 {sha256 or 'unknown'}; restore that model "
                      "version or update the pin")
