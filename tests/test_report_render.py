"""Report documents (Markdown, HTML, PDF) and the `sam-inspect report` command."""

import json
import re
from datetime import UTC, datetime

import pytest

from app.inspection.recipe import load_recipe
from app.report import render, write_report
from app.shell.cli import main
from tests.report_factory import RECIPE, SAMPLES, known_inspection, sample_inspection

ISSUED = datetime(2025, 7, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample():
    return sample_inspection("part_01_metal")


def test_markdown_has_the_iso_17020_fields_and_images(sample, tmp_path):
    out = tmp_path / "r.md"
    report = write_report(sample, out, recipe=load_recipe(RECIPE), approver="Q. Lead",
                          issued=ISSUED, image_root=str(SAMPLES))
    md = out.read_text()
    for field in ("Report id", "Issue date", "2025-07-02", "Inspection date", "Part",
                  "part_01_metal", "Serial", "Lot", "Station", "Operator", "Approved by",
                  "Q. Lead", "## Method", "engine classic", "recipe demo_part version 1.0.0",
                  "## Results", "## Statement of conformity", "## Signatures"):
        assert field in md, field
    assert re.search(r"# Inspection report R-\d{8}-[0-9A-F]{8}", md)
    assert "The part CONFORMS" in md and sample.verdict.status == "PASS"
    assert "length ≤ 3.00 mm" in md  # requirement from the recipe beside the result
    assert report.narrative.status == "template"
    n = len(sample.findings)
    assert sorted(p.name for p in (tmp_path / "r_images").iterdir()) == sorted(
        ["part.png"] + [f"defect_{i}.png" for i in range(1, n + 1)])
    assert md.count("](r_images/") == n + 1


def test_html_is_self_contained_and_pdf_is_a_pdf(sample, tmp_path):
    html = render(sample, "html", image_root=str(SAMPLES), issued=ISSUED)
    assert html.count("data:image/png;base64,") == len(sample.findings) + 1
    assert "Statement of conformity" in html and "<table" in html
    pdf = write_report(sample, tmp_path / "r.pdf", image_root=str(SAMPLES), issued=ISSUED)
    data = (tmp_path / "r.pdf").read_bytes()
    assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
    assert data.count(b"/Subtype /Image") >= len(sample.findings) + 1
    assert pdf.facts.report_id.startswith("R-")


def test_report_without_image_says_so():
    md = render(known_inspection(), "md", issued=ISSUED)
    assert "image not available: part_x.png" in md
    assert "DOES NOT CONFORM" in md and "scratch #1: length 3.50 mm > allowed 3.00 mm" in md


def test_report_id_is_unique_and_stable():
    a, b = known_inspection(), known_inspection()
    b.serial = "SN778900"
    ids = {re.search(r"R-\d{8}-[0-9A-F]{8}", render(x, "md")).group(0) for x in (a, a, b)}
    assert len(ids) == 2


def test_cli_generate_falls_back_to_the_template_with_a_clear_message(tmp_path, capsys):
    findings = tmp_path / "insp.json"
    findings.write_text(json.dumps(known_inspection().to_dict()))
    rc = main(["report", str(findings), "--out", str(tmp_path / "r.html"),
               "--base", str(tmp_path / "missing-model")])
    assert rc == 0
    cap = capsys.readouterr()
    assert "no such model folder" in cap.err and "falling back to the template" in cap.err
    assert "(template)" in cap.out
    html = (tmp_path / "r.html").read_text()
    assert "report model not available" in html and "P-4711" in html


def test_cli_rejects_a_bad_findings_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad), "--out", str(tmp_path / "r.md")]) == 2
    assert "not an inspection JSON" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "none.json"), "--out", "x.md"]) == 2


def test_cli_build_data(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["report", "build-data", "--out", str(out), "--n", "6", "--style", "en",
                 "--style", "de_terse"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 12 and "{d1." in lines[0]
    assert "pairs kept" in capsys.readouterr().out


def test_render_function_is_not_shadowed_by_a_submodule():
    import importlib

    import app.report

    importlib.import_module("app.report.documents")  # what write_report imports
    assert callable(app.report.render)
