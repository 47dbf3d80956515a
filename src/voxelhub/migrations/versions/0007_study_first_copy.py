"""study first copy: whether a study row was the first of its UID in any archive

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dicom_studies",
        sa.Column("first_copy", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.execute(
        """UPDATE dicom_studies AS s SET first_copy = NOT EXISTS (
        SELECT 1 FROM dicom_studies AS o
        WHERE o.study_instance_uid = s.study_instance_uid
        AND (o.created_at, o.id) < (s.created_at, s.id))"""
    )
    op.create_index(
        "ix_dicom_studies_later_copies",
        "dicom_studies",
        ["id"],
        postgresql_where=sa.text("NOT first_copy"),
    )


def downgrade() -> None:
    op.drop_index("ix_dicom_studies_later_copies", table_name="dicom_studies")
    op.drop_column("dicom_studies", "first_copy")
