"""study search: indexes and each study's result document

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSON text of a string, and of a string array sorted.
FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION vxh_json_string(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN to_json(value)::text""",
    """CREATE OR REPLACE FUNCTION vxh_json_sorted(value text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT to_json(array_agg(m ORDER BY m COLLATE "C"))::text FROM unnest(value) AS m)""",
)
# Each study's QIDO-RS result as DICOM JSON text, before and after RetrieveURL (00081190);
# as store/qido_document.py writes them.
HEAD = """
(CASE WHEN study_date = '' THEN '"00080020":{"vr":"DA"}'
ELSE '"00080020":{"vr":"DA","Value":['
|| vxh_json_string(study_date)
|| ']}' END)
|| ',' || (CASE WHEN study_time = '' THEN '"00080030":{"vr":"TM"}'
ELSE '"00080030":{"vr":"TM","Value":['
|| vxh_json_string(study_time)
|| ']}' END)
|| ',' || (CASE WHEN accession_number = '' THEN '"00080050":{"vr":"SH"}'
ELSE '"00080050":{"vr":"SH","Value":['
|| vxh_json_string(accession_number)
|| ']}' END)
|| ',' || ('"00080056":{"vr":"CS","Value":["ONLINE"]}')
|| ',' || (CASE WHEN cardinality(modalities) = 0 THEN '"00080061":{"vr":"CS"}'
ELSE '"00080061":{"vr":"CS","Value":'
|| vxh_json_sorted(modalities::text[]) || '}' END)
|| ',' || (CASE WHEN referring_physician_name = '' THEN '"00080090":{"vr":"PN"}'
ELSE '"00080090":{"vr":"PN","Value":[{"Alphabetic":'
|| vxh_json_string(referring_physician_name)
|| '}]}' END)
|| ',' || (CASE WHEN study_description = '' THEN '"00081030":{"vr":"LO"}'
ELSE '"00081030":{"vr":"LO","Value":['
|| vxh_json_string(study_description)
|| ']}' END)
"""
TAIL = """
(CASE WHEN patient_name = '' THEN '"00100010":{"vr":"PN"}'
ELSE '"00100010":{"vr":"PN","Value":[{"Alphabetic":'
|| vxh_json_string(patient_name)
|| '}]}' END)
|| ',' || (CASE WHEN patient_id = '' THEN '"00100020":{"vr":"LO"}'
ELSE '"00100020":{"vr":"LO","Value":['
|| vxh_json_string(patient_id)
|| ']}' END)
|| ',' || (CASE WHEN patient_birth_date = '' THEN '"00100030":{"vr":"DA"}'
ELSE '"00100030":{"vr":"DA","Value":['
|| vxh_json_string(patient_birth_date)
|| ']}' END)
|| ',' || (CASE WHEN patient_sex = '' THEN '"00100040":{"vr":"CS"}'
ELSE '"00100040":{"vr":"CS","Value":['
|| vxh_json_string(patient_sex)
|| ']}' END)
|| ',' || (CASE WHEN study_instance_uid = '' THEN '"0020000D":{"vr":"UI"}'
ELSE '"0020000D":{"vr":"UI","Value":['
|| vxh_json_string(study_instance_uid)
|| ']}' END)
|| ',' || (CASE WHEN study_id = '' THEN '"00200010":{"vr":"SH"}'
ELSE '"00200010":{"vr":"SH","Value":['
|| vxh_json_string(study_id)
|| ']}' END)
|| ',' || ('"00201206":{"vr":"IS","Value":[' || number_of_series::text || ']}')
|| ',' || ('"00201208":{"vr":"IS","Value":[' || number_of_instances::text || ']}')
"""


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(function)
    op.add_column(
        "dicom_studies",
        sa.Column("qido_head", sa.Text(), sa.Computed(HEAD, persisted=True), nullable=False),
    )
    op.add_column(
        "dicom_studies",
        sa.Column("qido_tail", sa.Text(), sa.Computed(TAIL, persisted=True), nullable=False),
    )
    # Study searches return newest first: these give that order without a sort, in one
    # archive (a scoped base URL) and across archives.
    op.create_index(
        "ix_dicom_studies_archive_newest",
        "dicom_studies",
        ["archive_id", sa.text("study_date DESC"), sa.text("study_time DESC"), "id"],
    )
    op.create_index(
        "ix_dicom_studies_newest",
        "dicom_studies",
        [sa.text("study_date DESC"), sa.text("study_time DESC"), "id"],
    )
    # Person names match case-insensitively: whole names and prefixes (SMI*) by range scan.
    op.create_index(
        "ix_dicom_studies_patient_name_lower",
        "dicom_studies",
        [sa.text("lower(patient_name) text_pattern_ops")],
    )


def downgrade() -> None:
    op.drop_index("ix_dicom_studies_patient_name_lower", table_name="dicom_studies")
    op.drop_index("ix_dicom_studies_newest", table_name="dicom_studies")
    op.drop_index("ix_dicom_studies_archive_newest", table_name="dicom_studies")
    op.drop_column("dicom_studies", "qido_tail")
    op.drop_column("dicom_studies", "qido_head")
    op.execute("DROP FUNCTION vxh_json_sorted(text[])")
    op.execute("DROP FUNCTION vxh_json_string(text)")
