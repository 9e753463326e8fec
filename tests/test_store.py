"""Inspection database on SQLite: round trip, audit trail, migrations, concurrent writers, and a
writer killed with SIGKILL at random moments."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.inspection.findings import Finding, Inspection, Reason, Verdict
from app.inspection.measure import measure
from app.store import InspectionStore, StoreError, database_url
from app.store.migrate import head_revision
from app.store.models import Base

ROOT = Path(__file__).resolve().parents[1]

# A writer process: inspections with (serial mod 4) + 1 defects each; prints "ID serial" after
# each commit, flushing, so the parent knows exactly what was committed.
WRITER = """
import sys
import numpy as np
from app.inspection.findings import Finding, Inspection, Reason, Verdict
from app.store import InspectionStore
db, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = InspectionStore(db)
mask = np.zeros((64, 64), bool); mask[8:20, 10:30] = True
print("ready", flush=True)
for k in range(n):
    nd = k % 4 + 1
    insp = Inspection(f"{tag}/{k}.png", "0" * 64, serial=f"{tag}-{k}", lot=tag,
                      findings=[Finding("scratch", mask, None, 0.5) for _ in range(nd)],
                      verdict=Verdict("FAIL", (Reason("max_count", "scratch", "too many"),)))
    store.add_inspection(insp, actor=tag)
    print(insp.id, insp.serial, flush=True)
"""


def make_inspection(serial="s1", lot="L1", n=2) -> Inspection:
    mask = np.zeros((40, 50), bool)
    mask[5:15, 10:30] = True
    findings = [
        Finding("scratch", mask, measure(mask), 0.8, {"boxes": [[10, 5, 30, 15]]}) for _ in range(n)
    ]
    verdict = Verdict("FAIL", (Reason("max_length", "scratch", "too long", 20.0, 10.0, "px", 0),))
    return Inspection(
        "img/a.png",
        "ab" * 32,
        part_id="P",
        serial=serial,
        lot=lot,
        station="st1",
        operator="ann",
        engine="sam",
        model_id="vit_b",
        checkpoint_sha256="cd" * 32,
        recipe_name="demo",
        recipe_version="1",
        findings=findings,
        verdict=verdict,
    )


def test_round_trip_and_wal(tmp_path):
    db = tmp_path / "i.db"
    with InspectionStore(db) as store:
        insp = make_inspection()
        iid = store.add_inspection(insp)
        back = store.get_inspection(iid)
    assert back.to_dict() == insp.to_dict()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()


def test_migrations_match_models(tmp_path):
    with InspectionStore(tmp_path / "m.db") as store, store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_upgrade_from_first_schema_keeps_rows_and_indexes_image_path(tmp_path):
    from alembic import command

    from app.store.migrate import alembic_config

    db = tmp_path / "old.db"
    command.upgrade(alembic_config(url=f"sqlite:///{db}"), "0001")  # a database made by 0.1
    con = sqlite3.connect(db)
    con.execute("INSERT INTO inspections (image_path, image_sha256, part_id, serial, lot, "
                "station, operator, time, engine, model_id, checkpoint_sha256, recipe_name, "
                "recipe_version, verdict) VALUES ('a.png', 'ab', '', '', '', '', '', "
                "'2026-11-23 06:00:00', '', '', '', '', '', NULL)")
    con.commit()
    before = {r[1] for r in con.execute("PRAGMA index_list(inspections)")}
    con.close()
    assert "ix_inspections_image_path" not in before
    with InspectionStore(db) as store:
        assert store.latest_inspection("a.png") is not None
    con = sqlite3.connect(db)
    after = {r[1] for r in con.execute("PRAGMA index_list(inspections)")}
    assert "ix_inspections_image_path" in after
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == head_revision()


def test_audit_trail_is_append_only(tmp_path):
    with InspectionStore(tmp_path / "a.db") as store:
        insp = make_inspection()
        store.add_inspection(insp, actor="batch")
        d0, d1 = (f.id for f in insp.findings)
        store.update_defect(d0, actor="bob", defect_class="crack")
        store.accept_defect(d0, actor="carol")
        store.delete_defect(d1, actor="bob")
        store.set_verdict(insp.id, Verdict("PASS"), actor="bob")
        trail = store.audit_trail(inspection_id=insp.id)
        assert [(a.actor, a.action) for a in trail] == [
            ("batch", "add_inspection"),
            ("bob", "update_defect"),
            ("carol", "accept_defect"),
            ("bob", "delete_defect"),
            ("bob", "set_verdict"),
        ]
        assert trail[1].before["defect_class"] == "scratch"
        assert trail[1].after["defect_class"] == "crack"
        assert [a.action for a in store.audit_trail(defect_id=d0)] == [
            "update_defect",
            "accept_defect",
        ]
        back = store.get_inspection(insp.id)
        assert [f.defect_class for f in back.findings] == ["crack"]
        assert back.findings[0].accepted_by == "carol"
        assert back.verdict == Verdict("PASS")
        with pytest.raises(StoreError, match="no defect"):
            store.accept_defect(999, actor="x")
    con = sqlite3.connect(tmp_path / "a.db")
    for sql in ("UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)


def test_defect_rates(tmp_path):
    with InspectionStore(tmp_path / "r.db") as store:
        store.add_inspection(make_inspection("a", "L1", 2))
        store.add_inspection(make_inspection("b", "L1", 0))
        store.add_inspection(make_inspection("c", "L2", 1))
        rates = {(r.lot, r.defect_class): r for r in store.defect_rates()}
    assert rates[("L1", "scratch")].inspections == 2
    assert rates[("L1", "scratch")].inspections_with_class == 1
    assert rates[("L1", "scratch")].defects == 2
    assert rates[("L1", "scratch")].rate == pytest.approx(0.5)
    assert rates[("L2", "scratch")].rate == pytest.approx(1.0)


def test_bad_locations(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        InspectionStore(tmp_path / "missing" / "x.db")
    with pytest.raises(StoreError, match="cannot"):
        InspectionStore("nosuchdialect://x")
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url(tmp_path / "x.db").startswith("sqlite:////")


def _writer(db: Path, tag: str, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), tag, str(n)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_complete(db: Path, committed: dict[int, str]) -> None:
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with InspectionStore(db) as store:
        for iid, serial in committed.items():
            insp = store.get_inspection(iid)
            k = int(serial.rsplit("-", 1)[1])
            assert insp.serial == serial
            assert len(insp.findings) == k % 4 + 1
            assert all(f.mask is not None and f.mask.sum() == 240 for f in insp.findings)
            assert insp.verdict is not None and len(insp.verdict.reasons) == 1
            assert [a.action for a in store.audit_trail(inspection_id=iid)] == ["add_inspection"]


def test_two_processes_write_one_file(tmp_path):
    db = tmp_path / "c.db"  # both writers also race to create and migrate it
    procs = [_writer(db, tag, 25) for tag in ("gui", "batch")]
    committed: dict[int, str] = {}
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        for line in out.splitlines()[1:]:
            iid, serial = line.split()
            committed[int(iid)] = serial
    assert len(committed) == 50  # distinct ids, nothing lost
    _check_complete(db, committed)
    with InspectionStore(db) as store:
        assert store.count_inspections() == 50


def test_sigkill_mid_write_leaves_consistent_db(tmp_path):
    db = tmp_path / "k.db"
    rng = random.Random(1234)
    committed: dict[int, str] = {}
    for round_ in range(5):
        p = _writer(db, f"r{round_}", 100000)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for _ in range(rng.randint(1, 15)):  # let it commit a few, then kill at a random moment
            iid, serial = p.stdout.readline().split()
            committed[int(iid)] = serial
        time.sleep(rng.uniform(0, 0.03))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        for line in out.splitlines():  # ids printed before the kill were committed
            parts = line.split()
            if len(parts) == 2:
                committed[int(parts[0])] = parts[1]
        assert p.returncode == -signal.SIGKILL
    assert len(committed) >= 5
    _check_complete(db, committed)


def test_readers_do_not_wait_for_a_writer(tmp_path, monkeypatch):
    import app.store.store as store_module

    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 500)  # fail fast if a read would block
    db = tmp_path / "w.db"
    with InspectionStore(db) as store:
        iid = store.add_inspection(make_inspection())
        writer = sqlite3.connect(db, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        writer.execute("INSERT INTO audit_events (time, actor, action) VALUES ('t', 'x', 'y')")
        assert store.get_inspection(iid).serial == "s1"
        assert store.count_inspections() == 1
        with pytest.raises(StoreError, match="locked"):
            store.add_inspection(make_inspection("s2"))
        writer.execute("ROLLBACK")
        store.add_inspection(make_inspection("s2"))  # the lock is gone: writing works again
        assert store.count_inspections() == 2


ONCE_WRITER = """
import sys
import numpy as np
from app.inspection.findings import Inspection
from app.store import InspectionStore
db, n = sys.argv[1], int(sys.argv[2])
store = InspectionStore(db)
print("ready", flush=True)
sys.stdin.readline()  # both writers start together
for k in range(n):
    insp = Inspection(f"part_{k}.png", "0" * 64, serial=str(k))
    print(store.add_inspection(insp, audit={"batch_key": f"key{k}"}, once_per="batch_key"),
          flush=True)
"""


def test_once_per_key_stores_an_inspection_once_even_with_two_writers(tmp_path):
    db = tmp_path / "once.db"
    with InspectionStore(db) as store:
        first = store.add_inspection(Inspection("a.png", "0" * 64), audit={"batch_key": "k"},
                                     once_per="batch_key")
        again = Inspection("a.png", "0" * 64)
        assert store.add_inspection(again, audit={"batch_key": "k"}, once_per="batch_key") == first
        assert again.id == first and store.count_inspections() == 1
        assert store.stored_with("a.png", "batch_key", "k") == first
        assert store.stored_with("b.png", "batch_key", "k") is None
        with pytest.raises(ValueError):
            store.add_inspection(Inspection("a.png", "0" * 64), once_per="batch_key")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", ONCE_WRITER, str(db), "20"], cwd=ROOT,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    outs = [p.communicate("go\n", timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    ids = [[int(x) for x in o.split()] for o, _ in outs]
    assert ids[0] == ids[1]  # both writers got the one stored inspection of each key
    with InspectionStore(db) as store:
        assert store.count_inspections() == 1 + 20
