"""Typed records shared by batch mode, the GUI, the line runtime, the report and the database.

Every class converts to and from plain JSON types (to_dict / from_dict); masks travel as COCO
run-length encodings (pycocotools), so a dict survives json.dumps / json.loads unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from pycocotools import mask as coco_mask

from app.inspection.measure import Measurements
from sam_engine.prompts import Prompts

PASS = "PASS"
FAIL = "FAIL"


def mask_to_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a bool (H, W) mask: {"size": [H, W], "counts": str}."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Inverse of mask_to_rle: a bool (H, W) array."""
    counts = rle["counts"]
    raw = {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    with warnings.catch_warnings():  # pycocotools 2.0.x vs numpy 2 "copy keyword" deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode(raw).astype(bool)


def prompts_to_dict(prompts: Prompts) -> dict:
    """The JSON form of sam_engine Prompts kept with a finding (mask_input is left out)."""

    def arr(a):
        return None if a is None else np.asarray(a).tolist()

    return {
        "points": arr(prompts.points),
        "labels": arr(prompts.labels),
        "boxes": arr(prompts.boxes),
    }


def _iso(t: datetime) -> str:
    return t.isoformat()


@dataclass
class Finding:
    """One defect on one image.

    defect_class: a class name from the recipe (e.g. "scratch"); score: the engine's predicted IoU
    (None for a manual mask); prompts: what produced the mask, as JSON (points, labels, boxes);
    accepted_by: who confirmed it (None while unconfirmed); id: the database id once stored;
    number: the defect number, 1-based and stable for the life of the defect (deleting another
    defect never renumbers it): the "#k" of the GUI, reports, CSV, COCO, the store
    (position + 1) and the value of its pixels in label-map PNGs. None until the finding joins
    an inspection (number_findings).
    """

    defect_class: str
    mask: np.ndarray | None = field(default=None, repr=False)
    measurements: Measurements | None = None
    score: float | None = None
    prompts: dict | None = None
    accepted_by: str | None = None
    source: str = "sam"  # "sam", "classic" or "manual"
    id: int | None = None
    number: int | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "number": self.number,
            "defect_class": self.defect_class,
            "mask_rle": None if self.mask is None else mask_to_rle(self.mask),
            "measurements": None if self.measurements is None else self.measurements.to_dict(),
            "score": self.score,
            "prompts": self.prompts,
            "accepted_by": self.accepted_by,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        m = d.get("measurements")
        rle = d.get("mask_rle")
        return cls(
            defect_class=d["defect_class"],
            mask=None if rle is None else rle_to_mask(rle),
            measurements=None if m is None else Measurements.from_dict(m),
            score=d.get("score"),
            prompts=d.get("prompts"),
            accepted_by=d.get("accepted_by"),
            source=d.get("source", "sam"),
            id=d.get("id"),
            number=d.get("number"),
        )


def defect_numbers(findings: Sequence[Finding]) -> list[int]:
    """The defect number of each finding: its own, else the next free one (the largest number
    in the list + 1, in list order). Raises ValueError when two findings share a number."""
    taken = [f.number for f in findings if f.number is not None]
    if len(set(taken)) != len(taken):
        dup = sorted({n for n in taken if taken.count(n) > 1})
        raise ValueError(f"defect numbers {dup} are used by more than one finding")
    nxt = max(taken, default=0) + 1
    out = []
    for f in findings:
        if f.number is None:
            out.append(nxt)
            nxt += 1
        else:
            out.append(f.number)
    return out


def number_findings(findings: Sequence[Finding]) -> Sequence[Finding]:
    """Give every finding without a number the one defect_numbers assigns; returns findings."""
    for f, n in zip(findings, defect_numbers(findings), strict=True):
        f.number = n
    return findings


@dataclass(frozen=True)
class Reason:
    """Why a verdict failed: which rule, which defect, measured vs allowed (None when n/a)."""

    rule: str  # "max_area", "max_length", "max_width", "max_count", "forbidden_zone", ...
    defect_class: str
    message: str
    measured: float | None = None
    allowed: float | None = None
    unit: str = ""
    defect_number: int | None = None  # Finding.number of the defect; None for count rules

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "defect_class": self.defect_class,
            "message": self.message,
            "measured": self.measured,
            "allowed": self.allowed,
            "unit": self.unit,
            "defect_number": self.defect_number,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Reason:
        """Also reads records written before defect numbers, whose 0-based "finding_index"
        is the defect number - 1."""
        number = d.get("defect_number")
        if number is None and d.get("finding_index") is not None:
            number = int(d["finding_index"]) + 1
        return cls(
            **{k: d.get(k) for k in ("rule", "defect_class", "message", "measured", "allowed")},
            unit=d.get("unit", ""),
            defect_number=number,
        )


@dataclass(frozen=True)
class Verdict:
    """PASS (no reasons) or FAIL (one reason per broken rule)."""

    status: str
    reasons: tuple[Reason, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_dict(self) -> dict:
        return {"status": self.status, "reasons": [r.to_dict() for r in self.reasons]}

    @classmethod
    def from_dict(cls, d: dict) -> Verdict:
        return cls(status=d["status"], reasons=tuple(Reason.from_dict(r) for r in d["reasons"]))


@dataclass
class Inspection:
    """One image of one part, what was found on it and the verdict."""

    image_path: str
    image_sha256: str
    part_id: str = ""
    serial: str = ""
    lot: str = ""
    station: str = ""
    operator: str = ""
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    engine: str = ""  # EngineInfo.name
    model_id: str = ""
    checkpoint_sha256: str | None = None
    recipe_name: str = ""
    recipe_version: str = ""
    findings: list[Finding] = field(default_factory=list)
    verdict: Verdict | None = None
    id: int | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "image_path": self.image_path,
            "image_sha256": self.image_sha256,
            "part_id": self.part_id,
            "serial": self.serial,
            "lot": self.lot,
            "station": self.station,
            "operator": self.operator,
            "time": _iso(self.time),
            "engine": self.engine,
            "model_id": self.model_id,
            "checkpoint_sha256": self.checkpoint_sha256,
            "recipe_name": self.recipe_name,
            "recipe_version": self.recipe_version,
            "findings": [f.to_dict() for f in self.findings],
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Inspection:
        v = d.get("verdict")
        return cls(
            image_path=d["image_path"],
            image_sha256=d["image_sha256"],
            part_id=d.get("part_id", ""),
            serial=d.get("serial", ""),
            lot=d.get("lot", ""),
            station=d.get("station", ""),
            operator=d.get("operator", ""),
            time=datetime.fromisoformat(d["time"]),
            engine=d.get("engine", ""),
            model_id=d.get("model_id", ""),
            checkpoint_sha256=d.get("checkpoint_sha256"),
            recipe_name=d.get("recipe_name", ""),
            recipe_version=d.get("recipe_version", ""),
            findings=[Finding.from_dict(f) for f in d.get("findings", [])],
            verdict=None if v is None else Verdict.from_dict(v),
            id=d.get("id"),
        )
