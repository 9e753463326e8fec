"""Recipe sections one by one: every invalid value is reported with its exact message (file,
line, field), whatever section it is in, and every section parses to its typed values."""

from __future__ import annotations

import pytest

from app.inspection.measure import FIELD_OF_VIEW_MM, Datum
from app.inspection.recipe import LotPlan, ModelPin, PromptSpec, RecipeError, parse_recipe

PART = '[part]\nname = "p"\nversion = "2"\n'
CAL = "[calibration]\nmm_per_px = 0.1\n"
ZONE = '[[zones]]\nname = "z1"\nbox = [0, 0, 10, 10]\n'
CLASS = '[classes.scratch]\nmax_length_mm = 2.0\nforbidden_zones = ["z1"]\n'
PROMPT = '[[prompts]]\nclass = "scratch"\nbox = [1, 1, 5, 5]\n'
BASE = "\n".join(["schema_version = 1\n", PART, CAL, ZONE, CLASS, PROMPT])
SHA = "ab" * 32
MODEL = f'\n[model]\nname = "site@2"\nsha256 = "{SHA}"\n'


def sub(old: str, new: str, text: str = BASE) -> str:
    """`text` with the first `old` replaced by `new`."""
    assert old in text, old
    return text.replace(old, new, 1)


# (case, recipe text, the exact message of its RecipeError)
ERRORS = [
    # top level and schema_version
    ("top_unknown_key", "colour = 1\n" + BASE,
     "bad.toml:1: colour: unknown key; allowed here: calibration, classes, datum, lot, model, "
     "part, prompts, schema_version, zones"),
    ("schema_missing", sub("schema_version = 1\n", ""),
     "bad.toml:1: schema_version: missing; add 'schema_version = 1'"),
    ("schema_wrong", sub("schema_version = 1", "schema_version = 2"),
     "bad.toml:1: schema_version: unsupported version 2; this program reads 1"),
    ("schema_string", sub("schema_version = 1", 'schema_version = "1"'),
     "bad.toml:1: schema_version: unsupported version '1'; this program reads 1"),
    # [part]
    ("part_missing", sub(PART, ""),
     "bad.toml: part: missing table [part] with name and version"),
    ("part_not_table", 'part = "p"\n' + sub(PART, ""),
     "bad.toml:1: part: must be a table; got str"),
    ("part_unknown_key", sub('version = "2"', 'version = "2"\nowner = "me"'),
     "bad.toml:6: part.owner: unknown key; allowed here: description, name, version"),
    ("part_name_missing", sub('name = "p"\n', ""),
     "bad.toml:3: part: missing required key 'name'"),
    ("part_name_empty", sub('name = "p"', 'name = " "'),
     "bad.toml:4: part.name: must be a non-empty string; got ' '"),
    ("part_version_missing", sub('version = "2"\n', ""),
     "bad.toml:3: part: missing required key 'version'"),
    ("part_version_number", sub('version = "2"', "version = 2"),
     "bad.toml:5: part.version: must be a non-empty string; got 2"),
    ("part_description_number", sub('version = "2"', 'version = "2"\ndescription = 3'),
     "bad.toml:6: part.description: must be a non-empty string; got 3"),
    # [calibration]
    ("cal_not_table", "calibration = 0.1\n" + sub(CAL, ""),
     "bad.toml:1: calibration: must be a table; got float"),
    ("cal_unknown_key", sub("mm_per_px = 0.1", "mm_per_pix = 0.1"),
     "bad.toml:8: calibration.mm_per_pix: unknown key; allowed here: fiducial_box, "
     "fiducial_diameter_mm, field_of_view_mm, mm_per_px"),
    ("cal_mm_string", sub("mm_per_px = 0.1", 'mm_per_px = "0.1"'),
     "bad.toml:8: calibration.mm_per_px: must be a number; got '0.1'"),
    ("cal_mm_bool", sub("mm_per_px = 0.1", "mm_per_px = true"),
     "bad.toml:8: calibration.mm_per_px: must be a number; got True"),
    ("cal_mm_zero", sub("mm_per_px = 0.1", "mm_per_px = 0"),
     "bad.toml:8: calibration.mm_per_px: must be a number > 0; got 0"),
    ("cal_mm_negative", sub("mm_per_px = 0.1", "mm_per_px = -0.1"),
     "bad.toml:8: calibration.mm_per_px: must be a number > 0; got -0.1"),
    ("cal_mm_inf", sub("mm_per_px = 0.1", "mm_per_px = inf"),
     "bad.toml:8: calibration.mm_per_px: must be a number > 0; got inf"),
    ("cal_mm_nan", sub("mm_per_px = 0.1", "mm_per_px = nan"),
     "bad.toml:8: calibration.mm_per_px: must be a number > 0; got nan"),
    ("fid_and_mm",
     sub(
         "mm_per_px = 0.1",
         "mm_per_px = 0.1\nfiducial_diameter_mm = 4.0\nfiducial_box = [0, 0, 9, 9]",
     ),
     "bad.toml:9: calibration.fiducial_diameter_mm: give mm_per_px or a fiducial, not both"),
    ("fid_without_box", sub("mm_per_px = 0.1", "fiducial_diameter_mm = 4.0"),
     "bad.toml:7: calibration: a fiducial needs both fiducial_diameter_mm and fiducial_box"),
    ("fid_box_without_diameter", sub("mm_per_px = 0.1", "fiducial_box = [0, 0, 9, 9]"),
     "bad.toml:7: calibration: a fiducial needs both fiducial_diameter_mm and fiducial_box"),
    ("fid_diameter_zero",
     sub("mm_per_px = 0.1", "fiducial_diameter_mm = 0\nfiducial_box = [0, 0, 9, 9]"),
     "bad.toml:8: calibration.fiducial_diameter_mm: must be a number > 0; got 0"),
    ("fid_box_reversed",
     sub("mm_per_px = 0.1", "fiducial_diameter_mm = 4\nfiducial_box = [9, 0, 0, 9]"),
     "bad.toml:9: calibration.fiducial_box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; "
     "got [9, 0, 0, 9]"),
    ("fid_box_short", sub("mm_per_px = 0.1", "fiducial_diameter_mm = 4\nfiducial_box = [0, 0, 9]"),
     "bad.toml:9: calibration.fiducial_box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; "
     "got [0, 0, 9]"),
    ("fid_box_strings",
     sub("mm_per_px = 0.1", 'fiducial_diameter_mm = 4\nfiducial_box = ["a", 0, 9, 9]'),
     "bad.toml:9: calibration.fiducial_box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; "
     "got ['a', 0, 9, 9]"),
    ("fov_reversed", sub("mm_per_px = 0.1", "mm_per_px = 0.1\nfield_of_view_mm = [5, 1]"),
     "bad.toml:9: calibration.field_of_view_mm: must be [lo, hi] in mm with 0 < lo < hi; got [5, "
     "1]"),
    ("fov_zero", sub("mm_per_px = 0.1", "mm_per_px = 0.1\nfield_of_view_mm = [0, 1]"),
     "bad.toml:9: calibration.field_of_view_mm: must be [lo, hi] in mm with 0 < lo < hi; got [0, "
     "1]"),
    ("fov_one_value", sub("mm_per_px = 0.1", "mm_per_px = 0.1\nfield_of_view_mm = [1]"),
     "bad.toml:9: calibration.field_of_view_mm: must be [lo, hi] in mm with 0 < lo < hi; got [1]"),
    ("fov_number", sub("mm_per_px = 0.1", "mm_per_px = 0.1\nfield_of_view_mm = 100"),
     "bad.toml:9: calibration.field_of_view_mm: must be [lo, hi] in mm with 0 < lo < hi; got 100"),
    ("fov_bool", sub("mm_per_px = 0.1", "mm_per_px = 0.1\nfield_of_view_mm = [true, 5]"),
     "bad.toml:9: calibration.field_of_view_mm: must be [lo, hi] in mm with 0 < lo < hi; got "
     "[True, 5]"),
    ("fov_inf", sub("mm_per_px = 0.1", "mm_per_px = 0.1\nfield_of_view_mm = [1, inf]"),
     "bad.toml:9: calibration.field_of_view_mm: must be [lo, hi] in mm with 0 < lo < hi; got [1, "
     "inf]"),
    # [datum]
    ("datum_not_table", 'datum = "edge"\n' + BASE,
     "bad.toml:1: datum: must be a table; got str"),
    ("datum_unknown_key", BASE + '\n[datum]\nkind = "point"\npoints = [[1, 2]]\nsize = 3\n',
     "bad.toml:25: datum.size: unknown key; allowed here: kind, points"),
    ("datum_kind_missing", BASE + "\n[datum]\npoints = [[1, 2]]\n",
     "bad.toml:22: datum: missing required key 'kind'"),
    ("datum_kind_bad", BASE + '\n[datum]\nkind = "circle"\npoints = [[1, 2]]\n',
     "bad.toml:23: datum.kind: must be 'point' or 'line'; got 'circle'"),
    ("datum_points_missing", BASE + '\n[datum]\nkind = "point"\n',
     "bad.toml:22: datum: missing required key 'points'"),
    ("datum_point_two", BASE + '\n[datum]\nkind = "point"\npoints = [[1, 2], [3, 4]]\n',
     "bad.toml:24: datum.points: must be a list of 1 [x, y] pairs in pixels; got [[1, 2], [3, 4]]"),
    ("datum_line_one", BASE + '\n[datum]\nkind = "line"\npoints = [[1, 2]]\n',
     "bad.toml:24: datum.points: must be a list of 2 [x, y] pairs in pixels; got [[1, 2]]"),
    ("datum_line_same", BASE + '\n[datum]\nkind = "line"\npoints = [[1, 2], [1, 2]]\n',
     "bad.toml:24: datum.points: a line needs two distinct points"),
    ("datum_points_flat", BASE + '\n[datum]\nkind = "point"\npoints = [1, 2]\n',
     "bad.toml:24: datum.points: must be a list of 1 [x, y] pairs in pixels; got [1, 2]"),
    # [lot]
    ("lot_not_table", 'lot = 1\n' + BASE,
     "bad.toml:1: lot: must be a table; got int"),
    ("lot_unknown_key", BASE + "\n[lot]\naql = 1.0\nsize = 50\n",
     "bad.toml:24: lot.size: unknown key; allowed here: aql, inspection_level"),
    ("lot_level_bad", BASE + '\n[lot]\ninspection_level = "IV"\naql = 1.0\n',
     "bad.toml:23: lot.inspection_level: must be one of S-1, S-2, S-3, S-4, I, II, III; got 'IV'"),
    ("lot_level_number", BASE + "\n[lot]\ninspection_level = 2\naql = 1.0\n",
     "bad.toml:23: lot.inspection_level: must be a non-empty string; got 2"),
    ("lot_aql_missing", BASE + '\n[lot]\ninspection_level = "II"\n',
     "bad.toml:22: lot: missing required key 'aql'"),
    ("lot_aql_off_table", BASE + "\n[lot]\naql = 0.3\n",
     "bad.toml:23: lot.aql: must be a table AQL (0.01, 0.015, 0.025, 0.04, 0.065, 0.1, 0.15, "
     "0.25, 0.4, 0.65, 1, 1.5, 2.5, 4, 6.5, 10, 15, 25, 40, 65, 100, 150, 250, 400, 650, 1000); "
     "got 0.3"),
    ("lot_aql_zero", BASE + "\n[lot]\naql = 0\n",
     "bad.toml:23: lot.aql: must be a number > 0; got 0"),
    ("lot_aql_string", BASE + '\n[lot]\naql = "1.0"\n',
     "bad.toml:23: lot.aql: must be a number; got '1.0'"),
    # [[zones]]
    ("zones_not_array", sub(ZONE, '[zones]\nname = "z1"\n'),
     "bad.toml:10: zones: must be an array of tables: write each zone as [[zones]]"),
    ("zone_not_table", "zones = [1]\n" + sub(ZONE, ""),
     "bad.toml:1: zones[0]: must be a table; got int"),
    ("zone_unknown_key", sub('name = "z1"', 'name = "z1"\ncolour = "red"'),
     "bad.toml:12: zones[0].colour: unknown key; allowed here: box, name, polygon"),
    ("zone_name_missing", sub('name = "z1"\nbox', "box"),
     "bad.toml:10: zones[0]: missing required key 'name'"),
    ("zone_twice", sub('[classes', '[[zones]]\nname = "z1"\nbox = [0, 0, 3, 3]\n\n[classes'),
     "bad.toml:15: zones[1].name: zone 'z1' is defined twice"),
    ("zone_box_and_polygon",
     sub("box = [0, 0, 10, 10]", "box = [0, 0, 10, 10]\npolygon = [[0, 0], [1, 0], [0, 1]]"),
     "bad.toml:10: zones[0]: give exactly one of box = [x0, y0, x1, y1] or polygon = [[x, y], "
     "...]"),
    ("zone_neither", sub("box = [0, 0, 10, 10]\n", ""),
     "bad.toml:10: zones[0]: give exactly one of box = [x0, y0, x1, y1] or polygon = [[x, y], "
     "...]"),
    ("zone_box_reversed", sub("box = [0, 0, 10, 10]", "box = [10, 0, 0, 10]"),
     "bad.toml:12: zones[0].box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; got [10, 0, "
     "0, 10]"),
    ("zone_box_bool", sub("box = [0, 0, 10, 10]", "box = [false, 0, 10, 10]"),
     "bad.toml:12: zones[0].box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; got [False, "
     "0, 10, 10]"),
    ("zone_polygon_two", sub("box = [0, 0, 10, 10]", "polygon = [[0, 0], [1, 0]]"),
     "bad.toml:12: zones[0].polygon: must be a list of at least 3 [x, y] pairs in pixels; got "
     "[[0, 0], [1, 0]]"),
    ("zone_polygon_triples",
     sub("box = [0, 0, 10, 10]", "polygon = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]"),
     "bad.toml:12: zones[0].polygon: must be a list of at least 3 [x, y] pairs in pixels; got "
     "[[0, 0, 0], [1, 0, 0], [0, 1, 0]]"),
    # [classes.*]
    ("classes_missing", BASE.split("[classes.scratch]")[0],
     "bad.toml: classes: define at least one defect class, e.g. [classes.scratch]"),
    ("classes_empty", sub(CLASS, "[classes]\n"),
     "bad.toml:14: classes: define at least one defect class, e.g. [classes.scratch]"),
    ("classes_not_table", 'classes = ["scratch"]\n' + sub(CLASS, ""),
     "bad.toml:1: classes: must be a table; got list"),
    ("class_not_table", sub(CLASS, "[classes]\nscratch = 1\n"),
     "bad.toml:15: classes.scratch: must be a table; got int"),
    ("class_unknown_key", sub("max_length_mm = 2.0", "max_lenght_mm = 2.0"),
     "bad.toml:15: classes.scratch.max_lenght_mm: unknown key; allowed here: description, "
     "forbidden_zones, max_area_mm2, max_area_px, max_count, max_length_mm, max_length_px, "
     "max_width_mm, max_width_px, min_datum_distance_mm, min_edge_distance_mm, min_score"),
    ("class_number_string", sub("max_length_mm = 2.0", 'max_length_mm = "2"'),
     "bad.toml:15: classes.scratch.max_length_mm: must be a number; got '2'"),
    ("class_number_negative", sub("max_length_mm = 2.0", "max_length_mm = -2"),
     "bad.toml:15: classes.scratch.max_length_mm: must be a number >= 0; got -2"),
    ("class_area_px_bool", sub("max_length_mm = 2.0", "max_area_px = true"),
     "bad.toml:15: classes.scratch.max_area_px: must be a number; got True"),
    ("class_count_float", sub("max_length_mm = 2.0", "max_count = 1.5"),
     "bad.toml:15: classes.scratch.max_count: must be an integer; got 1.5"),
    ("class_count_negative", sub("max_length_mm = 2.0", "max_count = -1"),
     "bad.toml:15: classes.scratch.max_count: must be an integer >= 0; got -1"),
    ("class_mm_uncalibrated", sub(CAL, ""),
     "bad.toml:13: classes.scratch.max_length_mm: a limit in mm needs [calibration] mm_per_px or "
     "a fiducial"),
    ("class_mm2_uncalibrated", sub(CAL, "").replace("max_length_mm = 2.0", "max_area_mm2 = 2.0"),
     "bad.toml:13: classes.scratch.max_area_mm2: a limit in mm needs [calibration] mm_per_px or a "
     "fiducial"),
    ("class_zones_not_list", sub('forbidden_zones = ["z1"]', 'forbidden_zones = "z1"'),
     "bad.toml:16: classes.scratch.forbidden_zones: must be a list of zone names; got 'z1'"),
    ("class_zones_numbers", sub('forbidden_zones = ["z1"]', "forbidden_zones = [1]"),
     "bad.toml:16: classes.scratch.forbidden_zones: must be a list of zone names; got [1]"),
    ("class_zone_unknown", sub('forbidden_zones = ["z1"]', 'forbidden_zones = ["z9"]'),
     "bad.toml:16: classes.scratch.forbidden_zones: unknown zone 'z9' (zones: z1)"),
    ("class_zone_none_defined", sub(ZONE, ""),
     "bad.toml:13: classes.scratch.forbidden_zones: unknown zone 'z1' (zones: none defined)"),
    ("class_min_score_high", sub("max_length_mm = 2.0", "min_score = 1.5"),
     "bad.toml:15: classes.scratch.min_score: must be between 0 and 1; got 1.5"),
    ("class_min_score_negative", sub("max_length_mm = 2.0", "min_score = -0.5"),
     "bad.toml:15: classes.scratch.min_score: must be a number >= 0; got -0.5"),
    ("class_min_score_string", sub("max_length_mm = 2.0", 'min_score = "high"'),
     "bad.toml:15: classes.scratch.min_score: must be a number; got 'high'"),
    ("class_description_number", sub("max_length_mm = 2.0", "description = 5"),
     "bad.toml:15: classes.scratch.description: must be a non-empty string; got 5"),
    ("class_second_bad", BASE + "\n[classes.pit]\nmax_count = 1.5\n",
     "bad.toml:23: classes.pit.max_count: must be an integer; got 1.5"),
    # [[prompts]]
    ("prompts_not_array", sub(PROMPT, '[prompts]\nclass = "scratch"\n'),
     "bad.toml:18: prompts: must be an array of tables: write each prompt as [[prompts]]"),
    ("prompt_not_table", "prompts = [1]\n" + sub(PROMPT, ""),
     "bad.toml:1: prompts[0]: must be a table; got int"),
    ("prompt_unknown_key", sub('class = "scratch"', 'class = "scratch"\nscore = 1'),
     "bad.toml:20: prompts[0].score: unknown key; allowed here: box, class, frame, labels, points"),
    ("prompt_class_missing", sub('class = "scratch"\n', ""),
     "bad.toml:18: prompts[0]: missing required key 'class'"),
    ("prompt_class_unknown", sub('class = "scratch"', 'class = "dent"'),
     "bad.toml:19: prompts[0].class: unknown class 'dent' (classes: scratch)"),
    ("prompt_frame_bad", sub('class = "scratch"', 'class = "scratch"\nframe = "mm"'),
     "bad.toml:20: prompts[0].frame: must be one of pixels, relative, fiducial; got 'mm'"),
    ("prompt_frame_number", sub('class = "scratch"', 'class = "scratch"\nframe = 1'),
     "bad.toml:20: prompts[0].frame: must be a non-empty string; got 1"),
    ("prompt_frame_fiducial_no_box",
     sub('class = "scratch"', 'class = "scratch"\nframe = "fiducial"'),
     "bad.toml:20: prompts[0].frame: the fiducial frame needs [calibration] fiducial_box"),
    ("prompt_box_reversed", sub("box = [1, 1, 5, 5]", "box = [5, 1, 1, 5]"),
     "bad.toml:20: prompts[0].box: must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1; got [5, 1, "
     "1, 5]"),
    ("prompt_points_bad", sub("box = [1, 1, 5, 5]", "points = [[1, 2, 3]]"),
     "bad.toml:20: prompts[0].points: must be a list of at least 1 [x, y] pairs in pixels; got "
     "[[1, 2, 3]]"),
    ("prompt_points_empty", sub("box = [1, 1, 5, 5]", "points = []"),
     "bad.toml:20: prompts[0].points: must be a list of at least 1 [x, y] pairs in pixels; got []"),
    ("prompt_labels_count", sub("box = [1, 1, 5, 5]", "points = [[1, 2]]\nlabels = [1, 0]"),
     "bad.toml:21: prompts[0].labels: must be one 1 (positive) or 0 (negative) per point; got [1, "
     "0]"),
    ("prompt_labels_value", sub("box = [1, 1, 5, 5]", "points = [[1, 2]]\nlabels = [2]"),
     "bad.toml:21: prompts[0].labels: must be one 1 (positive) or 0 (negative) per point; got [2]"),
    ("prompt_labels_not_list", sub("box = [1, 1, 5, 5]", "points = [[1, 2]]\nlabels = 1"),
     "bad.toml:21: prompts[0].labels: must be one 1 (positive) or 0 (negative) per point; got 1"),
    ("prompt_labels_without_points", sub("box = [1, 1, 5, 5]", "box = [1, 1, 5, 5]\nlabels = [1]"),
     "bad.toml:21: prompts[0].labels: must be one 1 (positive) or 0 (negative) per point; got [1]"),
    ("prompt_empty", sub("box = [1, 1, 5, 5]\n", ""),
     "bad.toml:18: prompts[0]: a prompt needs a box and/or points"),
    ("prompt_relative_out", sub('class = "scratch"', 'class = "scratch"\nframe = "relative"'),
     "bad.toml:18: prompts[0]: relative coordinates must lie between 0 and 1"),
    ("prompt_relative_point_out",
     sub(
         'class = "scratch"\nbox = [1, 1, 5, 5]',
         'class = "scratch"\nframe = "relative"\n' 'points = [[0.5, 1.5]]',
     ),
     "bad.toml:18: prompts[0]: relative coordinates must lie between 0 and 1"),
    ("prompt_second_bad", BASE + '\n[[prompts]]\nclass = "scratch"\n',
     "bad.toml:22: prompts[1]: a prompt needs a box and/or points"),
    # [model]
    ("model_not_table", 'model = "site@2"\n' + BASE,
     "bad.toml:1: model: must be a table; got str"),
    ("model_unknown_key", BASE + MODEL + 'version = "2"\n',
     "bad.toml:25: model.version: unknown key; allowed here: name, sha256"),
    ("model_name_missing", BASE + f'\n[model]\nsha256 = "{SHA}"\n',
     "bad.toml:22: model: missing required key 'name'"),
    ("model_name_number", BASE + MODEL.replace('"site@2"', "2"),
     "bad.toml:23: model.name: must be a non-empty string; got 2"),
    ("model_name_empty", BASE + MODEL.replace('"site@2"', '""'),
     "bad.toml:23: model.name: must be a non-empty string; got ''"),
    ("model_name_spaces", BASE + MODEL.replace('"site@2"', '"my model"'),
     "bad.toml:23: model.name: must be a model id: learned-base, NAME@VERSION or a SAM id such "
     "as vit_b; got 'my model'"),
    ("model_name_two_versions", BASE + MODEL.replace('"site@2"', '"site@2@3"'),
     "bad.toml:23: model.name: must be a model id: learned-base, NAME@VERSION or a SAM id such "
     "as vit_b; got 'site@2@3'"),
    ("model_sha_missing", BASE + '\n[model]\nname = "site@2"\n',
     "bad.toml:22: model: missing required key 'sha256'"),
    ("model_sha_short", BASE + MODEL.replace(SHA, "abc123"),
     "bad.toml:24: model.sha256: must be the 64 hexadecimal digits of the weights' sha256; got "
     "'abc123'"),
    ("model_sha_not_hex", BASE + MODEL.replace(SHA, "z" * 64),
     "bad.toml:24: model.sha256: must be the 64 hexadecimal digits of the weights' sha256; got "
     f"'{'z' * 64}'"),
    ("model_sha_number", BASE + MODEL.replace(f'"{SHA}"', "12"),
     "bad.toml:24: model.sha256: must be a non-empty string; got 12"),
    # syntax
    ("toml_syntax", sub('version = "2"', "version = "),
     "bad.toml:5: TOML syntax: Invalid value (at line 5, column 11)"),
    ("toml_duplicate_key", sub('version = "2"', 'version = "2"\nversion = "3"'),
     "bad.toml:6: TOML syntax: Cannot overwrite a value (at line 6, column 14)"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_each_error_names_file_line_and_field(text, message):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "bad.toml")
    err = info.value
    assert str(err) == message
    where = f"bad.toml:{err.line}" if err.line else "bad.toml"
    assert message == (f"{where}: {err.field}: {err.problem}" if err.field
                       else f"{where}: {err.problem}")


def test_the_base_recipe_is_valid():
    r = parse_recipe(BASE, "ok.toml")
    assert (r.name, r.version, r.description) == ("p", "2", "")
    assert r.calibration.mm_per_px == 0.1 and r.calibration.field_of_view_mm == FIELD_OF_VIEW_MM
    assert r.fiducial_diameter_mm is None and r.fiducial_box is None
    assert r.datum is None and r.lot is None
    assert r.zones[0].polygon == ((0, 0), (10, 0), (10, 10), (0, 10))  # a box as its corners
    assert r.prompts == (PromptSpec("scratch", (1.0, 1.0, 5.0, 5.0)),)


def test_every_section_parses_to_its_typed_values():
    text = sub(CAL, "[calibration]\nmm_per_px = 0.1\nfield_of_view_mm = [1, 500]\n") + """
[datum]
kind = "line"
points = [[0, 9], [20, 9]]

[lot]
aql = 2.5

[classes.pit]
description = "round"
max_area_px = 5
max_count = 2
min_score = 0.25

[[prompts]]
class = "pit"
frame = "relative"
points = [[0.5, 0.5], [0.1, 0.2]]
labels = [1, 0]
"""
    r = parse_recipe(text, "ok.toml")
    assert r.calibration.field_of_view_mm == (1.0, 500.0)
    assert r.datum == Datum("line", ((0.0, 9.0), (20.0, 9.0)))
    assert r.lot == LotPlan("II", 2.5)  # the level defaults to II
    pit = r.rule("pit")
    assert (pit.description, pit.max_count, pit.min_score) == ("round", 2, 0.25)
    assert pit.max_area_px == 5.0 and isinstance(pit.max_area_px, float)
    assert r.rule("scratch").min_score == 0.0 and r.rule("scratch").forbidden_zones == ("z1",)
    assert r.prompts[1] == PromptSpec("pit", None, ((0.5, 0.5), (0.1, 0.2)), (1, 0), "relative")
    assert r.prompts[1].to_prompts((100, 200)).points.tolist() == [[100, 50], [20, 20]]


def test_a_fiducial_recipe_allows_limits_in_mm_and_the_fiducial_frame():
    text = sub("mm_per_px = 0.1", "fiducial_diameter_mm = 4\nfiducial_box = [0, 0, 50, 50]")
    text += '\n[[prompts]]\nclass = "scratch"\nframe = "fiducial"\nbox = [-5, -5, 5, 5]\n'
    r = parse_recipe(text, "fid.toml")
    assert r.calibration.mm_per_px is None and r.fiducial_diameter_mm == 4
    assert r.fiducial_box == (0.0, 0.0, 50.0, 50.0)
    assert r.rule("scratch").max_length_mm == 2.0
    assert r.prompts[1].to_prompts(fiducial_xy=(25, 25)).boxes.tolist() == [[20, 20, 30, 30]]


def test_sections_are_checked_in_a_fixed_order_whatever_their_place_in_the_file():
    bad_zone = ZONE.replace("box = [0, 0, 10, 10]", "box = [10, 0, 0, 10]")
    bad_part = PART.replace('version = "2"\n', "")
    zone_first = "\n".join(["schema_version = 1\n", bad_zone, CLASS, bad_part])
    part_first = "\n".join(["schema_version = 1\n", bad_part, bad_zone, CLASS])
    for text in (zone_first, part_first):
        with pytest.raises(RecipeError) as info:
            parse_recipe(text, "bad.toml")
        assert info.value.field == "part"  # [part] is checked before [[zones]]
    good = "\n".join(["schema_version = 1\n", PROMPT, CLASS, ZONE, CAL, PART])
    assert parse_recipe(good, "ok.toml") == parse_recipe(BASE, "ok.toml")


def test_model_pin_parses_and_is_optional():
    assert parse_recipe(BASE, "ok.toml").model is None
    r = parse_recipe(BASE + MODEL.replace(SHA, SHA.upper()), "ok.toml")
    assert r.model == ModelPin("site@2", SHA)  # the sha256 is kept in lower case
    assert r.model.line == 22
    for name in ("learned-base", "vit_b", "site"):
        assert parse_recipe(BASE + MODEL.replace("site@2", name), "ok.toml").model.name == name
