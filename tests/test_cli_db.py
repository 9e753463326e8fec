"""`sam-inspect db export|stats` (the subcommand module, driven through its own parser)."""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from app.commands import db as db_cmd
from app.store import InspectionStore
from sam_engine.errors import SamEngineError
from tests.test_store import make_inspection


def run_db(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sam-inspect")
    db_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "inspections.db"
    with InspectionStore(path) as store:
        store.add_inspection(make_inspection("a", "L1", 2))
        store.add_inspection(make_inspection("b", "L1", 0))
        store.add_inspection(make_inspection("c", "L2", 1))
    return path


def test_export_csv_stdout(db, capsys):
    assert run_db(["db", "--db", str(db), "export", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2 + 1 + 1  # one row per defect, one for the defect-free inspection
    assert {r["serial"] for r in rows} == {"a", "b", "c"}
    first = rows[0]
    assert first["defect_class"] == "scratch" and first["area_px"] == "200"
    assert first["verdict"] == "FAIL" and "too long" in first["reasons"]
    assert json.loads(first["bbox"]) == [10, 5, 30, 15]


def test_export_csv_lot_to_file(db, tmp_path):
    out = tmp_path / "l2.csv"
    assert run_db(["db", "--db", str(db), "export", "--lot", "L2", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["serial"] for r in rows] == ["c"]


def test_export_coco(db, tmp_path):
    out = tmp_path / "coco.json"
    assert run_db(["db", "--db", str(db), "export", "--format", "coco", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["images"]) == 3 and len(data["annotations"]) == 3
    assert data["categories"] == [{"id": 1, "name": "scratch", "supercategory": "defect"}]
    ann = data["annotations"][0]
    assert ann["area"] == 200 and ann["bbox"] == [10.0, 5.0, 20.0, 10.0]
    assert ann["segmentation"]["size"] == [40, 50]
    assert data["images"][0]["height"] == 40 and data["images"][0]["width"] == 50
    assert run_db(["db", "--db", str(db), "export", "--format", "coco"]) == 2  # needs -o


def test_stats(db, capsys):
    assert run_db(["db", "--db", str(db), "stats"]) == 0
    out = capsys.readouterr().out
    assert "3 inspections" in out
    line_l1 = next(ln for ln in out.splitlines() if ln.startswith("L1"))
    assert line_l1.split() == ["L1", "scratch", "2", "1", "50.0%", "2"]


def test_missing_database(tmp_path):
    with pytest.raises(SamEngineError, match="no database"):
        run_db(["db", "--db", str(tmp_path / "none.db"), "stats"])
