"""Request and response models of the uploads API, and the report of a processed upload."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FileOutcome = Literal["stored", "duplicate", "rejected", "skipped"]
SeriesOutcome = Literal["converted", "duplicate", "series_only", "failed"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UploadCreate(Frozen):
    archive_id: uuid.UUID


class UploadFileOut(Frozen):
    """How far one file got: resume by sending from byte `received`."""

    name: str
    size: int | None = Field(description="Total bytes, known from the first chunk")
    received: int
    complete: bool


class UploadOut(Frozen):
    id: uuid.UUID
    archive_id: uuid.UUID
    state: str
    source: str
    created_at: datetime
    updated_at: datetime
    files: list[UploadFileOut]


class FileReport(Frozen):
    """What became of one file (or one entry of an uploaded zip or tar).

    `warnings` are what a person should know about a file that was used, e.g. which of a
    NIfTI header's two disagreeing transforms placed the image.
    """

    path: str
    format: str | None = None
    outcome: FileOutcome
    reason: str = ""
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    case_id: uuid.UUID | None = None
    interface: str | None = None
    value_id: uuid.UUID | None = None
    warnings: list[str] = []


class SeriesReport(Frozen):
    """A DICOM series the upload touched: its case value and, for volumes, its MHA.

    `warnings` say what the conversion changed, e.g. slices resampled for a gantry tilt.
    """

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    number_of_instances: int
    outcome: SeriesOutcome
    reason: str = ""
    case_id: uuid.UUID | None = None
    case_title: str | None = None
    interface: str | None = None
    volume_interface: str | None = None
    volume_value_id: uuid.UUID | None = None
    warnings: list[str] = []


class UploadReport(Frozen):
    upload_id: uuid.UUID
    archive_id: uuid.UUID
    state: str
    counts: dict[str, int]
    files: list[FileReport]
    series: list[SeriesReport] = []
