"""SQLAlchemy ORM models of the inspection database (schema revision 0001)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class InspectionRow(Base):
    """One image of one part: where it came from, who/what inspected it, and the verdict."""

    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_path: Mapped[str] = mapped_column(Text, index=True)  # the GUI's per-file lookups
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    part_id: Mapped[str] = mapped_column(String(200), default="")
    serial: Mapped[str] = mapped_column(String(200), default="")
    lot: Mapped[str] = mapped_column(String(200), default="", index=True)
    station: Mapped[str] = mapped_column(String(200), default="")
    operator: Mapped[str] = mapped_column(String(200), default="")
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    engine: Mapped[str] = mapped_column(String(50), default="")
    model_id: Mapped[str] = mapped_column(String(100), default="")
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recipe_name: Mapped[str] = mapped_column(String(200), default="")
    recipe_version: Mapped[str] = mapped_column(String(100), default="")
    verdict: Mapped[str | None] = mapped_column(String(10), nullable=True)

    defects: Mapped[list[DefectRow]] = relationship(
        back_populates="inspection", order_by="DefectRow.position", cascade="all, delete-orphan"
    )
    reasons: Mapped[list[ReasonRow]] = relationship(
        back_populates="inspection", order_by="ReasonRow.id", cascade="all, delete-orphan"
    )


class DefectRow(Base):
    """One defect: class, mask (COCO RLE), measurements, score, prompts, who accepted it."""

    __tablename__ = "defects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(
        ForeignKey("inspections.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)  # index in the inspection's findings
    defect_class: Mapped[str] = mapped_column(String(100), index=True)
    mask_rle: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    measurements: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompts: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    accepted_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str] = mapped_column(String(20), default="sam")
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    inspection: Mapped[InspectionRow] = relationship(back_populates="defects")


class ReasonRow(Base):
    """One reason of a FAIL verdict."""

    __tablename__ = "verdict_reasons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    inspection_id: Mapped[int] = mapped_column(
        ForeignKey("inspections.id", ondelete="CASCADE"), index=True
    )
    rule: Mapped[str] = mapped_column(String(50))
    defect_class: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    measured: Mapped[float | None] = mapped_column(Float, nullable=True)
    allowed: Mapped[float | None] = mapped_column(Float, nullable=True)
    unit: Mapped[str] = mapped_column(String(20), default="")
    finding_index: Mapped[int | None] = mapped_column(Integer, nullable=True)

    inspection: Mapped[InspectionRow] = relationship(back_populates="reasons")


class AuditRow(Base):
    """Append-only trail: who did what to which inspection/defect, when; before/after as JSON.
    The database refuses UPDATE and DELETE on this table (triggers in the first migration)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50))
    inspection_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    defect_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_audit_events_inspection_defect", "inspection_id", "defect_id"),)
