"""InspectionStore: the inspection database behind batch mode, the GUI and the line runtime.

SQLite (one file, WAL mode, busy timeout, every transaction BEGIN IMMEDIATE so concurrent
writers queue instead of failing) by default; any SQLAlchemy URL otherwise (e.g.
postgresql+psycopg://user@host/db). The schema is brought to the newest Alembic revision on open.
Each public method that writes runs in one transaction: an image's inspection, defects, verdict
and audit event are stored together or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, event, func, make_url, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from app.findings import Finding, Inspection, Reason, Verdict
from app.measure import Measurements
from app.store.migrate import upgrade
from app.store.models import AuditRow, DefectRow, InspectionRow, ReasonRow
from sam_engine.errors import SamEngineError

log = logging.getLogger(__name__)

DEFAULT_DB_NAME = "inspections.db"
BUSY_TIMEOUT_MS = 30_000
_READONLY = "sam_inspect_readonly"


class StoreError(SamEngineError):
    """The inspection database cannot be opened, migrated or written."""


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


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy's SQLite recipe)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # writers take the write lock up front: a deferred transaction that reads and then
        # writes can fail with "database is locked" without waiting for the busy timeout;
        # readers begin deferred and, in WAL mode, never wait for a writer
        readonly = conn.get_execution_options().get(_READONLY, False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite drops the zone


class InspectionStore:
    """Open (creating and migrating as needed) an inspection database."""

    def __init__(self, url_or_path: str | Path, *, echo: bool = False) -> None:
        url = database_url(url_or_path)
        try:
            self.engine = create_engine(url, echo=echo)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use database {_masked(url)}: {exc}") from None
        self.url = self.engine.url.render_as_string(hide_password=True)  # for messages
        if self.engine.dialect.name == "sqlite":
            path = self.engine.url.database
            if path and path != ":memory:" and not Path(path).parent.is_dir():
                raise StoreError(f"folder of database {path} does not exist; create it first")
            _sqlite_setup(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(
            self.engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )
        try:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":  # one migrator at a time
                    conn.execute(text("SELECT pg_advisory_xact_lock(2859105)"))
                upgrade(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {self.url}: {exc}") from None

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any error."""
        try:
            with self._session.begin() as s:
                yield s
        except OperationalError as exc:
            raise StoreError(
                f"cannot write to {self.url}: {exc.orig}; another program may hold the database "
                f"(waited {BUSY_TIMEOUT_MS / 1000:g} s) or the disk is full or read-only"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> InspectionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def add_inspection(self, inspection: Inspection, *, actor: str | None = None) -> int:
        """Store an inspection with its findings and verdict in one transaction; sets the ids on
        `inspection` and its findings and returns the inspection id."""
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
        for i, f in enumerate(inspection.findings):
            row.defects.append(self._defect_row(i, f))
        if inspection.verdict is not None:
            row.reasons.extend(self._reason_rows(inspection.verdict))
        with self._write() as s:
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
                    after={"verdict": row.verdict, "defects": [d.id for d in row.defects]},
                )
            )
        inspection.id = row.id
        for f, d in zip(inspection.findings, row.defects, strict=True):
            f.id = d.id
        return row.id

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
        return [ReasonRow(**dataclasses.asdict(r)) for r in verdict.reasons]

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

    def add_defect(self, inspection_id: int, finding: Finding, *, actor: str) -> int:
        """Append one finding to a stored inspection (the GUI saves each accepted defect at
        once); sets finding.id and returns it."""
        with self._write() as s:
            row = s.get(InspectionRow, inspection_id)
            if row is None:
                raise StoreError(f"no inspection with id {inspection_id} in {self.url}")
            position = int(
                s.scalar(
                    select(func.count(DefectRow.id)).where(
                        DefectRow.inspection_id == inspection_id
                    )
                )
            )
            d = self._defect_row(position, finding)
            d.inspection_id = inspection_id
            s.add(d)
            s.flush()
            s.add(
                AuditRow(time=_now(), actor=actor, action="add_defect",
                         inspection_id=inspection_id, defect_id=d.id, before=None,
                         after=self._defect_state(d))
            )
        finding.id = d.id
        return d.id

    def set_verdict(self, inspection_id: int, verdict: Verdict, *, actor: str) -> None:
        """Replace an inspection's verdict (e.g. after an operator changed its defects)."""
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
            )
            for d in row.defects
            if d.deleted_at is None
        ]
        verdict = None
        if row.verdict is not None:
            verdict = Verdict(
                row.verdict,
                tuple(
                    Reason(**{f.name: getattr(r, f.name) for f in dataclasses.fields(Reason)})
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
        with self._reader() as s:
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
            with self._reader() as s:
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
        with self._reader() as s:
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
        with self._reader() as s:
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
        with self._reader() as s:
            return int(s.scalar(select(func.count(InspectionRow.id))))

    def audit_trail(
        self, *, inspection_id: int | None = None, defect_id: int | None = None
    ) -> list[AuditEntry]:
        with self._reader() as s:
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
        with self._reader() as s:
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
