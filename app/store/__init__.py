"""The inspection database: SQLAlchemy models, Alembic migrations, InspectionStore, exports."""

from app.store.export import coco_dataset, export_coco, export_csv
from app.store.store import (
    AuditEntry,
    DefectRate,
    InspectionStore,
    NotSavedError,
    StoreError,
    database_url,
    default_db_path,
)

__all__ = [
    "AuditEntry",
    "DefectRate",
    "InspectionStore",
    "NotSavedError",
    "StoreError",
    "coco_dataset",
    "database_url",
    "default_db_path",
    "export_coco",
    "export_csv",
]
