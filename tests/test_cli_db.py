"""`sam-inspect db export|stats` (the subcommand module, driven through its own parser)."""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest

from app.shell.commands import db as db_cmd
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


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """The whole command line: exit code, stdout, stderr."""
    from app.shell.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _revision(path) -> str:
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        con.close()


def test_stats_on_a_database_from_a_newer_version(db, capsys):
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = '0099_future'")
    con.commit()
    con.close()
    for action in (["stats"], ["export", "-o", str(db.parent / "x.csv")], ["upgrade"]):
        rc, out, err = cli(["db", "--db", str(db), *action], capsys)
        assert rc != 0
        assert "newer sam-inspect" in err and "0099_future" in err and str(db) in err
        assert "Traceback" not in err + out
    assert not (db.parent / "x.csv").exists()


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "not a database":
        path.write_bytes(b"name,value\nnot,sqlite\n" * 300)
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "one page flipped":  # opens fine; reading every page finds it
        data[2 * 4096] ^= 0x40
        path.write_bytes(bytes(data))
    elif how == "bit flipped":
        page = 4096
        for k in range(1, len(data) // page):  # one bit of every b-tree page's type byte
            data[k * page] ^= 0x40
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["not a database", "truncated", "bit flipped",
                                 "one page flipped"])
def test_damaged_database_is_named_and_leaves_no_csv(db, capsys, how):
    _damage(db, how)
    out_csv = db.parent / "out.csv"
    for action in (["stats"], ["export", "-o", str(out_csv)],
                   ["export", "--format", "coco", "-o", str(db.parent / "c.json")]):
        rc, out, err = cli(["db", "--db", str(db), *action], capsys)
        assert rc != 0, (how, action, out)
        assert str(db) in err and ("damaged" in err or "not a sam-inspect database" in err)
        assert "Traceback" not in err + out
    assert not out_csv.exists() and not (db.parent / "c.json").exists()


def _old_database(path):
    from alembic import command

    from app.store.migrate import alembic_config

    command.upgrade(alembic_config(url=f"sqlite:///{path}"), "0001")


def test_read_only_commands_never_migrate_upgrade_says_what_it_did(tmp_path, capsys):
    from app.store.migrate import head_revision

    db = tmp_path / "old.db"
    _old_database(db)
    rc, out, err = cli(["db", "--db", str(db), "stats"], capsys)
    assert rc != 0 and "older schema" in err and "upgrade" in err and str(db) in err
    assert _revision(db) == "0001"  # untouched
    rc, out, err = cli(["db", "--db", str(db), "upgrade"], capsys)
    assert rc == 0
    assert f"upgraded database {db} from schema revision 0001 to {head_revision()}" in out
    assert _revision(db) == head_revision()
    rc, out, err = cli(["db", "--db", str(db), "upgrade"], capsys)
    assert rc == 0 and "already" in out
    rc, out, err = cli(["db", "--db", str(db), "stats"], capsys)
    assert rc == 0 and "0 inspections" in out


def test_stats_does_not_write(db, capsys):
    before = db.stat().st_mtime_ns, db.read_bytes()
    rc, out, _ = cli(["db", "--db", str(db), "stats"], capsys)
    assert rc == 0 and "3 inspections" in out
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before
