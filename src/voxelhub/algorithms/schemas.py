"""Request and response models of algorithms and jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voxelhub.archives.values import ValueKind

SLUG = r"^[a-z0-9][a-z0-9-]{0,99}$"
INTERFACE = r"^[a-z0-9][a-z0-9._-]{0,99}$"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", from_attributes=True)


class Interface(Frozen):
    interface: str = Field(pattern=INTERFACE)
    kind: ValueKind
    description: str = ""


class Resources(Frozen):
    queue: Literal["cpu", "gpu"] = "cpu"
    fallback_queue: Literal["cpu", "gpu"] | None = Field(
        default=None, description="Where jobs go while no live worker serves `queue`"
    )
    memory_mb: int = Field(default=2048, gt=0, le=1024 * 1024)
    time_limit_s: float = Field(default=600, gt=0, le=7 * 24 * 3600)
    cpus: float = Field(default=1, gt=0, le=256)
    gpus: int = Field(default=0, ge=0, le=16)


class AlgorithmCreate(Frozen):
    slug: str = Field(pattern=SLUG)
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    public: bool = False
    max_concurrent_jobs: int = Field(default=4, ge=1, le=10_000)


class VersionCreate(Frozen):
    """A version of a container image or package is uploaded; built-ins are declared."""

    kind: Literal["builtin", "package", "container"]
    entrypoint: str = ""
    inputs: list[Interface]
    outputs: list[Interface]
    resources: Resources = Resources()


class VersionOut(Frozen):
    id: uuid.UUID
    version: int
    kind: str
    entrypoint: str
    image: str | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    resources: dict[str, Any]
    created_at: datetime


class AlgorithmOut(Frozen):
    id: uuid.UUID
    slug: str
    title: str
    description: str
    public: bool
    max_concurrent_jobs: int
    created_at: datetime
    role: str | None = None
    latest: VersionOut | None = None


class InputRef(Frozen):
    """Where an input's value comes from: a value of the case, or given inline."""

    from_case: str | None = Field(default=None, description="Interface of a value of the case")
    value: Any = None


class JobCreate(Frozen):
    archive_id: uuid.UUID
    case_id: uuid.UUID
    inputs: dict[str, InputRef] = Field(
        default_factory=dict,
        description="By input interface; missing ones are taken from the case's value of "
        "the same interface",
    )
    priority: int = Field(default=5, ge=0, le=9)
    webhook: str | None = Field(default=None, description="POSTed the job when it ends")


class JobBatchCreate(Frozen):
    jobs: list[JobCreate] = Field(
        min_length=1,
        max_length=1000,
        description="Started together, or none of them (the error names the job refused)",
    )


class JobOut(Frozen):
    id: uuid.UUID
    algorithm_id: uuid.UUID
    version_id: uuid.UUID
    archive_id: uuid.UUID
    case_id: uuid.UUID
    queue: str
    priority: int
    state: str
    attempts: int
    outcome: str | None
    message: str
    exit_code: int | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    resources: dict[str, Any]
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class JobLog(Frozen):
    id: uuid.UUID
    state: str
    log: str


class TriggerCreate(Frozen):
    """Fire on new DICOM series matching modality/size/description, or, with
    `value_interface`, on every new case value under that interface (e.g. raw k-space)."""

    algorithm: str = Field(pattern=SLUG)
    input_interface: str = Field(pattern=INTERFACE)
    value_interface: str | None = Field(default=None, pattern=INTERFACE)
    modality: str | None = None
    min_instances: int = Field(default=1, ge=1)
    min_images: int = Field(
        default=1,
        ge=1,
        description="Images the series must hold, each frame of a multi-frame instance one "
        "(an Enhanced CT volume is one instance of many frames)",
    )
    series_description: str | None = Field(default=None, description="A regular expression")


class TriggerOut(Frozen):
    id: uuid.UUID
    archive_id: uuid.UUID
    algorithm_id: uuid.UUID
    input_interface: str
    rule: dict[str, Any]
    enabled: bool
    created_at: datetime
