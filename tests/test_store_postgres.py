"""The inspection store against a real PostgreSQL server started on loopback for this test.

Skipped, with the reason, when Debian's PostgreSQL binaries (apt-get install postgresql) are
absent or the server cannot start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.test_store import make_inspection


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install psycopg[binary])")
    bindir = _bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="sam_inspect_pg_"))
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as 'postgres'
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root and no 'postgres' user to run the server as")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [
                *as_user,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *ctl,
                "-w",
                "-t",
                "60",
                "-l",
                str(base / "log"),
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=90,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start: {exc} {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def test_round_trip_audit_and_rates_on_postgres(pg_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from app.store import InspectionStore

    with InspectionStore(pg_url) as store:
        insp = make_inspection("pg-1", "LP", 2)
        iid = store.add_inspection(insp, actor="line")
        assert store.get_inspection(iid).to_dict() == insp.to_dict()
        store.accept_defect(insp.findings[0].id, actor="ann")
        assert [a.action for a in store.audit_trail(inspection_id=iid)] == [
            "add_inspection",
            "accept_defect",
        ]
        rate = next(r for r in store.defect_rates() if r.lot == "LP")
        assert (rate.inspections, rate.defects) == (1, 2)
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_events"))
    with InspectionStore(pg_url) as again:  # reopening finds the schema at head
        assert again.count_inspections() >= 1
