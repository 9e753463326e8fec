"""The inspection database when something outside SQLite breaks its assumptions: the process
loses its POSIX locks (any open()+close() of the database file in the process drops them, see
SQLite's "How To Corrupt An SQLite Database File" 2.2), another process then deletes the
write-ahead log, the WAL is deleted or the file replaced, a damaged file, a newer schema. Every
write either reaches the file (seen by a fresh process) or raises "not saved"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import event

from app.store import InspectionStore, NotSavedError, StoreError
from tests.test_store import make_inspection

ROOT = Path(__file__).resolve().parents[1]
LINUX_LOCKS = Path("/proc/locks").is_file()

# another program reading the database and closing it (as the sqlite3 shell would); when it
# believes it is the last connection it checkpoints the WAL and deletes it
READ_AND_CLOSE = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
print(con.execute("SELECT count(*) FROM inspections").fetchone()[0])
con.close()
"""

# another program holding the database open until its stdin closes
HOLD_OPEN = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("SELECT count(*) FROM inspections").fetchone()
print("open", flush=True)
sys.stdin.read()
con.close()
"""


def count_elsewhere(db: Path) -> int:
    """Inspections as a fresh process sees them (what survives a kill of this one)."""
    out = subprocess.run([sys.executable, "-c", READ_AND_CLOSE, str(db)], capture_output=True,
                         text=True, check=True, timeout=60)
    return int(out.stdout)


def serials_elsewhere(db: Path) -> set[str]:
    code = ("import sqlite3, sys; con = sqlite3.connect(sys.argv[1]); "
            "print('\\n'.join(r[0] for r in con.execute('SELECT serial FROM inspections')))")
    out = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True,
                         check=True, timeout=60)
    return set(out.stdout.split())


def drop_locks(db: Path) -> None:
    """What a file dialog sniffing file types did: open and close the database's files."""
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{db}{suffix}")
        if p.exists():
            with open(p, "rb") as fh:
                fh.read(16)


def holds_lock(path: Path) -> bool:
    """Whether this process holds a POSIX lock on path (Linux /proc/locks)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pid = str(os.getpid())
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiting lock request, not a held lock
            continue
        if len(fields) >= 6 and fields[4] == pid and fields[5] == dev:
            return True
    return False


@pytest.fixture()
def db(tmp_path):
    return tmp_path / "inspections.db"


def test_the_fault_is_real_without_a_reopen(db):
    """The premise, with plain sqlite3: after a foreign close, another reader deletes the WAL
    and this process's next commits no longer reach the file."""
    import sqlite3

    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("CREATE TABLE inspections (serial TEXT)")
    con.execute("INSERT INTO inspections VALUES ('a')")
    drop_locks(db)
    assert count_elsewhere(db) == 1
    assert not Path(f"{db}-wal").exists()  # the other process took it for the last user
    con.execute("INSERT INTO inspections VALUES ('b')")
    assert count_elsewhere(db) == 1  # 'b' went into the deleted WAL: lost on a kill
    con.close()


def test_lost_locks_and_deleted_wal_next_write_reaches_the_file(db):
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        drop_locks(db)
        assert count_elsewhere(db) == 1
        store.add_inspection(make_inspection("b"))
        assert serials_elsewhere(db) == {"a", "b"}
        assert store.count_inspections() == 2


def test_lost_locks_are_noticed_before_the_wal_vanishes(db):
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        drop_locks(db)
        store.add_inspection(make_inspection("b"))  # reopens: holds its locks again
        if LINUX_LOCKS:
            assert holds_lock(db)
        assert count_elsewhere(db) == 2
        assert Path(f"{db}-wal").exists()  # the reader saw this process and left the WAL
        store.add_inspection(make_inspection("c"))
        assert serials_elsewhere(db) == {"a", "b", "c"}


def test_reads_after_lost_locks_see_the_file(db):
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        drop_locks(db)
        assert count_elsewhere(db) == 1  # WAL deleted by the other reader
        code = ("import sys; from app.store import InspectionStore; "
                "from tests.test_store import make_inspection; "
                "InspectionStore(sys.argv[1]).add_inspection(make_inspection('other'))")
        subprocess.run([sys.executable, "-c", code, str(db)], cwd=ROOT, check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})  # another station
        assert store.count_inspections() == 2
        store.add_inspection(make_inspection("b"))
    check_intact(db)
    assert serials_elsewhere(db) == {"a", "other", "b"}


def check_intact(db: Path) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()


def test_deleted_wal_is_noticed_and_the_next_write_reaches_the_file(db):
    InspectionStore(db).close()  # the schema is in the file, the WAL checkpointed
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        os.remove(f"{db}-wal")  # e.g. a cleanup script; 'a' was only in there
        store.add_inspection(make_inspection("b"))
    check_intact(db)
    assert "b" in serials_elsewhere(db)


def test_deleted_wal_of_a_new_database_says_not_saved(db):
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        os.remove(f"{db}-wal")  # the tables themselves were only in there
        with pytest.raises(NotSavedError, match="restore it from a backup"):
            store.add_inspection(make_inspection("b"))


def test_replaced_database_file_is_reopened(db, tmp_path):
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        other = tmp_path / "other.db"
        with InspectionStore(other) as second:
            second.add_inspection(make_inspection("restored"))
        os.replace(other, db)  # restored from a backup while the window is open
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        store.add_inspection(make_inspection("b"))
        assert serials_elsewhere(db) == {"restored", "b"}


def test_wal_vanishing_during_a_commit_says_not_saved(db):
    """The WAL goes away between the check before a write and its commit, while another
    process holds the database: the commit cannot reach the file, and the store says so."""
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        holder: list[subprocess.Popen] = []

        def meanwhile(_conn) -> None:
            if holder:
                return
            drop_locks(db)
            assert count_elsewhere(db) == 1  # deletes the WAL (this process has no locks)
            p = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(db)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "open"
            holder.append(p)

        event.listen(store.engine, "commit", meanwhile)
        try:
            with pytest.raises(NotSavedError, match=r"not saved.*inspections\.db"):
                store.add_inspection(make_inspection("b"))
        finally:
            event.remove(store.engine, "commit", meanwhile)
            for p in holder:
                p.communicate("", timeout=60)
        assert serials_elsewhere(db) == {"a"}
        store.add_inspection(make_inspection("c"))  # and the store works again
        assert serials_elsewhere(db) == {"a", "c"}


def test_not_saved_is_a_store_error():
    assert issubclass(NotSavedError, StoreError)


def look_then_cancel(db: Path, looked: list[str], polls: int = 500) -> None:
    """Once the open file dialog lists db's folder: ask its model for everything a view shows
    (and the type of the database files, which the *.pdf filter hides), then cancel."""
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtWidgets import QApplication, QFileDialog, QFileSystemModel

    fd = next((w for w in QApplication.topLevelWidgets()
               if isinstance(w, QFileDialog) and w.isVisible()), None)
    model = None if fd is None else fd.findChild(QFileSystemModel)
    if model is None or (not model.index(str(db)).isValid() and polls > 0):
        QTimer.singleShot(10, lambda: look_then_cancel(db, looked, polls - 1))
        return
    root = model.index(str(db.parent))
    for r in range(model.rowCount(root)):
        for c in range(model.columnCount(root)):
            model.data(model.index(r, c, root))
            model.data(model.index(r, c, root), Qt.ItemDataRole.DecorationRole)
    for suffix in ("", "-wal", "-shm"):
        idx = model.index(f"{db}{suffix}")
        looked.append(model.type(idx))
        model.fileIcon(idx)
    looked.append(fd.directory().absolutePath())
    fd.reject()


def assert_locks_kept(store: InspectionStore, db: Path) -> None:
    if LINUX_LOCKS:
        assert holds_lock(db)
    assert count_elsewhere(db) == 1
    assert Path(f"{db}-wal").exists()  # the other reader saw this process still there
    store.add_inspection(make_inspection("b"))
    assert serials_elsewhere(db) == {"a", "b"}


def test_report_save_dialog_leaves_the_database_locks_alone(qtbot, db):
    """Report > Save (then Cancel) in the folder of inspections.db: the dialog must not open
    the database's files (closing them would drop this process's locks)."""
    from PySide6.QtCore import QTimer

    from app.gui.report_dialog import ReportDialog

    with InspectionStore(db) as store:
        insp = make_inspection("a")
        store.add_inspection(insp)
        if LINUX_LOCKS:
            assert holds_lock(db)
        report = ReportDialog(insp, None, None)
        qtbot.addWidget(report)
        report.folder = db.parent
        looked: list[str] = []
        QTimer.singleShot(0, lambda: look_then_cancel(db, looked))
        report.choose_file()
        assert looked and looked[-1] == str(db.parent)
        assert_locks_kept(store, db)


@pytest.mark.parametrize("which", ["folder", "open"])
def test_other_file_dialogs_leave_the_database_locks_alone(qtbot, db, which):
    from PySide6.QtCore import QTimer

    from app.gui.file_dialog import get_existing_directory, get_open_file_name

    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        looked: list[str] = []
        QTimer.singleShot(0, lambda: look_then_cancel(db, looked))
        if which == "folder":
            assert get_existing_directory(None, "Open a folder", str(db.parent)) == ""
        else:
            assert get_open_file_name(None, "Open a recipe", str(db.parent),
                                      "Recipes (*.toml)") == ""
        assert looked and looked[-1] == str(db.parent)
        assert_locks_kept(store, db)


def test_autosave_keeps_the_window_to_what_is_stored(db, monkeypatch):
    from app.gui.autosave import Autosave, Station

    with InspectionStore(db) as store:
        auto = Autosave(store, None, Station(operator="ann"))
        insp = make_inspection("a", n=1)
        findings, insp.findings, insp.verdict, insp.id = insp.findings, [], None, None
        auto.add(insp, findings)
        auto.finish(insp)
        verdict = insp.verdict

        def not_saved(*_a, **_k):
            raise NotSavedError(f"not saved: the write-ahead log {db}-wal was deleted")

        monkeypatch.setattr(store, "update_defect", not_saved)
        monkeypatch.setattr(store, "set_verdict", not_saved)
        with pytest.raises(NotSavedError, match="not saved"):
            auto.set_class(insp, insp.findings[0], "crack")
        assert insp.findings[0].defect_class == "scratch"
        monkeypatch.setattr(store, "delete_defect", not_saved)
        with pytest.raises(NotSavedError):
            auto.remove(insp, [insp.findings[0]])
        assert len(insp.findings) == 1
        assert verdict is not None
        insp.verdict = None  # shown "in progress" (as after an undone finish)
        with pytest.raises(NotSavedError):
            auto.finish(insp)
        assert insp.verdict is None  # not shown as judged: the judgement is not stored
        monkeypatch.undo()
        assert store.get_inspection(insp.id).findings[0].defect_class == "scratch"


def test_stale_log_is_never_checkpointed_over_newer_pages(db):
    """A commit went into a deleted WAL after another station wrote: reopening must not copy
    the stale frames over that station's pages (that would lose or corrupt its records)."""
    code = ("import sys; from app.store import InspectionStore; "
            "from tests.test_store import make_inspection; "
            "InspectionStore(sys.argv[1]).add_inspection(make_inspection('other'))")
    with InspectionStore(db) as store:
        store.add_inspection(make_inspection("a"))
        done: list[bool] = []

        def meanwhile(_conn) -> None:  # just before "b" is committed
            if done:
                return
            done.append(True)
            drop_locks(db)
            assert count_elsewhere(db) == 1  # deletes the WAL
            subprocess.run([sys.executable, "-c", code, str(db)], cwd=ROOT, check=True,
                           timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})

        event.listen(store.engine, "commit", meanwhile)
        try:
            with pytest.raises(NotSavedError, match="not saved"):
                store.add_inspection(make_inspection("b"))
        finally:
            event.remove(store.engine, "commit", meanwhile)
    check_intact(db)
    assert serials_elsewhere(db) == {"a", "other"}
