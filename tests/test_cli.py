"""The sam-inspect console script: demo and segment, exit codes and messages."""

import json

import cv2
import numpy as np
import pytest

from app.shell.cli import main
from sam_engine.weights import registry


@pytest.fixture(autouse=True)
def no_installed_models(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "model_dirs", lambda: [tmp_path / "none"])


def test_demo_writes_results_and_says_where(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no SAM checkpoint installed" in text
    assert f"results: {out.resolve()}" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 6 and summary["failed"] == 0
    assert summary["mean_iou_gt"] > 0.6  # the default engine segments the samples well
    rows = (out / "findings.csv").read_text().splitlines()
    assert rows[0].startswith("image,defect,kind") and len(rows) == 1 + summary["defects"]
    assert set(summary["verdicts"].values()) <= {"PASS", "FAIL"} and len(summary["verdicts"]) == 6
    assert "verdicts:" in text
    # every inspection is in the database, once, also after a second run
    assert main(["demo", "--out", str(out)]) == 0
    from app.store import InspectionStore

    with InspectionStore(out / "inspections.db") as store:
        assert store.count_inspections() == 6
    mask = cv2.imread(str(out / "part_01_metal_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.max() >= 1


def test_demo_skips_a_corrupt_sample_and_reports_it(tmp_path, capsys):
    src = tmp_path / "samples"
    src.mkdir()
    img = np.full((60, 80, 3), 120, np.uint8)
    img[20:30, 30:50] = 20
    cv2.imwrite(str(src / "good.png"), img)
    (src / "good.json").write_text(json.dumps({"defects": [{"box": [28, 18, 52, 32]}]}))
    (src / "bad.png").write_bytes(b"\x89PNG broken")
    (src / "bad.json").write_text("[]")
    assert main(["demo", "--samples", str(src), "--out", str(tmp_path / "o")]) == 1
    text = capsys.readouterr().out
    assert "bad.png: skipped" in text and "good.png: 1 defect," in text


def test_segment_writes_mask_overlay_and_json(tmp_path, capsys):
    img = np.full((80, 100, 3), 200, np.uint8)
    img[30:50, 40:70] = 40
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), img)
    assert main(["segment", str(path), "--box", "36,26,74,54", "--out", str(tmp_path)]) == 0
    mask = cv2.imread(str(tmp_path / "part_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (80, 100)
    inter = ((mask > 0) & (img[..., 0] == 40)).sum()
    assert inter / max(((mask > 0) | (img[..., 0] == 40)).sum(), 1) > 0.8
    info = json.loads((tmp_path / "part_result.json").read_text())
    assert info["engine"].startswith("classic") and len(info["areas_px"]) == 1


@pytest.mark.parametrize(
    "args, words",
    [(["--box", "50,10,20,30"], "empty or inverted"),
     (["--box", "1,2,3"], "expected 4 comma-separated numbers"),
     (["--point", "500,5"], "outside the 100x80 image")],
)
def test_segment_bad_prompt_is_one_clear_line(tmp_path, capsys, args, words):
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), np.zeros((80, 100, 3), np.uint8))
    assert main(["segment", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam-inspect: error:") and words in err and "Traceback" not in err


def test_segment_missing_image_names_it(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.png"), "--box", "0,0,5,5"]) == 2
    assert "nope.png" in capsys.readouterr().err


def _part(tmp_path, shape=(80, 100, 3)):
    path = tmp_path / "part.png"
    cv2.imwrite(str(path), np.zeros(shape, np.uint8))
    return path


@pytest.mark.parametrize("how", ["file_in_the_way", "read_only_dir"])
def test_segment_unwritable_out_fails_before_loading_the_engine(tmp_path, capsys, monkeypatch,
                                                                 how):
    import os

    from app.shell.commands import segment

    if how == "file_in_the_way":
        (tmp_path / "blocker").write_text("x")
        out = tmp_path / "blocker" / "results"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only folder")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o555)
    loaded = []
    monkeypatch.setattr(segment, "load_engine", lambda *a, **k: loaded.append(1) or 1 / 0)
    assert main(["segment", str(_part(tmp_path)), "--box", "1,1,9,9", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam-inspect: error:") and "Traceback" not in err
    assert str(out) in err and "--out" in err and not loaded


@pytest.mark.parametrize("form", [["--point", "-5,-5"], ["--point=-5,-5"],
                                  ["--box", "-5,-5,10,10"], ["--point", "-5,5,1"]])
def test_segment_negative_prompt_parses_and_is_reported_outside(tmp_path, capsys, form):
    assert main(["segment", str(_part(tmp_path)), *form]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam-inspect: error:") and "Traceback" not in err
    assert "outside the 100x80 image" in err and "-5" in err


def test_negative_values_are_glued_only_after_prompt_options():
    from app.shell.cli_args import glue_negative_values

    argv = ["segment", "a.png", "--point", "-5,-5", "--box", "-1,-2,3,4", "--out", "-x",
            "--point", "--multimask"]
    assert glue_negative_values(argv) == ["segment", "a.png", "--point=-5,-5",
                                          "--box=-1,-2,3,4", "--out", "-x", "--point",
                                          "--multimask"]


def test_segment_huge_image_is_refused_naming_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAM_INSPECT_MAX_PIXELS", "5000")
    path = _part(tmp_path)
    assert main(["segment", str(path), "--box", "1,1,9,9", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "part.png" in err and "100x80" in err and "SAM_INSPECT_MAX_PIXELS" in err
    assert not (tmp_path / "o" / "part_mask.png").exists()


def test_a_command_imports_only_its_own_module(tmp_path):
    """`sam-inspect segment` must not pay for export-onnx's torch import (seconds per call)."""
    import subprocess
    import sys

    code = ("import sys; from app.shell.cli import main; "
            f"main(['segment', {str(tmp_path / 'nope.png')!r}, '--box', '0,0,5,5']); "
            "print(sorted(m for m in ('torch', 'app.shell.commands.export_onnx') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout + proc.stderr
    assert "nope.png" in proc.stderr


def test_help_still_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("segment", "batch", "export-onnx", "report"))


def test_demo_unwritable_out_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "blocker").write_text("x")
    out = tmp_path / "blocker" / "demo"
    assert main(["demo", "--engine", "classic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sam-inspect: error: --out") and str(out) in err
