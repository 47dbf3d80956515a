"""study issuer of patient ID: IssuerOfPatientID on each study, in its result document

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 09:00:00.000000
"""

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each study's QIDO-RS result as DICOM JSON text, before and after RetrieveURL (00081190),
# as store/qido_document.py writes them: 0008's, with IssuerOfPatientID after PatientID.
_PREVIOUS = importlib.import_module("voxelhub.migrations.versions.0008_study_person_names")
_BIRTH_DATE = "\n|| ',' || (CASE WHEN patient_birth_date = ''"
_ISSUER = """
|| ',' || (CASE WHEN issuer_of_patient_id = '' THEN '"00100021":{"vr":"LO"}'
ELSE '"00100021":{"vr":"LO","Value":['
|| vxh_json_string(issuer_of_patient_id)
|| ']}' END)"""
HEAD = _PREVIOUS.HEAD
TAIL = _PREVIOUS.TAIL.replace(_BIRTH_DATE, _ISSUER + _BIRTH_DATE, 1)
# The issuer of each study indexed so far, as the indexer takes it: from the instance the
# study row was made from, its first stored. Instance ids are picked without reading any
# JSON, then one document per study is read.
BACKFILL = """UPDATE dicom_studies AS s
SET issuer_of_patient_id = left(btrim(i.dataset_json -> '00100021' -> 'Value' ->> 0), 64)
FROM (
    SELECT DISTINCT ON (se.study_id) se.study_id, i.id AS instance_id
    FROM dicom_series AS se JOIN dicom_instances AS i ON i.series_id = se.id
    ORDER BY se.study_id, i.created_at, i.id
) AS first
JOIN dicom_instances AS i ON i.id = first.instance_id
WHERE s.id = first.study_id
AND coalesce(btrim(i.dataset_json -> '00100021' -> 'Value' ->> 0), '') <> ''"""


def _documents(head: str, tail: str) -> None:
    # A generated column's expression cannot be changed before PostgreSQL 17: made again.
    op.add_column(
        "dicom_studies",
        sa.Column("qido_head", sa.Text(), sa.Computed(head, persisted=True), nullable=False),
    )
    op.add_column(
        "dicom_studies",
        sa.Column("qido_tail", sa.Text(), sa.Computed(tail, persisted=True), nullable=False),
    )


def _drop_documents() -> None:
    op.drop_column("dicom_studies", "qido_tail")
    op.drop_column("dicom_studies", "qido_head")


def upgrade() -> None:
    # The documents are dropped first so that filling the issuer does not render them too;
    # they are rendered once, when made again.
    _drop_documents()
    op.add_column(
        "dicom_studies",
        sa.Column("issuer_of_patient_id", sa.String(length=64), server_default="", nullable=False),
    )
    op.execute(BACKFILL)
    _documents(HEAD, TAIL)
    # A patient is PatientID and IssuerOfPatientID together: a PATIENT-level C-FIND groups
    # an archive's studies by them.
    op.create_index(
        "ix_dicom_studies_archive_patient",
        "dicom_studies",
        ["archive_id", "patient_id", "issuer_of_patient_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_dicom_studies_archive_patient", table_name="dicom_studies")
    _drop_documents()
    op.drop_column("dicom_studies", "issuer_of_patient_id")
    _documents(_PREVIOUS.HEAD, _PREVIOUS.TAIL)
