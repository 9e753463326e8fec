"""PASS/FAIL of one image (or part) against a recipe, with one reason per broken rule.

Reasons name a defect by its defect number (Finding.number, 1-based;
app.inspection.findings.defect_numbers
for findings not numbered yet). Findings scoring below their class's min_score are not judged;
dropped_findings lists them so a result can say so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from app.inspection.findings import FAIL, PASS, Finding, Reason, Verdict, defect_numbers
from app.inspection.recipe import ClassRule, Recipe

# (rule name, ClassRule attribute, Measurements attribute, unit, label)
_MAX_RULES = (
    ("max_area", "max_area_mm2", "area_mm2", "mm²", "area"),
    ("max_area", "max_area_px", "area_px", "px", "area"),
    ("max_length", "max_length_mm", "feret_max_mm", "mm", "length"),
    ("max_length", "max_length_px", "feret_max_px", "px", "length"),
    ("max_width", "max_width_mm", "thickness_mm", "mm", "width"),
    ("max_width", "max_width_px", "thickness_px", "px", "width"),
)
_MIN_RULES = (
    ("min_edge_distance", "min_edge_distance_mm", "edge_distance_mm", "mm", "distance to the edge"),
    (
        "min_datum_distance",
        "min_datum_distance_mm",
        "datum_distance_mm",
        "mm",
        "distance to the datum",
    ),
)


def _f(v: float) -> str:
    return f"{v:.4g}"


@dataclass(frozen=True)
class Dropped:
    """A finding left out of the verdict: its score is below its class's min_score."""

    defect_number: int
    defect_class: str
    score: float
    min_score: float

    def to_dict(self) -> dict:
        return asdict(self)


def _finding_reasons(i: int, f: Finding, rule: ClassRule, recipe: Recipe) -> list[Reason]:
    """Reasons of defect number i."""
    out: list[Reason] = []
    m = f.measurements
    tag = f"{f.defect_class} #{i}"
    for name, limit_attr, meas_attr, unit, label in _MAX_RULES + _MIN_RULES:
        allowed = getattr(rule, limit_attr)
        if allowed is None:
            continue
        measured = None if m is None else getattr(m, meas_attr)
        if measured is None:
            out.append(
                Reason(
                    "not_measured",
                    f.defect_class,
                    f"{tag}: {label} cannot be checked (not measured or not calibrated)",
                    None,
                    allowed,
                    unit,
                    i,
                )
            )
            continue
        broken = measured > allowed if name.startswith("max") else measured < allowed
        if broken:
            cmp = ">" if name.startswith("max") else "<"
            out.append(
                Reason(
                    name,
                    f.defect_class,
                    f"{tag}: {label} {_f(measured)} {unit} {cmp} allowed {_f(allowed)} {unit}",
                    float(measured),
                    float(allowed),
                    unit,
                    i,
                )
            )
    for zone_name in rule.forbidden_zones:
        zone = recipe.zone(zone_name)
        if f.mask is not None:
            overlap = int(np.count_nonzero(f.mask & zone.mask(f.mask.shape)))
        elif m is not None:  # no mask kept: the bounding box stands in for it
            x0, y0, x1, y1 = m.bbox
            xs = [p[0] for p in zone.polygon]
            ys = [p[1] for p in zone.polygon]
            overlap = int(
                max(0, min(x1, max(xs)) - max(x0, min(xs)))
                * max(0, min(y1, max(ys)) - max(y0, min(ys)))
            )
        else:
            overlap = 0
        if overlap > 0:
            out.append(
                Reason(
                    "forbidden_zone",
                    f.defect_class,
                    f"{tag}: {overlap} px inside forbidden zone '{zone_name}'",
                    float(overlap),
                    0.0,
                    "px",
                    i,
                )
            )
    return out


def judge(findings: Sequence[Finding], recipe: Recipe) -> Verdict:
    """Verdict of one image/part: FAIL when any finding breaks a rule of its class, a class has
    more findings than max_count, or a finding's class is not in the recipe."""
    reasons: list[Reason] = []
    counted: Counter[str] = Counter()
    for i, f in zip(defect_numbers(findings), findings, strict=True):
        rule = recipe.rule(f.defect_class)
        if rule is None:
            reasons.append(
                Reason(
                    "unknown_class",
                    f.defect_class,
                    f"{f.defect_class} #{i}: class not in recipe {recipe.name} "
                    f"(classes: {', '.join(recipe.class_names)})",
                    defect_number=i,
                )
            )
            continue
        if f.score is not None and f.score < rule.min_score:
            continue
        counted[f.defect_class] += 1
        reasons.extend(_finding_reasons(i, f, rule, recipe))
    for rule in recipe.classes:
        n = counted[rule.name]
        if rule.max_count is not None and n > rule.max_count:
            reasons.append(
                Reason(
                    "max_count",
                    rule.name,
                    f"{rule.name}: {n} found > allowed {rule.max_count}",
                    float(n),
                    float(rule.max_count),
                    "count",
                )
            )
    return Verdict(FAIL if reasons else PASS, tuple(reasons))


def dropped_findings(findings: Sequence[Finding], recipe: Recipe) -> list[Dropped]:
    """The findings judge() leaves out because they score below their class's min_score."""
    out = []
    for n, f in zip(defect_numbers(findings), findings, strict=True):
        rule = recipe.rule(f.defect_class)
        if rule is not None and f.score is not None and f.score < rule.min_score:
            out.append(Dropped(n, f.defect_class, float(f.score), float(rule.min_score)))
    return out
