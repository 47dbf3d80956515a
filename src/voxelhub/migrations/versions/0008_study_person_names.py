"""study search: person names as their component groups in each study's result document

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 12:00:00.000000
"""

import importlib
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
ELSE '"00080090":{"vr":"PN","Value":['
|| vxh_json_name(referring_physician_name)
|| ']}' END)
|| ',' || (CASE WHEN study_description = '' THEN '"00081030":{"vr":"LO"}'
ELSE '"00081030":{"vr":"LO","Value":['
|| vxh_json_string(study_description)
|| ']}' END)
"""
TAIL = """
(CASE WHEN patient_name = '' THEN '"00100010":{"vr":"PN"}'
ELSE '"00100010":{"vr":"PN","Value":['
|| vxh_json_name(patient_name)
|| ']}' END)
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
    previous = importlib.import_module("voxelhub.migrations.versions.0006_study_search")
    _documents(previous.HEAD, previous.TAIL)
    op.execute("DROP FUNCTION vxh_json_name(text)")
