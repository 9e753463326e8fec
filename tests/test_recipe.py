"""Recipes: the sample recipe loads; invalid ones name the file, line and field at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.inspection.recipe import RecipeError, find_line, load_recipe, parse_recipe
from sam_engine.errors import SamEngineError

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "recipes" / "demo_part.toml"

GOOD = """\
schema_version = 1

[part]
name = "p"
version = "2"

[calibration]
mm_per_px = 0.1

[[zones]]
name = "z1"
box = [0, 0, 10, 10]

[[zones]]
name = "z2"
polygon = [[0, 0], [5, 0], [0, 5]]

[classes.scratch]
max_length_mm = 2.0
forbidden_zones = ["z1"]

[classes.pit]
max_count = 1
"""


def test_sample_recipe_loads():
    r = load_recipe(SAMPLE)
    assert r.name == "demo_part" and r.version == "1.0.0"
    assert set(r.class_names) == {"scratch", "pit", "crack", "stain", "inclusion", "patch"}
    assert r.calibration.mm_per_px == 0.05
    assert r.lot is not None and r.lot.inspection_level == "II" and r.lot.aql == 1.0
    assert r.rule("crack").max_count == 0
    assert r.rule("pit").forbidden_zones == ("sealing_face", "bore")
    assert r.zone("sealing_face").mask((480, 640)).sum() == 640 * 40
    p = r.prompts[0].to_prompts()
    assert p.boxes.shape == (1, 4) and p.points is None


def test_good_recipe_fields():
    r = parse_recipe(GOOD, "good.toml")
    assert r.rule("scratch").max_length_mm == 2.0
    assert r.rule("pit").max_count == 1 and r.rule("pit").max_area_mm2 is None
    assert r.zones[1].polygon == ((0, 0), (5, 0), (0, 5))
    assert r.rule("nothing") is None


def _error(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "bad.toml")
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        (
            "max_length_mm = 2.0",
            'max_length_mm = "long"',
            "classes.scratch.max_length_mm",
            "max_length_mm",
        ),
        (
            "max_length_mm = 2.0",
            "max_length_mm = -1",
            "classes.scratch.max_length_mm",
            "max_length_mm",
        ),
        ("max_count = 1", "max_count = 1.5", "classes.pit.max_count", "max_count"),
        ("max_count = 1", "max_cuont = 1", "classes.pit.max_cuont", "max_cuont"),
        (
            'forbidden_zones = ["z1"]',
            'forbidden_zones = ["z9"]',
            "classes.scratch.forbidden_zones",
            "forbidden_zones",
        ),
        ("box = [0, 0, 10, 10]", "box = [10, 0, 0, 10]", "zones[0].box", "box ="),
        ("polygon = [[0, 0], [5, 0], [0, 5]]", "polygon = [[0, 0]]", "zones[1].polygon", "polygon"),
        ("mm_per_px = 0.1", "mm_per_px = 0", "calibration.mm_per_px", "mm_per_px"),
        ('name = "z2"', 'name = "z1"', "zones[1].name", 'name = "z1"\nbox'),
        ("schema_version = 1", "schema_version = 7", "schema_version", "schema_version"),
    ],
)
def test_semantic_errors_name_line_and_field(old, new, field, needle):
    text = GOOD.replace(old, new)
    assert text != GOOD
    err = _error(text)
    assert err.field == field
    if "\n" in needle:  # the second occurrence
        first, _ = needle.split("\n")
        lines = [i for i, line in enumerate(text.splitlines(), 1) if first in line]
        assert err.line == lines[-1]
    else:
        assert err.line == _line_of(text, needle)
    assert str(err).startswith(f"bad.toml:{err.line}: {field}: ")
    assert isinstance(err, SamEngineError)


def test_mm_limit_without_calibration():
    err = _error(GOOD.replace("[calibration]\nmm_per_px = 0.1\n", ""))
    assert err.field == "classes.scratch.max_length_mm"
    assert "calibration" in err.problem


def test_syntax_error_has_line():
    text = GOOD.replace('version = "2"', "version = ")
    err = _error(text)
    lines = text.splitlines()
    assert err.line == next(i for i, ln in enumerate(lines, 1) if ln.startswith("version = "))
    assert "TOML syntax" in str(err)


def test_missing_pieces():
    assert "schema_version" in str(_error(GOOD.replace("schema_version = 1\n", "")))
    err = _error(GOOD.split("[classes.scratch]")[0])
    assert err.field == "classes"
    err = _error(GOOD.replace('name = "p"\n', ""))
    assert err.field == "part" and "name" in err.problem


def test_lot_and_prompts_validation():
    err = _error(GOOD + '\n[lot]\ninspection_level = "IV"\naql = 1.0\n')
    assert err.field == "lot.inspection_level"
    err = _error(GOOD + "\n[lot]\naql = 0.3\n")
    assert err.field == "lot.aql" and "0.25" in err.problem
    err = _error(GOOD + '\n[[prompts]]\nclass = "dent"\nbox = [0, 0, 5, 5]\n')
    assert err.field == "prompts[0].class"
    assert err.line == _line_of(GOOD + '\n[[prompts]]\nclass = "dent"\n', 'class = "dent"')
    err = _error(GOOD + '\n[[prompts]]\nclass = "pit"\npoints = [[1, 2]]\nlabels = [3]\n')
    assert err.field == "prompts[0].labels"


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.toml")


def test_find_line_handles_tables_arrays_and_dotted_keys():
    text = "a = 1\n[x.y]\nb.c = 2\n[[z]]\nk = 1\n[[z]]\nk = 2\n"
    assert find_line(text, ("x", "y", "b", "c")) == 3
    assert find_line(text, ("z", 1, "k")) == 7
    assert find_line(text, ("z", 1, "missing")) == 6  # falls back to the table's header
    assert find_line(text, ("nothing",)) is None


def test_fiducial_calibration_recipe():
    import numpy as np

    text = GOOD.replace(
        "mm_per_px = 0.1", "fiducial_diameter_mm = 4.0\nfiducial_box = [0, 0, 100, 100]"
    )
    r = parse_recipe(text, "fid.toml")
    yy, xx = np.mgrid[:100, :100] + 0.5
    fiducial = np.hypot(xx - 50, yy - 50) <= 20  # 40 px across = 4 mm
    assert r.calibrate(fiducial).mm_per_px == pytest.approx(0.1, rel=0.01)
    with pytest.raises(RecipeError, match="segment it first"):
        r.calibrate()
    assert parse_recipe(GOOD).calibrate().mm_per_px == 0.1
    err = _error(text.replace("fiducial_box = [0, 0, 100, 100]", ""))
    assert err.field == "calibration" and "both" in err.problem
