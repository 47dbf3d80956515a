"""C-FIND at PATIENT level: one match per patient, answered from the studies the index holds.

A patient is who PatientID and IssuerOfPatientID name together (PS3.3 C.7.1.1): two studies
under one ID are one patient, however the name was spelled in each, and one ID issued by two
authorities is two patients. The index keeps the patient's attributes, its issuer among them,
per study, so a patient is a group of an archive's studies. A patient's name, birth date and
sex are those of its most recent study that has them, and the keys are matched against those
values; its related counts add up all of its studies.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, String, func, select, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from voxelhub.store import qido
from voxelhub.store.attributes import STUDY_TAGS, element
from voxelhub.store.dimse.identifier import ISSUER_OF_PATIENT_ID, Identifier
from voxelhub.store.models import Study

PATIENT_ID = "00100020"
# The patient's attributes each study repeats: tag → (VR, study column).
DEMOGRAPHICS = {tag: STUDY_TAGS[tag][1:] for tag in ("00100010", "00100030", "00100040")}
# Who the patient is: the same in each of its studies, so its keys are matched on them.
IDENTITY = {PATIENT_ID: Study.patient_id, ISSUER_OF_PATIENT_ID: Study.issuer_of_patient_id}


def _latest(column: Any, studies: Any) -> ColumnElement[str]:
    """The value of `column` in the most recent study that has one ('' if none has)."""
    newest_first = aggregate_order_by(
        column, studies.c.study_date.desc(), studies.c.study_time.desc(),
        studies.c.created_at.desc(),
    )  # fmt: skip
    values = func.array_remove(func.array_agg(newest_first), "", type_=ARRAY(String))
    return func.coalesce(values[1], "")


def _studies(ident: Identifier, archive_id: uuid.UUID) -> tuple[Any, bool]:
    """The studies of the patients that may match; and whether some match key is not one
    of a patient."""
    conditions = [Study.archive_id == archive_id]
    demographics = []
    unsupported = False
    for tag, (attr, value) in ident.filters.items():
        if tag in IDENTITY:
            conditions.append(qido.match(IDENTITY[tag], attr, value, fuzzy=False))
        elif tag in DEMOGRAPHICS:
            column = getattr(Study, DEMOGRAPHICS[tag][1])
            demographics.append(qido.match(column, attr, value, fuzzy=False))
        else:
            unsupported = True
    patient = tuple_(Study.patient_id, Study.issuer_of_patient_id)
    if demographics:
        # Only patients with a study that matches can match; whether they do is decided
        # by their most recent values.
        candidates = select(Study.patient_id, Study.issuer_of_patient_id).where(
            Study.archive_id == archive_id, *demographics
        )
        conditions.append(patient.in_(candidates))
    columns = [getattr(Study, column) for _, column in DEMOGRAPHICS.values()]
    statement = select(
        Study.patient_id, Study.issuer_of_patient_id.label("issuer"), *columns,
        Study.study_date, Study.study_time, Study.created_at, Study.number_of_series,
        Study.number_of_instances,
    ).where(*conditions)  # fmt: skip
    return statement.subquery("studies"), unsupported


def search_patients(
    db: Session, ident: Identifier, archive_id: uuid.UUID
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Each matching patient as DICOM JSON, with whether some match keys were not supported."""
    studies, unsupported = _studies(ident, archive_id)
    latest = {tag: _latest(studies.c[column], studies) for tag, (_, column) in DEMOGRAPHICS.items()}
    patients = (
        select(
            studies.c.patient_id, studies.c.issuer,
            *(value.label(tag) for tag, value in latest.items()),
            func.count().label("studies"),
            func.coalesce(func.sum(studies.c.number_of_series), 0).label("series"),
            func.coalesce(func.sum(studies.c.number_of_instances), 0).label("instances"),
        )
        .group_by(studies.c.patient_id, studies.c.issuer)
        .subquery("patients")
    )  # fmt: skip
    statement = select(patients).order_by(patients.c.patient_id, patients.c.issuer)
    for tag, (attr, value) in ident.filters.items():
        if tag in DEMOGRAPHICS:
            statement = statement.where(qido.match(patients.c[tag], attr, value, fuzzy=False))
    unsupported = unsupported or bool(ident.ignored)
    for row in db.execute(statement).mappings():
        found = {tag: element(DEMOGRAPHICS[tag][0], row[tag]) for tag in DEMOGRAPHICS}
        found[PATIENT_ID] = element("LO", row["patient_id"])
        found[ISSUER_OF_PATIENT_ID] = element("LO", row["issuer"])
        found["00201200"] = element("IS", row["studies"])
        found["00201202"] = element("IS", int(row["series"]))
        found["00201204"] = element("IS", int(row["instances"]))
        yield found, unsupported
