"""HTTP API of algorithms and jobs: registry, versions, running, following, cancelling."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Response, UploadFile, status
from pydantic import ValidationError
from sqlalchemy import select

from voxelhub.algorithms import service, triggers
from voxelhub.algorithms.errors import InvalidAlgorithm
from voxelhub.algorithms.models import Algorithm, Trigger
from voxelhub.algorithms.schemas import (
    AlgorithmCreate,
    AlgorithmOut,
    JobBatchCreate,
    JobCreate,
    JobLog,
    JobOut,
    TriggerCreate,
    TriggerOut,
    VersionCreate,
    VersionOut,
)
from voxelhub.archives import service as archives
from voxelhub.auth import audit, permissions
from voxelhub.auth import service as auth_service
from voxelhub.auth.deps import PrincipalDep
from voxelhub.auth.roles import ArchiveRole
from voxelhub.auth.service import Principal
from voxelhub.core.deps import DbDep, RuntimeDep, StoreDep
from voxelhub.jobs import engine
from voxelhub.jobs.models import Job
from voxelhub.jobs.tasks import sender

router = APIRouter(prefix="/api/v1", tags=["algorithms"])


def _out(db: DbDep, principal: Principal, algorithm: Algorithm) -> AlgorithmOut:
    latest = service.latest_version(db, algorithm)
    role = permissions.role_of(db, principal, service.ALGORITHM, algorithm.id)
    return AlgorithmOut.model_validate(
        {
            **{
                f: getattr(algorithm, f)
                for f in (
                    "id",
                    "slug",
                    "title",
                    "description",
                    "public",
                    "max_concurrent_jobs",
                    "created_at",
                )
            },
            "role": role,
            "latest": VersionOut.model_validate(latest) if latest else None,
        }
    )


@router.get("/algorithms")
def list_algorithms(principal: PrincipalDep, db: DbDep) -> list[AlgorithmOut]:
    """The algorithms you may run."""
    rows = db.scalars(select(Algorithm).order_by(Algorithm.slug))
    return [_out(db, principal, a) for a in rows if service.may_use(db, principal, a)]


@router.post("/algorithms", status_code=status.HTTP_201_CREATED)
def create_algorithm(body: AlgorithmCreate, principal: PrincipalDep, db: DbDep) -> AlgorithmOut:
    algorithm = service.create_algorithm(db, principal, body)
    audit.record(db, principal, "algorithm.create", object_type="algorithm", object_id=algorithm.id)
    return _out(db, principal, algorithm)


@router.get("/algorithms/{slug}")
def get_algorithm(slug: str, principal: PrincipalDep, db: DbDep) -> AlgorithmOut:
    algorithm = service.get_algorithm(db, slug)
    service.require_use(db, principal, algorithm)
    return _out(db, principal, algorithm)


@router.put("/algorithms/{slug}/members/{username}")
def set_algorithm_member(
    slug: str,
    username: str,
    role: Annotated[str, Query(pattern="^(user|editor)$")],
    principal: PrincipalDep,
    db: DbDep,
) -> dict[str, str]:
    """Let a user run the algorithm (`user`) or also manage it (`editor`)."""
    algorithm = service.get_algorithm(db, slug)
    permissions.require(db, principal, service.ALGORITHM, algorithm.id, service.EDITOR)
    permissions.grant(
        db, service.ALGORITHM, algorithm.id, auth_service.get_user(db, username), role
    )
    audit.record(
        db,
        principal,
        "algorithm.member.set",
        object_type="algorithm",
        object_id=algorithm.id,
        detail={"username": username, "role": role},
    )
    return {"username": username, "role": role}


def _check_upload(kind: str, file: UploadFile) -> None:
    """Refuse what cannot run, before it is stored: not an archive, not an image."""
    import tarfile
    import tempfile
    import zipfile

    from voxelhub.algorithms.executors.container import archive_kind
    from voxelhub.algorithms.executors.errors import ExecutorError

    with tempfile.NamedTemporaryFile(suffix=".tar") as copy:
        shutil.copyfileobj(file.file, copy)
        copy.flush()
        file.file.seek(0)
        if kind == "container":
            try:
                archive_kind(Path(copy.name))
            except ExecutorError as err:
                raise InvalidAlgorithm(f"the container upload is not usable: {err}") from err
        elif not (zipfile.is_zipfile(copy.name) or tarfile.is_tarfile(copy.name)):
            raise InvalidAlgorithm("a package is uploaded as a zip or tar archive of its folder")
        else:
            from voxelhub.algorithms.bundles import check_bundle_archive

            check_bundle_archive(Path(copy.name))


@router.post("/algorithms/{slug}/versions", status_code=status.HTTP_201_CREATED)
def add_version(
    slug: str,
    spec: Annotated[str, Form(description="The VersionCreate JSON")],
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    file: UploadFile | None = None,
) -> VersionOut:
    """A new version: a package archive (zip/tar) or a `docker save` tarball, or a built-in."""
    algorithm = service.get_algorithm(db, slug)
    permissions.require(db, principal, service.ALGORITHM, algorithm.id, service.EDITOR)
    try:
        body = VersionCreate.model_validate(json.loads(spec))
    except (json.JSONDecodeError, ValidationError) as err:
        raise InvalidAlgorithm(f"the version spec is not valid: {err}") from err
    key = None
    if body.kind in ("package", "container"):
        if file is None:
            raise InvalidAlgorithm(f"a {body.kind} version needs its file (multipart 'file')")
        key = f"algorithms/{algorithm.id}/{uuid.uuid4()}/{body.kind}.bin"
        _check_upload(body.kind, file)
        store.put(key, file.file)
    elif body.kind == "builtin":
        from voxelhub.algorithms.catalog import register_builtins
        from voxelhub.algorithms.executors.builtin import builtin_names

        if not builtin_names():
            register_builtins()

        if body.entrypoint not in builtin_names():
            raise InvalidAlgorithm(
                f"no built-in algorithm {body.entrypoint!r}; there are "
                f"{', '.join(sorted(builtin_names()))}"
            )
    image = f"voxelhub-algorithm-{algorithm.slug}" if body.kind == "container" else None
    version = service.add_version(db, algorithm, body, image=image, package_key=key)
    audit.record(
        db,
        principal,
        "algorithm.version.create",
        object_type="algorithm",
        object_id=algorithm.id,
        detail={"version": version.version},
    )
    return VersionOut.model_validate(version)


@router.post("/algorithms/{slug}/jobs", status_code=status.HTTP_202_ACCEPTED)
def start_job(
    slug: str,
    body: JobCreate,
    response: Response,
    principal: PrincipalDep,
    db: DbDep,
    runtime: RuntimeDep,
) -> JobOut:
    """Run the algorithm on a case (asynchronously): poll the job, or name a webhook."""
    algorithm = service.get_algorithm(db, slug)
    extra = {"webhook": body.webhook} if body.webhook else None
    job = service.start_job(
        db,
        principal,
        algorithm,
        archive_id=body.archive_id,
        case_id=body.case_id,
        inputs=body.inputs,
        send=sender(runtime),
        priority=body.priority,
        extra=extra,
    )
    _audit_created(db, principal, slug, job)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.model_validate(job)


def _audit_created(db: DbDep, principal: Principal, slug: str, job: Job) -> None:
    audit.record(
        db,
        principal,
        "job.create",
        object_type="job",
        object_id=job.id,
        detail=_created_detail(slug, job),
    )


def _created_detail(slug: str, job: Job) -> dict[str, str]:
    return {"algorithm": slug, "case": str(job.case_id)}


@router.post("/algorithms/{slug}/jobs/batch", status_code=status.HTTP_202_ACCEPTED)
def start_jobs(
    slug: str, body: JobBatchCreate, principal: PrincipalDep, db: DbDep, runtime: RuntimeDep
) -> list[JobOut]:
    """Run the algorithm on many cases at once, in one transaction (e.g. a whole archive)."""
    algorithm = service.get_algorithm(db, slug)
    jobs = service.start_jobs(db, principal, algorithm, body.jobs, send=sender(runtime))
    audit.record_many(
        db,
        principal,
        "job.create",
        object_type="job",
        events=[(job.id, _created_detail(slug, job)) for job in jobs],
    )
    return [JobOut.model_validate(job) for job in jobs]


def _visible_job(db: DbDep, principal: Principal, job_id: uuid.UUID) -> Job:
    job = engine.get_job(db, job_id)
    if job.created_by != principal.user_id:
        archives.get_archive(db, principal, job.archive_id, ArchiveRole.viewer)
    return job


@router.post("/archives/{archive_id}/triggers", status_code=status.HTTP_201_CREATED)
def create_trigger(
    archive_id: uuid.UUID, body: TriggerCreate, principal: PrincipalDep, db: DbDep
) -> TriggerOut:
    """Run an algorithm on every new series of the archive that matches the rule."""
    trigger = triggers.create_trigger(db, principal, archive_id, body)
    audit.record(
        db,
        principal,
        "trigger.create",
        object_type="archive",
        object_id=archive_id,
        detail={"trigger": str(trigger.id), "algorithm": body.algorithm},
    )
    return TriggerOut.model_validate(trigger)


@router.get("/archives/{archive_id}/triggers")
def list_triggers(archive_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> list[TriggerOut]:
    archives.get_archive(db, principal, archive_id, ArchiveRole.viewer)
    rows = db.scalars(select(Trigger).where(Trigger.archive_id == archive_id))
    return [TriggerOut.model_validate(t) for t in rows]


@router.get("/jobs")
def list_jobs(
    principal: PrincipalDep,
    db: DbDep,
    state: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobOut]:
    """Your jobs, newest first."""
    query = select(Job).where(Job.created_by == principal.user_id)
    if state:
        query = query.where(Job.state == state)
    rows = db.scalars(query.order_by(Job.created_at.desc()).limit(limit))
    return [JobOut.model_validate(j) for j in rows]


@router.get("/jobs/{job_id}")
def get_job(job_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> JobOut:
    return JobOut.model_validate(_visible_job(db, principal, job_id))


@router.get("/jobs/{job_id}/log")
def get_job_log(job_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> JobLog:
    job = _visible_job(db, principal, job_id)
    return JobLog(id=job.id, state=job.state, log=job.log)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> JobOut:
    job = _visible_job(db, principal, job_id)
    if job.created_by != principal.user_id:
        archives.get_archive(db, principal, job.archive_id, ArchiveRole.editor)
    engine.cancel(db, job)
    audit.record(db, principal, "job.cancel", object_type="job", object_id=job.id)
    return JobOut.model_validate(job)
