"""InspectionStore: the inspection database behind batch mode, the GUI and the line runtime.

SQLite (one file, WAL mode, busy timeout, every transaction BEGIN IMMEDIATE so concurrent
writers queue instead of failing) by default; any SQLAlchemy URL otherwise (e.g.
postgresql+psycopg://user@host/db). The schema is brought to the newest Alembic revision on open
(not with readonly=True: then it must already be the newest).
Each public method that writes runs in one transaction: an image's inspection, defects, verdict
and audit event are stored together or not at all.

SQLite's locks are POSIX advisory locks, which the kernel drops for the whole process as soon as
any code in it closes any descriptor of the file (a file dialog sniffing file types, a backup
tool). Another program then takes this one for gone and deletes the write-ahead log on close,
and later commits go into the deleted file. So before each transaction the store checks that
the database and its WAL are still the files it opened and, on Linux, that the process still
holds its lock (/proc/locks); if not, it closes every connection and reopens. After a commit it
checks again; a commit it cannot find through a fresh connection raises NotSavedError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, func, make_url, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from app.inspection.findings import Finding, Inspection, Reason, Verdict, defect_numbers
from app.inspection.measure import Measurements
from app.store.migrate import (
    NewerSchemaError,
    SchemaChange,
    check_known,
    current_revision,
    head_revision,
    upgrade,
)
from app.store.models import AuditRow, DefectRow, InspectionRow, ReasonRow
from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)

DEFAULT_DB_NAME = "inspections.db"
BUSY_TIMEOUT_MS = 30_000
_READONLY = "sam_inspect_readonly"
PROC_LOCKS = Path("/proc/locks")
# SQLite's lock bytes (os_unix.c): a connection holds a read lock on SHARED_FIRST..+SHARED_SIZE
# while open in WAL mode; EXCLUSIVE (which the last connection takes to checkpoint and delete
# the WAL when it closes) is a write lock on the same range
SHARED_FIRST = 0x40000000 + 2
SHARED_SIZE = 510


class StoreError(SamEngineError):
    """The inspection database cannot be opened, migrated or written."""


class NotSavedError(StoreError):
    """A write may not have reached the database file: the change is not saved."""


def database_url(url_or_path: str | Path) -> str:
    """A SQLAlchemy URL from a URL or a file path (a path becomes a SQLite URL)."""
    s = str(url_or_path)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def _masked(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return url.split("://", 1)[0] + "://..."


def default_db_path(results_dir: str | Path) -> Path:
    """Where the embedded database lives: one file next to the results."""
    return Path(results_dir) / DEFAULT_DB_NAME


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: datetime
    actor: str
    action: str
    inspection_id: int | None
    defect_id: int | None
    before: dict | None
    after: dict | None


@dataclass(frozen=True)
class DefectRate:
    """Per lot and defect class: inspections in the lot, how many had the class, the rate."""

    lot: str
    defect_class: str
    inspections: int
    inspections_with_class: int
    defects: int

    @property
    def rate(self) -> float:
        return self.inspections_with_class / self.inspections if self.inspections else 0.0


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of path, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _holds_posix_lock(path: str) -> bool | None:
    """Whether this process holds a POSIX lock on path, from /proc/locks (None: cannot tell)."""
    try:
        st = os.stat(path)
        table = PROC_LOCKS.read_text()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pid = str(os.getpid())
    for line in table.splitlines():
        f = line.split()
        if len(f) >= 6 and f[1] == "POSIX" and f[4] == pid and f[5] == dev:
            return True  # ("->" lines, requests waiting for a lock, have f[1] == "->")
    return False


@contextmanager
def _no_checkpoint_on_close(path: str) -> Iterator[None]:
    """Hold an open-file-description read lock on SQLite's SHARED range while stale connections
    close, so none of them can take EXCLUSIVE: a connection whose WAL was deleted must not
    checkpoint its old frames over pages other programs wrote since, nor delete a WAL that is
    now another program's. OFD locks conflict with this process's own POSIX locks (Linux 3.15+;
    elsewhere nothing is held)."""
    try:
        import fcntl
    except ImportError:  # Windows: no POSIX locks to guard
        yield
        return
    cmd = getattr(fcntl, "F_OFD_SETLKW", None)
    try:
        fd = None if cmd is None else os.open(path, os.O_RDONLY)
    except OSError:
        fd = None
    if fd is not None:
        try:
            fcntl.fcntl(fd, cmd, struct.pack("hhxxxxqqi4x", fcntl.F_RDLCK, os.SEEK_SET,
                                             SHARED_FIRST, SHARED_SIZE, 0))
        except OSError as exc:
            log.warning("cannot guard %s while reopening: %s", path, exc)
    try:
        yield
    finally:
        if fd is not None:
            with suppress(OSError):
                os.close(fd)  # drops the lock; no connection of ours is open now


@dataclass(frozen=True)
class _OpenFiles:
    """The database file and WAL the connections of one pool opened, and whether the lock
    check works here (a fresh WAL connection must show its lock in /proc/locks)."""

    db: tuple[int, int] | None
    wal: tuple[int, int] | None
    lock_check: bool


def _sqlite_setup(engine: Engine, on_connect, readonly: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy's SQLite recipe)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = cur.execute("PRAGMA journal_mode" if readonly else "PRAGMA journal_mode = WAL")
        mode = str(mode.fetchone()[0]).lower()
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        if readonly:
            cur.execute("PRAGMA query_only = ON")
        cur.execute("PRAGMA schema_version").fetchone()  # a read: the WAL is open now
        cur.close()
        on_connect(mode)

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # writers take the write lock up front: a deferred transaction that reads and then
        # writes can fail with "database is locked" without waiting for the busy timeout;
        # readers begin deferred and, in WAL mode, never wait for a writer
        reading = readonly or conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite drops the zone


class InspectionStore:
    """Open (creating and migrating as needed) an inspection database.

    readonly=True (the `db stats|export` commands): never migrate or write; the database must
    exist and have the newest schema, else a StoreError says to run `sam-inspect db upgrade`.
    `schema_change` says what opening did to the schema (None: nothing)."""

    def __init__(self, url_or_path: str | Path, *, echo: bool = False,
                 readonly: bool = False) -> None:
        url = database_url(url_or_path)
        try:
            self.engine = create_engine(url, echo=echo)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use database {_masked(url)}: {exc}") from None
        self.url = self.engine.url.render_as_string(hide_password=True)  # for messages
        self.readonly = readonly
        self._path: str | None = None  # the SQLite file
        self._files: _OpenFiles | None = None  # what the pooled connections opened
        self._wal_mode = False
        if self.engine.dialect.name == "sqlite":
            path = self.engine.url.database
            if path and path != ":memory:" and not Path(path).parent.is_dir():
                raise StoreError(f"folder of database {path} does not exist; create it first")
            if path and path != ":memory:" and "mode=memory" not in str(self.engine.url):
                self._path = path
            _sqlite_setup(self.engine, self._connected, readonly)
        self.name = self._path or self.url  # the file, in messages
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(
            self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )
        self.schema_change: SchemaChange | None = None
        try:
            with self.engine.begin() as conn:
                if readonly:
                    self._check_schema(current_revision(conn))
                else:
                    if self.engine.dialect.name == "postgresql":  # one migrator at a time
                        conn.execute(text("SELECT pg_advisory_xact_lock(2859105)"))
                    self.schema_change = upgrade(conn)
        except NewerSchemaError as exc:
            self.engine.dispose()
            raise StoreError(self._newer_message(exc.revision)) from None
        except StoreError:
            self.engine.dispose()
            raise
        except DatabaseError as exc:
            self.engine.dispose()
            if type(exc) is DatabaseError or "not a database" in str(exc.orig):
                raise StoreError(self._damaged_message(exc)) from None
            raise StoreError(f"cannot open database {self.name}: {exc.orig}") from None
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreError(f"cannot open database {self.name}: {exc}") from None

    def _newer_message(self, revision: str) -> str:
        return (f"database {self.name} was made by a newer sam-inspect (schema revision "
                f"{revision}); upgrade sam-inspect to use it")

    def _damaged_message(self, exc: DatabaseError) -> str:
        return (f"database {self.name} is damaged or not a sam-inspect database ({exc.orig}); "
                "restore it from a backup or give another database")

    def _check_schema(self, revision: str | None) -> None:
        """readonly: the schema must be the one this version reads."""
        head = head_revision()
        if revision == head:
            return
        if revision is None:
            raise StoreError(f"{self.name} holds no sam-inspect database (no schema); give "
                             "--db the inspections.db of a batch run or the GUI")
        check_known(revision)
        raise StoreError(
            f"database {self.name} has an older schema (revision {revision}; this sam-inspect "
            f"uses {head}): run `sam-inspect db --db {self.name} upgrade` first (older "
            "sam-inspect versions cannot open it afterwards)")

    # ------------------------------------------------------------------ file checks
    def _connected(self, journal_mode: str) -> None:
        """A new pooled connection: the first one after (re)opening records the files."""
        if self._path is None or self._files is not None:
            return
        self._wal_mode = journal_mode == "wal"
        wal = f"{self._path}-wal"
        self._files = _OpenFiles(_file_id(self._path), _file_id(wal),
                                 lock_check=bool(_holds_posix_lock(self._path)))

    def _pool_open(self) -> bool:
        pool = self.engine.pool
        counts = [getattr(pool, n, None) for n in ("checkedin", "checkedout")]
        return any(c is not None and c() > 0 for c in counts)

    def _file_problem(self, *, connected: bool) -> str | None:
        """Why the pooled connections no longer write to the database file, or None.
        `connected`: a connection is open now, so this process must hold a lock."""
        files, path = self._files, self._path
        if files is None or path is None or not self._wal_mode:
            return None
        if _file_id(path) != files.db:
            return f"the database file {path} was replaced or removed"
        if _file_id(f"{path}-wal") != files.wal:
            return (f"the write-ahead log {path}-wal was deleted (another program took this "
                    "one for closed)")
        if connected and files.lock_check and _holds_posix_lock(path) is False:
            return (f"this program lost its locks on {path} (something in it opened and "
                    "closed the file)")
        return None

    def _reopen(self, problem: str) -> None:
        """Close every pooled connection; the next ones open the files as they are now."""
        log.warning("%s; reopening the database", problem)
        files = self._files
        if self._path is not None and files is not None and _file_id(self._path) == files.db:
            with _no_checkpoint_on_close(self._path):  # (a replaced file: the old one is gone)
                self.engine.dispose()
        else:
            self.engine.dispose()
        self._files = None
        try:
            with self.engine.execution_options(**{_READONLY: True}).connect() as conn:
                revision = current_revision(conn)
        except SQLAlchemyError as exc:
            raise NotSavedError(f"not saved: {problem}; cannot reopen {self.name}: "
                                f"{getattr(exc, 'orig', exc)}") from None
        if revision != head_revision():
            raise NotSavedError(
                f"not saved: {problem}; {self.name} no longer holds the inspection tables "
                f"(schema revision {revision}): restore it from a backup")

    def _refresh(self) -> None:
        problem = self._file_problem(connected=self._pool_open())
        if problem is not None:
            self._reopen(problem)

    def _begin_write(self) -> Session:
        """A session in a write transaction (BEGIN IMMEDIATE) on the files as they are now."""
        self._refresh()
        problem = None
        for _ in range(2):
            s = self._session()
            try:
                s.connection()  # BEGIN IMMEDIATE: this process holds the write lock
                problem = self._file_problem(connected=True)
            except BaseException:
                s.close()
                raise
            if problem is None:
                return s
            s.close()
            self._reopen(problem)
        raise NotSavedError(f"not saved: {problem}; reopening did not help: close other "
                            f"programs using {self.name} and try again")

    def _confirm(self, audit: dict[int, datetime]) -> None:
        """After a commit: still the same files, or its audit rows (id and time: another
        program may have used the same ids) are there once reopened."""
        problem = self._file_problem(connected=self._pool_open())
        if problem is None:
            return
        self._reopen(problem)
        try:
            with self._reader() as s:
                found = dict(s.execute(select(AuditRow.id, AuditRow.time)
                                       .where(AuditRow.id.in_(list(audit)))).all())
        except SQLAlchemyError as exc:
            raise NotSavedError(f"not saved: {problem}; the change cannot be confirmed in "
                                f"{self.name} ({exc}): do it again") from None
        if not audit or any(i not in found or _aware(found[i]) != _aware(t)
                            for i, t in audit.items()):
            raise NotSavedError(f"not saved: {problem}; the last change did not reach "
                                f"{self.name}: do it again")
        log.warning("the last change is in %s after all", self.name)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any error; a commit
        that may not have reached the file raises NotSavedError."""
        if self.readonly:
            raise StoreError(f"database {self.name} was opened read-only")
        try:
            s = self._begin_write()
            try:
                yield s
                new_audit = [o for o in s.new if isinstance(o, AuditRow)]
                s.flush()
                audit = {o.id: o.time for o in new_audit}
                s.commit()
            except BaseException:
                s.rollback()
                raise
            finally:
                s.close()
        except OperationalError as exc:
            raise StoreError(
                f"cannot write to {self.name}: {exc.orig}; another program may hold the database "
                f"(waited {BUSY_TIMEOUT_MS / 1000:g} s) or the disk is full or read-only"
            ) from None
        except DatabaseError as exc:
            if type(exc) is not DatabaseError:  # integrity errors: our bug, keep the trace
                raise
            raise StoreError(self._damaged_message(exc)) from None
        self._confirm(audit)

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A read transaction on the files as they are now; a damaged file is a StoreError."""
        self._refresh()
        try:
            with self._reader() as s:
                yield s
        except DatabaseError as exc:
            if type(exc) is not DatabaseError and "malformed" not in str(exc.orig):
                raise
            raise StoreError(self._damaged_message(exc)) from None

    def check_integrity(self) -> None:
        """SQLite: read every page (PRAGMA quick_check); a StoreError naming the file if it is
        damaged. Other databases: nothing to do."""
        if self.engine.dialect.name != "sqlite":
            return
        with self._read() as s:
            problems = [r[0] for r in s.execute(text("PRAGMA quick_check(5)"))]
        if problems != ["ok"]:
            found = "; ".join(" ".join(str(p).split()) for p in problems)
            raise StoreError(f"database {self.name} is damaged ({found}); "
                             "restore it from a backup")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> InspectionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def add_inspection(self, inspection: Inspection, *, actor: str | None = None,
                       audit: dict | None = None, once_per: str | None = None) -> int:
        """Store an inspection with its findings and verdict in one transaction; sets the ids on
        `inspection` and its findings and returns the inspection id. `audit`: extra JSON facts
        kept in the audit row (batch runs keep their ledger key there). `once_per`: a key of
        `audit`; when an inspection of the same image already carries the same value there,
        nothing is stored and its id is returned (decided inside the write transaction, so two
        writers never both store it)."""
        if once_per is not None and (audit is None or once_per not in audit):
            raise ValueError(f"once_per={once_per!r} names no key of audit")
        row = InspectionRow(
            image_path=inspection.image_path,
            image_sha256=inspection.image_sha256,
            part_id=inspection.part_id,
            serial=inspection.serial,
            lot=inspection.lot,
            station=inspection.station,
            operator=inspection.operator,
            time=_aware(inspection.time).astimezone(UTC),
            engine=inspection.engine,
            model_id=inspection.model_id,
            checkpoint_sha256=inspection.checkpoint_sha256,
            recipe_name=inspection.recipe_name,
            recipe_version=inspection.recipe_version,
            verdict=None if inspection.verdict is None else inspection.verdict.status,
        )
        for n, f in zip(defect_numbers(inspection.findings), inspection.findings, strict=True):
            row.defects.append(self._defect_row(n - 1, f))  # position = defect number - 1
        if inspection.verdict is not None:
            row.reasons.extend(self._reason_rows(inspection.verdict))
        with self._write() as s:
            if once_per is not None:
                if self.engine.dialect.name == "postgresql":  # writers of one key take turns
                    digest = hashlib.sha256(str(audit[once_per]).encode()).digest()
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                              {"k": int.from_bytes(digest[:8], "big", signed=True)})
                existing = self._stored_with(s, inspection.image_path, once_per, audit[once_per])
                if existing is not None:
                    inspection.id = existing
                    return existing
            s.add(row)
            s.flush()
            s.add(
                AuditRow(
                    time=_now(),
                    actor=actor or inspection.operator or "unknown",
                    action="add_inspection",
                    inspection_id=row.id,
                    defect_id=None,
                    before=None,
                    after={**(audit or {}), "verdict": row.verdict,
                           "defects": [d.id for d in row.defects]},
                )
            )
        inspection.id = row.id
        for f, d in zip(inspection.findings, row.defects, strict=True):
            f.id, f.number = d.id, d.position + 1
        return row.id

    def stored_with(self, image_path: str, key: str, value: object) -> int | None:
        """The id of an inspection of image_path stored with `value` under `key` in its
        add_inspection audit row (add_inspection's `audit`), or None."""
        with self._read() as s:
            return self._stored_with(s, image_path, key, value)

    @staticmethod
    def _stored_with(s: Session, image_path: str, key: str, value: object) -> int | None:
        q = (select(AuditRow.inspection_id, AuditRow.after)
             .join(InspectionRow, InspectionRow.id == AuditRow.inspection_id)
             .where(InspectionRow.image_path == image_path, AuditRow.action == "add_inspection"))
        for inspection_id, after in s.execute(q):
            if isinstance(after, dict) and after.get(key) == value:
                return inspection_id
        return None

    @staticmethod
    def _defect_row(position: int, f: Finding) -> DefectRow:
        d = f.to_dict()
        return DefectRow(
            position=position,
            defect_class=f.defect_class,
            mask_rle=d["mask_rle"],
            measurements=d["measurements"],
            score=f.score,
            prompts=f.prompts,
            accepted_by=f.accepted_by,
            source=f.source,
        )

    @staticmethod
    def _reason_rows(verdict: Verdict) -> list[ReasonRow]:
        """finding_index holds the defect's position (defect number - 1)."""
        rows = []
        for r in verdict.reasons:
            d = dataclasses.asdict(r)
            n = d.pop("defect_number")
            rows.append(ReasonRow(**d, finding_index=None if n is None else n - 1))
        return rows

    def _defect(self, s: Session, defect_id: int) -> DefectRow:
        d = s.get(DefectRow, defect_id)
        if d is None:
            raise StoreError(f"no defect with id {defect_id} in {self.url}")
        return d

    def _defect_audit(self, d: DefectRow, actor: str, action: str, before: dict) -> AuditRow:
        """The audit row of a change to defect d (its state before and after)."""
        return AuditRow(time=_now(), actor=actor, action=action, inspection_id=d.inspection_id,
                        defect_id=d.id, before=before, after=self._defect_state(d))

    @staticmethod
    def _defect_state(d: DefectRow) -> dict:
        mask = None if d.mask_rle is None else json.dumps(d.mask_rle, sort_keys=True)
        return {
            "defect_class": d.defect_class,
            "accepted_by": d.accepted_by,
            "score": d.score,
            "measurements": d.measurements,
            "mask_sha1": None if mask is None else hashlib.sha1(mask.encode()).hexdigest(),
            "deleted": d.deleted_at is not None,
        }

    def update_defect(
        self,
        defect_id: int,
        *,
        actor: str,
        defect_class: str | None = None,
        finding: Finding | None = None,
    ) -> None:
        """Change a defect's class, or replace its mask/measurements/score from `finding`;
        the audit trail records who, when, before and after."""
        with self._write() as s:
            d = self._defect(s, defect_id)
            before = self._defect_state(d)
            if finding is not None:
                new = self._defect_row(d.position, finding)
                for attr in (
                    "defect_class",
                    "mask_rle",
                    "measurements",
                    "score",
                    "prompts",
                    "source",
                ):
                    setattr(d, attr, getattr(new, attr))
            if defect_class is not None:
                d.defect_class = defect_class
            s.add(self._defect_audit(d, actor, "update_defect", before))

    def accept_defect(self, defect_id: int, *, actor: str) -> None:
        """Record that `actor` confirmed the defect."""
        with self._write() as s:
            d = self._defect(s, defect_id)
            before = self._defect_state(d)
            d.accepted_by = actor
            s.add(self._defect_audit(d, actor, "accept_defect", before))

    def delete_defect(self, defect_id: int, *, actor: str) -> None:
        """Mark a defect deleted (rows are kept; reads leave it out)."""
        with self._write() as s:
            d = self._defect(s, defect_id)
            before = self._defect_state(d)
            d.deleted_at = _now()
            s.add(self._defect_audit(d, actor, "delete_defect", before))

    def undelete_defect(self, defect_id: int, *, actor: str) -> None:
        """Bring a deleted defect back (undo in the GUI): same row, so the same number."""
        with self._write() as s:
            d = self._defect(s, defect_id)
            before = self._defect_state(d)
            d.deleted_at = None
            s.add(self._defect_audit(d, actor, "undelete_defect", before))

    def record_event(self, action: str, *, actor: str, after: dict,
                     inspection_id: int | None = None, defect_id: int | None = None) -> int:
        """One audit row for a decision that changes no record by itself (e.g. a proposal of
        the finder rejected in the review queue); returns its id."""
        with self._write() as s:
            row = AuditRow(time=_now(), actor=actor, action=action, inspection_id=inspection_id,
                           defect_id=defect_id, before=None, after=after)
            s.add(row)
            s.flush()
            return int(row.id)

    def add_defect(self, inspection_id: int, finding: Finding, *, actor: str) -> int:
        """Append one finding to a stored inspection (the GUI saves each accepted defect at
        once); sets finding.id and returns it."""
        with self._write() as s:
            row = s.get(InspectionRow, inspection_id)
            if row is None:
                raise StoreError(f"no inspection with id {inspection_id} in {self.url}")
            last = s.scalar(  # deleted rows keep their numbers: never reuse one
                select(func.max(DefectRow.position)).where(
                    DefectRow.inspection_id == inspection_id
                )
            )
            position = 0 if last is None else int(last) + 1
            d = self._defect_row(position, finding)
            d.inspection_id = inspection_id
            s.add(d)
            s.flush()
            s.add(
                AuditRow(time=_now(), actor=actor, action="add_defect",
                         inspection_id=inspection_id, defect_id=d.id, before=None,
                         after=self._defect_state(d))
            )
        finding.id, finding.number = d.id, d.position + 1
        return d.id

    def set_verdict(self, inspection_id: int, verdict: Verdict, *, actor: str,
                    audit: dict | None = None) -> None:
        """Replace an inspection's verdict (e.g. after an operator changed its defects);
        `audit`: extra JSON facts kept in the audit row (the GUI: how the image was finished)."""
        with self._write() as s:
            row = s.get(InspectionRow, inspection_id)
            if row is None:
                raise StoreError(f"no inspection with id {inspection_id} in {self.url}")
            before = {"verdict": row.verdict, "reasons": [r.message for r in row.reasons]}
            row.verdict = verdict.status
            row.reasons.clear()
            row.reasons.extend(self._reason_rows(verdict))
            s.add(
                AuditRow(
                    time=_now(),
                    actor=actor,
                    action="set_verdict",
                    inspection_id=row.id,
                    defect_id=None,
                    before=before,
                    after={
                        **(audit or {}),
                        "verdict": verdict.status,
                        "reasons": [r.message for r in verdict.reasons],
                    },
                )
            )

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _to_inspection(row: InspectionRow) -> Inspection:
        findings = [
            Finding(
                defect_class=d.defect_class,
                mask=None
                if d.mask_rle is None
                else Finding.from_dict(
                    {"defect_class": d.defect_class, "mask_rle": d.mask_rle}
                ).mask,
                measurements=None
                if d.measurements is None
                else Measurements.from_dict(d.measurements),
                score=d.score,
                prompts=d.prompts,
                accepted_by=d.accepted_by,
                source=d.source,
                id=d.id,
                number=d.position + 1,
            )
            for d in row.defects
            if d.deleted_at is None
        ]
        verdict = None
        if row.verdict is not None:
            verdict = Verdict(
                row.verdict,
                tuple(
                    Reason(r.rule, r.defect_class, r.message, r.measured, r.allowed, r.unit,
                           None if r.finding_index is None else r.finding_index + 1)
                    for r in row.reasons
                ),
            )
        return Inspection(
            image_path=row.image_path,
            image_sha256=row.image_sha256,
            part_id=row.part_id,
            serial=row.serial,
            lot=row.lot,
            station=row.station,
            operator=row.operator,
            time=_aware(row.time),
            engine=row.engine,
            model_id=row.model_id,
            checkpoint_sha256=row.checkpoint_sha256,
            recipe_name=row.recipe_name,
            recipe_version=row.recipe_version,
            findings=findings,
            verdict=verdict,
            id=row.id,
        )

    def get_inspection(self, inspection_id: int) -> Inspection:
        with self._read() as s:
            row = s.get(
                InspectionRow,
                inspection_id,
                options=[selectinload(InspectionRow.defects), selectinload(InspectionRow.reasons)],
            )
            if row is None:
                raise StoreError(f"no inspection with id {inspection_id} in {self.url}")
            return self._to_inspection(row)

    def iter_inspections(self, *, lot: str | None = None, batch: int = 200) -> Iterator[Inspection]:
        """All inspections (of one lot), oldest id first, read in batches."""
        last = 0
        while True:
            with self._read() as s:
                q = (
                    select(InspectionRow)
                    .where(InspectionRow.id > last)
                    .options(
                        selectinload(InspectionRow.defects), selectinload(InspectionRow.reasons)
                    )
                    .order_by(InspectionRow.id)
                    .limit(batch)
                )
                if lot is not None:
                    q = q.where(InspectionRow.lot == lot)
                rows = s.scalars(q).all()
                items = [self._to_inspection(r) for r in rows]
            if not items:
                return
            yield from items
            last = items[-1].id

    def latest_inspection(self, image_path: str) -> Inspection | None:
        """The newest inspection of the image stored under image_path, or None."""
        with self._read() as s:
            row = s.scalars(
                select(InspectionRow)
                .where(InspectionRow.image_path == image_path)
                .options(
                    selectinload(InspectionRow.defects), selectinload(InspectionRow.reasons)
                )
                .order_by(InspectionRow.id.desc())
                .limit(1)
            ).first()
            return None if row is None else self._to_inspection(row)

    def latest_verdicts(self, image_paths: list[str]) -> dict[str, str | None]:
        """For each image path with a stored inspection, the newest one's verdict (None while
        it has no verdict); paths never inspected are left out. Masks are not read."""
        out: dict[str, tuple[int, str | None]] = {}
        with self._read() as s:
            for i in range(0, len(image_paths), 500):
                chunk = image_paths[i : i + 500]
                rows = s.execute(
                    select(InspectionRow.image_path, InspectionRow.id, InspectionRow.verdict)
                    .where(InspectionRow.image_path.in_(chunk))
                ).all()
                for path, row_id, verdict in rows:
                    if path not in out or row_id > out[path][0]:
                        out[path] = (row_id, verdict)
        return {p: v for p, (_, v) in out.items()}

    def count_inspections(self) -> int:
        with self._read() as s:
            return int(s.scalar(select(func.count(InspectionRow.id))))

    def audit_trail(
        self, *, inspection_id: int | None = None, defect_id: int | None = None
    ) -> list[AuditEntry]:
        with self._read() as s:
            q = select(AuditRow).order_by(AuditRow.id)
            if inspection_id is not None:
                q = q.where(AuditRow.inspection_id == inspection_id)
            if defect_id is not None:
                q = q.where(AuditRow.defect_id == defect_id)
            return [
                AuditEntry(
                    a.id,
                    _aware(a.time),
                    a.actor,
                    a.action,
                    a.inspection_id,
                    a.defect_id,
                    a.before,
                    a.after,
                )
                for a in s.scalars(q)
            ]

    def defect_rates(self) -> list[DefectRate]:
        """Defect rate per class per lot (deleted defects left out), sorted by lot and class."""
        with self._read() as s:
            per_lot = dict(
                s.execute(
                    select(InspectionRow.lot, func.count(InspectionRow.id)).group_by(
                        InspectionRow.lot
                    )
                ).all()
            )
            rows = s.execute(
                select(
                    InspectionRow.lot,
                    DefectRow.defect_class,
                    func.count(func.distinct(InspectionRow.id)),
                    func.count(DefectRow.id),
                )
                .join(DefectRow, DefectRow.inspection_id == InspectionRow.id)
                .where(DefectRow.deleted_at.is_(None))
                .group_by(InspectionRow.lot, DefectRow.defect_class)
                .order_by(InspectionRow.lot, DefectRow.defect_class)
            ).all()
        return [
            DefectRate(lot, cls, per_lot[lot], n_insp, n_def) for lot, cls, n_insp, n_def in rows
        ]
