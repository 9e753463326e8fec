"""Batch refusals and failures that must be loud: a locked or unwritable output folder, missing
or off-image prompts, COCO entries without an image, implausible calibrations, reports and
outputs that cannot be written (a full disk), temporaries left by a killed run."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from app.batch import BatchConfig, run_batch
from app.batch.out_folder import LOCK_NAME, OutputLock
from app.batch.runner import BatchError
from app.inspection.measure import Calibration, CalibrationError, measure
from app.inspection.recipe import RecipeError, parse_recipe
from app.outputs import atomic_write
from app.shell.cli import main as cli_main
from tests.batch_data import RECIPE_BASE, SIZE, write_parts

RECIPE = RECIPE_BASE


def config(tmp: Path, **kw) -> BatchConfig:
    kw.setdefault("engine", "classic")
    kw.setdefault("quiet", True)
    kw.setdefault("prompts", tmp / "in")
    return BatchConfig(tmp / "in", tmp / "out", **kw)


def stored_paths(out: Path) -> list[str]:
    """Image names of the stored inspections (read with sqlite3: the store is under test)."""
    with contextlib.closing(sqlite3.connect(out / "inspections.db")) as db:
        return sorted(Path(p).name for (p,) in db.execute("SELECT image_path FROM inspections"))


# --------------------------------------------------------------- the output folder

def test_second_run_on_the_same_out_is_refused_naming_folder_and_pid(tmp_path):
    write_parts(tmp_path / "in", 1)
    with OutputLock(tmp_path / "out"):  # another run holds the folder
        with pytest.raises(BatchError, match=rf"{tmp_path / 'out'}.*in use.*{os.getpid()}"):
            run_batch(config(tmp_path))
    assert run_batch(config(tmp_path)).exit_code == 0  # released: the next run goes ahead
    assert (tmp_path / "out" / LOCK_NAME).exists()


def test_unwritable_out_fails_before_the_engine_loads(tmp_path, capsys, monkeypatch):
    write_parts(tmp_path / "in", 1)
    (tmp_path / "file").write_text("not a folder")
    loaded = []

    def factory():
        loaded.append(1)
        from sam_engine.classic import ClassicEngine
        return ClassicEngine()

    bad = BatchConfig(tmp_path / "in", tmp_path / "file" / "out", prompts=tmp_path / "in",
                      quiet=True)
    with pytest.raises(BatchError, match="cannot write to the output folder .*file/out"):
        run_batch(bad, engine_factory=factory)
    # a read-only folder (simulated: the tests may run as root, who can write anywhere)
    real_open = os.open

    def read_only(path, *a, **kw):
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(BatchError, match="Read-only file system; give a writable --out"):
        run_batch(config(tmp_path), engine_factory=factory)
    assert not loaded
    capsys.readouterr()
    args = ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--prompts",
            str(tmp_path / "in"), "--engine", "classic", "--quiet"]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and "Traceback" not in err


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    write_parts(tmp_path / "in", 1)
    run_batch(config(tmp_path))
    old = time.time() - 3600
    stale = [tmp_path / "out" / "masks" / ".part_00.png.k2j4_x9a.tmp",
             tmp_path / "out" / ".coco.json.abcd1234.tmp"]
    keep = [tmp_path / "out" / "notes.tmp", tmp_path / "out" / ".notes.tmp"]
    for p in stale + keep:
        p.write_text("half")
        os.utime(p, (old, old))
    assert run_batch(config(tmp_path)).exit_code == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


# --------------------------------------------------------------- prompts

def test_image_without_prompt_file_fails_and_gets_no_verdict(tmp_path):
    write_parts(tmp_path / "in", 2)
    (tmp_path / "recipe.toml").write_text(RECIPE)
    (tmp_path / "in" / "part_01.json").unlink()
    result = run_batch(config(tmp_path, recipe=tmp_path / "recipe.toml"))
    assert result.exit_code == 1
    assert [r.rel for r in result.records] == ["part_00.png"]
    (fail,) = result.summary["failed"]
    assert "part_01.png" in fail["path"] and "no prompt file" in fail["error"]
    assert sum(result.summary["verdicts"].values()) == 1  # no verdict for the unexamined part
    assert stored_paths(tmp_path / "out") == ["part_00.png"]
    (tmp_path / "in" / "part_01.json").write_text("[]")  # "no defects", said explicitly
    again = run_batch(config(tmp_path, recipe=tmp_path / "recipe.toml"))
    assert again.exit_code == 0 and len(again.records) == 2


def _prompt_file(tmp: Path, defects: list[dict]) -> Path:
    p = tmp / "in" / "part_00.json"
    p.write_text(json.dumps({"defects": defects}))
    return p


@pytest.mark.parametrize("defect, given", [
    ({"kind": "pit", "points": [[-5, -5]]}, r"points \[-5, -5\]"),
    ({"kind": "pit", "point": [400, 10]}, r"points \[400, 10\]"),
    ({"kind": "pit", "box": [400, 300, 450, 350]}, r"box \[400, 300, 450, 350\]\).*entirely"),
    ({"kind": "pit", "box": [-10, 5, 40, 40]}, r"box \[-10, 5, 40, 40\]"),
])
def test_prompt_outside_the_image_fails_naming_the_file_and_the_prompt(tmp_path, defect, given):
    write_parts(tmp_path / "in", 1)
    p = _prompt_file(tmp_path, [defect])
    result = run_batch(config(tmp_path))
    assert result.exit_code == 1 and not result.records
    err = result.summary["failed"][0]["error"]
    h, w = SIZE
    assert str(p) in err and f"{w}x{h}" in err and "outside" in err
    assert re.search(given, err), err
    assert stored_paths(tmp_path / "out") == []


def test_yolo_box_entirely_outside_the_image_fails(tmp_path):
    write_parts(tmp_path / "in", 1)
    (tmp_path / "in" / "part_00.json").unlink()
    (tmp_path / "in" / "part_00.txt").write_text("0 0.999 0.5 0.001 0.2\n")  # a hair inside
    assert run_batch(config(tmp_path)).exit_code == 0
    # YOLO values are checked to lie in 0..1, so only a recipe's relative box can lie outside;
    # the check is exercised on the function the pipeline uses
    from app.batch.inspect_image import InspectError, image_prompts
    from app.inspection.recipe import PromptSpec

    spec = PromptSpec("pit", (1.2, 0.1, 1.5, 0.3), frame="relative")
    with pytest.raises(InspectError, match=r"r\.toml: prompt 3 \(pit, box \[1\.2, 0\.1, 1\.5, "
                       r"0\.3\] in the relative frame\).*entirely outside the 320x240"):
        image_prompts(spec, 2, SIZE, None, "r.toml", "img.png")


def test_coco_entries_without_an_image_are_reported_and_unlisted_images_fail(tmp_path,
                                                                           caplog):
    truth = write_parts(tmp_path / "in", 2)
    coco = {"images": [{"id": 1, "file_name": "part_00.png"}, {"id": 2, "file_name": "ghost.png"}],
            "annotations": [], "categories": [{"id": 1, "name": "pit"}]}
    for d in truth["part_00.png"]:
        x0, y0, x1, y1 = d["box"]
        coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": 1,
                                    "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0]})
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with caplog.at_level(logging.WARNING):
        result = run_batch(config(tmp_path, prompts=tmp_path / "coco.json"))
    assert result.summary["prompt_entries_without_image"] == ["ghost.png"]
    assert "ghost.png" in caplog.text and "coco.json" in caplog.text
    (fail,) = result.summary["failed"]
    assert "part_01.png" in fail["path"] and "not listed in" in fail["error"]
    assert [r.rel for r in result.records] == ["part_00.png"]


# --------------------------------------------------------------- calibration

def test_implausible_calibration_is_refused_with_the_reason(tmp_path):
    mask = np.zeros((480, 640), bool)
    mask[100:110, 100:300] = True
    assert measure(mask, Calibration(0.05)).feret_max_mm == pytest.approx(10.0, abs=0.2)
    with pytest.raises(CalibrationError, match=r"20 mm/px makes the 640x480 image 1.28e\+04 mm "
                       r"across, more than .*0.1\.\.2000 mm.*field_of_view_mm"):
        measure(mask, Calibration(20.0))
    with pytest.raises(CalibrationError, match="less than"):
        measure(mask, Calibration(1e-7))
    assert measure(mask, Calibration(20.0, (1.0, 20000.0))).feret_max_mm > 3000  # overridden
    assert measure(mask, Calibration(20.0, None)).mm_per_px == 20.0


def test_recipe_field_of_view_overrides_the_plausible_range(tmp_path):
    r = parse_recipe(RECIPE.replace("mm_per_px = 0.05", "mm_per_px = 20\n"
                                    "field_of_view_mm = [1, 20000]"))
    assert r.calibration.field_of_view_mm == (1.0, 20000.0)
    assert parse_recipe(RECIPE).calibration.field_of_view_mm == (0.1, 2000.0)
    with pytest.raises(RecipeError, match="field_of_view_mm"):
        parse_recipe(RECIPE.replace("mm_per_px = 0.05", "mm_per_px = 0.05\n"
                                    "field_of_view_mm = [5, 1]"))


def test_batch_refuses_an_implausible_mm_per_px_even_without_findings(tmp_path):
    write_parts(tmp_path / "in", 2)
    (tmp_path / "in" / "part_01.json").write_text("[]")  # no defects: would PASS
    (tmp_path / "recipe.toml").write_text(RECIPE)
    from sam_engine.classic import ClassicEngine

    class Counting(ClassicEngine):
        encoded = 0

        def set_image(self, image):
            Counting.encoded += 1
            return super().set_image(image)

    result = run_batch(config(tmp_path, recipe=tmp_path / "recipe.toml", mm_per_px=20),
                       engine=Counting())
    assert result.exit_code == 1 and not result.records
    assert Counting.encoded == 0  # refused before the encoder ran
    assert result.summary["images_failed"] == 2
    assert all("20 mm/px" in f["error"] and "field_of_view_mm" in f["error"]
               for f in result.summary["failed"])
    assert stored_paths(tmp_path / "out") == []
    (tmp_path / "wide.toml").write_text(RECIPE.replace(
        "mm_per_px = 0.05", "mm_per_px = 0.05\nfield_of_view_mm = [1, 20000]"))
    ok = run_batch(config(tmp_path, recipe=tmp_path / "wide.toml", mm_per_px=20))
    assert ok.exit_code == 0 and len(ok.records) == 2


# --------------------------------------------------------------- writes that fail

def _failing_write(monkeypatch, name_part: str, exc: BaseException):
    real = atomic_write.write_bytes

    def write(path, data):
        if name_part in str(path):
            raise exc
        return real(path, data)

    monkeypatch.setattr(atomic_write, "write_bytes", write)


def test_disk_full_while_writing_an_image_fails_that_image_and_the_run_ends(tmp_path, capsys,
                                                                            monkeypatch):
    write_parts(tmp_path / "in", 3)
    _failing_write(monkeypatch, "part_01", OSError(errno.ENOSPC, "No space left on device"))
    result = run_batch(config(tmp_path))
    assert result.exit_code == 1 and [r.rel for r in result.records] == ["part_00.png",
                                                                         "part_02.png"]
    (fail,) = result.summary["failed"]
    assert "part_01.png" in fail["path"] and "disk is full" in fail["error"]
    assert "reported" in capsys.readouterr().out  # the summary is printed
    assert stored_paths(tmp_path / "out") == ["part_00.png", "part_02.png"]
    monkeypatch.undo()
    again = run_batch(config(tmp_path))  # space freed: the rest is done
    assert again.exit_code == 0 and again.summary["images_inspected"] == 1


def test_disk_full_while_writing_the_job_reports_is_counted_and_summarised(tmp_path, capsys,
                                                                           monkeypatch):
    write_parts(tmp_path / "in", 2)
    _failing_write(monkeypatch, "findings.csv", OSError(errno.ENOSPC, "No space left"))
    result = run_batch(config(tmp_path))
    assert result.exit_code == 1 and result.summary["reports_failed"] == 1
    assert "disk is full" in result.summary["failed_reports"][0]["error"]
    assert "disk is full" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["reports_failed"] == 1 and saved["images_reported"] == 2
    _failing_write(monkeypatch, "summary.json", OSError(errno.ENOSPC, "No space left"))
    again = run_batch(config(tmp_path))
    assert again.exit_code == 1 and "summary.json" in again.summary["failed_reports"][-1]["path"]
    assert "summary.json" in capsys.readouterr().out


def test_failed_per_image_reports_count_in_summary_and_exit_code(tmp_path, monkeypatch):
    import app.report

    write_parts(tmp_path / "in", 2)
    real = app.report.write_report

    def write_report(inspection, dest, **kw):
        if "part_01" in str(dest):
            raise RuntimeError("no PDF renderer")
        return real(inspection, dest, **kw)

    monkeypatch.setattr(app.report, "write_report", write_report)
    result = run_batch(config(tmp_path, report="md", no_store=True))
    assert result.exit_code == 1 and result.summary["images_failed"] == 0
    assert result.summary["reports_failed"] == 1
    (f,) = json.loads((tmp_path / "out" / "summary.json").read_text())["failed_reports"]
    assert f["path"].endswith("reports/part_01.md") and "no PDF renderer" in f["error"]
    assert (tmp_path / "out" / "reports" / "part_00.md").exists()


def test_report_command_on_a_full_disk_names_the_file(tmp_path, capsys, monkeypatch):
    from tests.report_factory import known_inspection

    findings = tmp_path / "findings.json"
    findings.write_text(json.dumps(known_inspection().to_dict()))
    _failing_write(monkeypatch, "report.md", OSError(errno.ENOSPC, "No space left"))
    out = tmp_path / "report.md"
    assert cli_main(["report", str(findings), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out}: report not written: the disk is full" in err and "Traceback" not in err
