"""study search: person names as their component groups in each study's result document

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 12:00:00.000000
"""

import importlib
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSON text of a person name: {"Alphabetic": …, "Ideographic": …, "Phonetic": …}, each
# component group (split at "=") only where it is not empty.
FUNCTION = """CREATE OR REPLACE FUNCTION vxh_json_name(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN '{' || concat_ws(',',
CASE WHEN split_part(value, '=', 1) <> ''
THEN '"Alphabetic":' || vxh_json_string(split_part(value, '=', 1)) END,
CASE WHEN split_part(value, '=', 2) <> ''
THEN '"Ideographic":' || vxh_json_string(split_part(value, '=', 2)) END,
CASE WHEN split_part(value, '=', 3) <> ''
THEN '"Phonetic":' || vxh_json_string(split_part(value, '=', 3)) END) || '}'"""
# Each study's QIDO-RS result as DICOM JSON text, before and after RetrieveURL (00081190),
# as store/qido_document.py writes them: 0006's, with person names in groups.
_PREVIOUS = importlib.import_module("voxelhub.migrations.versions.0006_study_search")
_ALPHABETIC_ONLY = re.compile(
    r"""\[\{"Alphabetic":'\n\|\| vxh_json_string\((\w+)\)\n\|\| '\}\]\}'"""
)
_IN_GROUPS = r"""['\n|| vxh_json_name(\1)\n|| ']}'"""
HEAD = _ALPHABETIC_ONLY.sub(_IN_GROUPS, _PREVIOUS.HEAD)
TAIL = _ALPHABETIC_ONLY.sub(_IN_GROUPS, _PREVIOUS.TAIL)


def _documents(head: str, tail: str) -> None:
    # A generated column's expression cannot be changed before PostgreSQL 17: made again.
    op.drop_column("dicom_studies", "qido_tail")
    op.drop_column("dicom_studies", "qido_head")
    op.add_column(
        "dicom_studies",
        sa.Column("qido_head", sa.Text(), sa.Computed(head, persisted=True), nullable=False),
    )
    op.add_column(
        "dicom_studies",
        sa.Column("qido_tail", sa.Text(), sa.Computed(tail, persisted=True), nullable=False),
    )


def upgrade() -> None:
    op.execute(FUNCTION)
    _documents(HEAD, TAIL)


def downgrade() -> None:
    _documents(_PREVIOUS.HEAD, _PREVIOUS.TAIL)
    op.execute("DROP FUNCTION vxh_json_name(text)")
