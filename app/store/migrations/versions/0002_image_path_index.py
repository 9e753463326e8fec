"""index inspections.image_path

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 06:40:00

The GUI looks inspections up by file (latest_inspection, latest_verdicts for a folder's status
column); without an index each lookup scans the whole table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_inspections_image_path"), "inspections", ["image_path"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_inspections_image_path"), table_name="inspections")
