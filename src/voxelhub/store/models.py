"""Tables of the image store: the study/series/instance index of each archive.

A series is an image set: its instances live as one object each in the object store
(header, then frames, at recorded offsets), and its metadata as one gzipped DICOM JSON
document, rebuilt when the series changes and served as is.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Computed,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from voxelhub.core.db import Base, Timestamped, UUIDPk, utcnow
from voxelhub.store.qido_document import HEAD_SQL, TAIL_SQL


class Study(UUIDPk, Timestamped, Base):
    __tablename__ = "dicom_studies"
    __table_args__ = (
        UniqueConstraint("archive_id", "study_instance_uid", name="uq_dicom_studies_uid"),
        Index("ix_dicom_studies_study_uid", "study_instance_uid"),
        Index("ix_dicom_studies_patient_id", "patient_id"),
        Index("ix_dicom_studies_study_date", "study_date"),
        Index("ix_dicom_studies_accession", "accession_number"),
        Index(
            "ix_dicom_studies_patient_name_trgm",
            "patient_name",
            postgresql_using="gin",
            postgresql_ops={"patient_name": "gin_trgm_ops"},
        ),
    )

    archive_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("archives.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    # Who issued PatientID (0010,0021): a patient is the two together.
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    patient_name: Mapped[str] = mapped_column(String(330), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str] = mapped_column(String(64), default="")
    study_description: Mapped[str] = mapped_column(String(330), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(330), default="")
    modalities: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    number_of_series: Mapped[int] = mapped_column(default=0)
    number_of_instances: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # No other archive held the study when this row was made, so no older copy can exist:
    # a search across archives shows such a row without looking for one (qido._visible).
    first_copy: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Its QIDO-RS result as DICOM JSON text, kept by PostgreSQL (see qido_document).
    qido_head: Mapped[str] = mapped_column(Text, Computed(HEAD_SQL, persisted=True), deferred=True)
    qido_tail: Mapped[str] = mapped_column(Text, Computed(TAIL_SQL, persisted=True), deferred=True)


# Study searches return newest first: these give that order without a sort, in one archive
# and across archives. Person names match case-insensitively, whole or by prefix (SMI*).
Index(
    "ix_dicom_studies_archive_newest",
    Study.archive_id,
    Study.study_date.desc(),
    Study.study_time.desc(),
    Study.id,
)
Index("ix_dicom_studies_newest", Study.study_date.desc(), Study.study_time.desc(), Study.id)
# A patient is PatientID and IssuerOfPatientID together: a PATIENT-level C-FIND groups an
# archive's studies by them.
Index(
    "ix_dicom_studies_archive_patient",
    Study.archive_id,
    Study.patient_id,
    Study.issuer_of_patient_id,
)
# The few studies that are later copies of a study another archive held first.
Index("ix_dicom_studies_later_copies", Study.id, postgresql_where=~Study.first_copy)
Index(
    "ix_dicom_studies_patient_name_lower",
    func.lower(Study.patient_name).label("patient_name_lower"),
    postgresql_ops={"patient_name_lower": "text_pattern_ops"},
)


class Series(UUIDPk, Timestamped, Base):
    """An image set."""

    __tablename__ = "dicom_series"
    __table_args__ = (
        UniqueConstraint("archive_id", "series_instance_uid", name="uq_dicom_series_uid"),
        Index("ix_dicom_series_study", "study_id"),
    )

    archive_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("archives.id", ondelete="CASCADE"))
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dicom_studies.id", ondelete="CASCADE"))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None]
    series_description: Mapped[str] = mapped_column(String(330), default="")
    number_of_instances: Mapped[int] = mapped_column(default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped on every change; the metadata document records the version it was built from.
    version: Mapped[int] = mapped_column(default=0)
    metadata_key: Mapped[str | None] = mapped_column(Text)
    metadata_version: Mapped[int] = mapped_column(default=-1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(UUIDPk, Timestamped, Base):
    __tablename__ = "dicom_instances"
    __table_args__ = (
        UniqueConstraint("archive_id", "sop_instance_uid", name="uq_dicom_instances_uid"),
        Index("ix_dicom_instances_series", "series_id"),
        Index("ix_dicom_instances_sop_uid", "sop_instance_uid"),
    )

    archive_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("archives.id", ondelete="CASCADE"))
    series_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dicom_series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None]
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    frames_transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    number_of_frames: Mapped[int] = mapped_column(default=0)
    rows: Mapped[int | None]
    columns: Mapped[int | None]
    pixel: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # One object: the header (a Part-10 file without pixel data), then each frame.
    object_key: Mapped[str] = mapped_column(Text)
    header_length: Mapped[int] = mapped_column(BigInteger)
    frame_offsets: Mapped[list[int]] = mapped_column(JSONB, default=list)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_sha256: Mapped[str] = mapped_column(String(64))
    # Loaded only when asked for: frame and instance reads do not need it.
    dataset_json: Mapped[dict[str, Any]] = mapped_column(JSONB, deferred=True)
