"""Verdicts: PASS/FAIL with the rule, the defect, measured vs allowed."""

from __future__ import annotations

import numpy as np
import pytest

from app.inspection.findings import Finding, Inspection, Verdict
from app.inspection.measure import Calibration, measure
from app.inspection.recipe import parse_recipe
from app.inspection.verdict import judge

RECIPE = parse_recipe(
    """\
schema_version = 1
[part]
name = "p"
version = "1"
[calibration]
mm_per_px = 0.1
[datum]
kind = "line"
points = [[0, 99], [99, 99]]
[[zones]]
name = "top"
box = [0, 0, 100, 10]
[classes.scratch]
max_length_mm = 3.0
max_width_mm = 0.5
max_count = 2
forbidden_zones = ["top"]
[classes.pit]
max_area_mm2 = 0.5
min_score = 0.5
[classes.inclusion]
min_datum_distance_mm = 2.0
""",
    "v.toml",
)
CAL = Calibration(0.1)


def finding(cls, y0, y1, x0, x1, score=0.9):
    mask = np.zeros((100, 100), bool)
    mask[y0:y1, x0:x1] = True
    return Finding(cls, mask, measure(mask, CAL, datum=RECIPE.datum), score)


def test_pass_without_findings_or_within_limits():
    assert judge([], RECIPE) == Verdict("PASS")
    v = judge([finding("scratch", 40, 42, 20, 40), finding("pit", 50, 55, 50, 55)], RECIPE)
    assert v.passed and v.reasons == ()


def test_length_and_width_fail_with_measured_vs_allowed():
    v = judge([finding("scratch", 40, 50, 10, 60)], RECIPE)  # 50x10 px = 5.0 x 1.0 mm
    assert not v.passed
    rules = {r.rule: r for r in v.reasons}
    assert rules["max_length"].measured == pytest.approx(5.1, abs=0.1)
    assert rules["max_length"].allowed == 3.0 and rules["max_length"].unit == "mm"
    assert rules["max_width"].measured == pytest.approx(1.0, abs=0.1)
    assert rules["max_length"].defect_number == 1  # defect numbers are 1-based
    assert (
        "scratch #1" in rules["max_length"].message and "> allowed 3" in rules["max_length"].message
    )


def test_area_count_zone_and_score():
    big_pit = finding("pit", 20, 30, 20, 30)  # 100 px = 1 mm2
    low_score_pit = finding("pit", 60, 80, 60, 80, score=0.2)  # ignored: below min_score
    v = judge([big_pit, low_score_pit], RECIPE)
    assert [r.rule for r in v.reasons] == ["max_area"]
    assert v.reasons[0].measured == pytest.approx(1.0)

    scratches = [finding("scratch", 5 + 10 * i, 7 + 10 * i, 20, 30) for i in range(3)]
    v = judge(scratches, RECIPE)
    rules = [r.rule for r in v.reasons]
    assert rules.count("max_count") == 1 and rules.count("forbidden_zone") == 1
    zone = next(r for r in v.reasons if r.rule == "forbidden_zone")
    assert zone.defect_number == 1 and zone.measured == 20 and zone.allowed == 0
    count = next(r for r in v.reasons if r.rule == "max_count")
    assert (count.measured, count.allowed) == (3, 2)


def test_zone_checked_on_bbox_when_mask_dropped():
    f = finding("scratch", 5, 7, 20, 30)
    f.mask = None
    assert [r.rule for r in judge([f], RECIPE).reasons] == ["forbidden_zone"]


def test_datum_distance_and_unknown_class():
    near = finding("inclusion", 90, 95, 10, 15)  # 4.5 px = 0.45 mm from the datum line
    v = judge([near, finding("dent", 10, 20, 10, 20)], RECIPE)
    assert [r.rule for r in v.reasons] == ["min_datum_distance", "unknown_class"]
    assert v.reasons[0].allowed == 2.0 and v.reasons[0].measured < 2.0


def test_unmeasured_finding_is_flagged():
    v = judge([Finding("scratch", None, None, 0.9)], RECIPE)
    assert not v.passed and {r.rule for r in v.reasons} == {"not_measured"}


def test_inspection_round_trips_through_json():
    import json

    f = finding("scratch", 40, 50, 10, 60)
    insp = Inspection("img.png", "ab" * 32, lot="L", findings=[f], verdict=judge([f], RECIPE))
    back = Inspection.from_dict(json.loads(json.dumps(insp.to_dict())))
    assert back.verdict == insp.verdict
    assert back.time == insp.time
    assert (back.findings[0].mask == f.mask).all()
    assert back.findings[0].measurements == f.measurements
    f.number = 7
    assert Finding.from_dict(json.loads(json.dumps(f.to_dict()))).number == 7


def test_prompts_to_dict():
    from app.inspection.findings import prompts_to_dict
    from sam_engine.prompts import Prompts

    d = prompts_to_dict(Prompts.from_points([[3, 4]], [1]))
    assert d == {"points": [[3.0, 4.0]], "labels": [1], "boxes": None}


def test_reasons_name_the_stable_defect_number_not_the_list_index():
    # defects 1 and 2 of this image were deleted: #3 is still #3
    f = finding("scratch", 40, 50, 10, 60)
    f.number = 3
    v = judge([f], RECIPE)
    assert {r.defect_number for r in v.reasons} == {3}
    assert all("scratch #3:" in r.message for r in v.reasons)


def test_defect_numbers_fill_gaps_after_the_largest_and_refuse_duplicates():
    from app.inspection.findings import defect_numbers, number_findings

    fs = [Finding("pit"), Finding("pit", number=4), Finding("pit")]
    assert defect_numbers(fs) == [5, 4, 6]
    assert [f.number for f in fs] == [None, 4, None]  # defect_numbers does not change them
    assert [f.number for f in number_findings(fs)] == [5, 4, 6]
    with pytest.raises(ValueError, match="more than one"):
        defect_numbers([Finding("pit", number=2), Finding("pit", number=2)])


def test_findings_below_min_score_are_listed_as_dropped():
    from app.inspection.verdict import dropped_findings

    low = finding("pit", 60, 80, 60, 80, score=0.2)
    ok = finding("pit", 50, 52, 50, 52)
    dropped = dropped_findings([ok, low], RECIPE)
    assert [(d.defect_number, d.defect_class, d.score, d.min_score) for d in dropped] == [
        (2, "pit", 0.2, 0.5)]
    assert dropped[0].to_dict()["defect_number"] == 2


def test_reason_reads_the_legacy_zero_based_finding_index():
    from app.inspection.findings import Reason

    old = {"rule": "max_area", "defect_class": "pit", "message": "m", "measured": 1.0,
           "allowed": 0.5, "unit": "mm²", "finding_index": 0}
    assert Reason.from_dict(old).defect_number == 1
    r = Reason("max_area", "pit", "m", 1.0, 0.5, "mm²", 2)
    assert Reason.from_dict(r.to_dict()) == r and r.to_dict()["defect_number"] == 2
    count = {"rule": "max_count", "defect_class": "pit", "message": "m", "finding_index": None}
    assert Reason.from_dict(count).defect_number is None
