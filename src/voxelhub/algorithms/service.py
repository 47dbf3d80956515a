"""The algorithm registry and starting jobs. Flushes, never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from voxelhub.algorithms.errors import AlgorithmExists, AlgorithmNotFound, InvalidInputs
from voxelhub.algorithms.models import Algorithm, AlgorithmVersion
from voxelhub.algorithms.schemas import AlgorithmCreate, InputRef, JobCreate, VersionCreate
from voxelhub.archives import service as archives
from voxelhub.archives.models import Case, CaseValue
from voxelhub.archives.values import FILE_KINDS, ValueKind
from voxelhub.auth import permissions
from voxelhub.auth.models import User
from voxelhub.auth.roles import ArchiveRole, register_object_type
from voxelhub.auth.service import Principal
from voxelhub.core.db import utcnow
from voxelhub.core.settings import get_settings
from voxelhub.jobs import engine
from voxelhub.jobs.models import Job, WorkerHeartbeat

ALGORITHM = "algorithm"
USER, EDITOR = "user", "editor"
register_object_type(ALGORITHM, (USER, EDITOR))


def create_algorithm(db: Session, principal: Principal, body: AlgorithmCreate) -> Algorithm:
    if db.scalar(select(Algorithm.id).where(Algorithm.slug == body.slug)) is not None:
        raise AlgorithmExists(f"an algorithm {body.slug!r} exists already; pick another slug")
    algorithm = Algorithm(**body.model_dump(), created_by=principal.user_id)
    db.add(algorithm)
    db.flush()
    owner = db.get(User, principal.user_id)
    if owner is not None:
        permissions.grant(db, ALGORITHM, algorithm.id, owner, EDITOR)
    return algorithm


def get_algorithm(db: Session, slug: str) -> Algorithm:
    algorithm = db.scalar(select(Algorithm).where(Algorithm.slug == slug))
    if algorithm is None:
        raise AlgorithmNotFound(f"no algorithm {slug!r}; list them with GET /api/v1/algorithms")
    return algorithm


def may_use(db: Session, principal: Principal, algorithm: Algorithm) -> bool:
    return algorithm.public or permissions.has_role(db, principal, ALGORITHM, algorithm.id, USER)


def require_use(db: Session, principal: Principal, algorithm: Algorithm) -> None:
    if not may_use(db, principal, algorithm):
        permissions.require(db, principal, ALGORITHM, algorithm.id, USER)


def add_version(
    db: Session,
    algorithm: Algorithm,
    body: VersionCreate,
    *,
    image: str | None = None,
    package_key: str | None = None,
) -> AlgorithmVersion:
    latest = db.scalar(
        select(func.max(AlgorithmVersion.version)).where(
            AlgorithmVersion.algorithm_id == algorithm.id
        )
    )
    version = AlgorithmVersion(
        algorithm_id=algorithm.id,
        version=(latest or 0) + 1,
        kind=body.kind,
        entrypoint=body.entrypoint,
        image=image,
        package_key=package_key,
        inputs=[i.model_dump(mode="json") for i in body.inputs],
        outputs=[o.model_dump(mode="json") for o in body.outputs],
        resources=body.resources.model_dump(mode="json"),
    )
    db.add(version)
    db.flush()
    return version


def latest_version(db: Session, algorithm: Algorithm) -> AlgorithmVersion | None:
    return db.scalar(
        select(AlgorithmVersion)
        .where(AlgorithmVersion.algorithm_id == algorithm.id, AlgorithmVersion.active.is_(True))
        .order_by(AlgorithmVersion.version.desc())
        .limit(1)
    )


def _resolve_input(
    db: Session, case_id: uuid.UUID, spec: dict[str, Any], ref: InputRef | None
) -> dict[str, Any]:
    interface, kind = spec["interface"], ValueKind(spec["kind"])
    if ref is not None and ref.from_case is None:
        if kind in FILE_KINDS:
            raise InvalidInputs(
                f"input {interface!r} is a {kind}: name a value of the case "
                "with from_case, it cannot be given inline"
            )
        return {"kind": kind, "value": _check_scalar(interface, kind, ref.value)}
    source = ref.from_case if ref is not None and ref.from_case else interface
    row = db.scalar(
        select(CaseValue).where(CaseValue.case_id == case_id, CaseValue.interface == source)
    )
    if row is None:
        raise InvalidInputs(
            f"input {interface!r} needs a {kind} value, and the case has no value {source!r}; "
            "add it to the case or name another with from_case"
        )
    if row.kind != kind:
        raise InvalidInputs(
            f"input {interface!r} takes a {kind}, but the case's {source!r} is a {row.kind}"
        )
    return {"kind": kind, "case_value_id": str(row.id), "from_case": source}


def _check_scalar(interface: str, kind: ValueKind, value: Any) -> Any:
    ok = {
        ValueKind.number: isinstance(value, int | float) and not isinstance(value, bool),
        ValueKind.text: isinstance(value, str),
        ValueKind.report: isinstance(value, str),
        ValueKind.json: True,
    }.get(kind, False)
    if not ok:
        raise InvalidInputs(f"input {interface!r} takes a {kind}, not {type(value).__name__}")
    return value


def queue_for(db: Session, resources: dict[str, Any]) -> str:
    """The algorithm's queue, or its `fallback_queue` while no live worker serves it (a
    GPU algorithm that also runs on CPUs goes to `cpu` where there is no GPU worker)."""
    queue = str(resources.get("queue", "cpu"))
    fallback = resources.get("fallback_queue")
    if not fallback or fallback == queue:
        return queue
    fresh = utcnow() - timedelta(seconds=get_settings().worker_stale_seconds)
    served = db.scalars(select(WorkerHeartbeat.queues).where(WorkerHeartbeat.seen_at > fresh)).all()
    if any(queue in listed.split(",") for listed in served):
        return queue
    return str(fallback)


def start_job(
    db: Session,
    principal: Principal,
    algorithm: Algorithm,
    *,
    archive_id: uuid.UUID,
    case_id: uuid.UUID,
    inputs: dict[str, InputRef],
    send: engine.Sender,
    priority: int = 5,
    trigger_id: uuid.UUID | None = None,
    extra: dict[str, Any] | None = None,
) -> Job:
    """Validate everything a job needs, then create it (sent to its queue after commit)."""
    require_use(db, principal, algorithm)
    archives.get_archive(db, principal, archive_id, ArchiveRole.uploader)
    archives.get_case(db, archive_id, case_id)
    version = _runnable_version(db, algorithm)
    job = Job(
        algorithm_id=algorithm.id,
        version_id=version.id,
        archive_id=archive_id,
        case_id=case_id,
        created_by=principal.user_id,
        trigger_id=trigger_id,
        queue=queue_for(db, version.resources),
        priority=priority,
        inputs={"values": _resolve_inputs(db, algorithm, version, case_id, inputs),
                **(extra or {})},
    )  # fmt: skip
    return engine.create_job(db, job, send)


MAX_JOBS_PER_CALL = 1000


def start_jobs(
    db: Session,
    principal: Principal,
    algorithm: Algorithm,
    requests: Sequence[JobCreate],
    *,
    send: engine.Sender,
) -> list[Job]:
    """`start_job` for many cases at once, in the caller's transaction: everything is
    checked first (one refusal refuses them all, naming the job), the jobs are inserted
    together and their messages go out together after the commit."""
    if not 0 < len(requests) <= MAX_JOBS_PER_CALL:
        raise InvalidInputs(f"start 1 to {MAX_JOBS_PER_CALL} jobs at a time, not {len(requests)}")
    require_use(db, principal, algorithm)
    for archive_id in {r.archive_id for r in requests}:
        archives.get_archive(db, principal, archive_id, ArchiveRole.uploader)
    _check_cases(db, requests)
    version = _runnable_version(db, algorithm)
    queue = queue_for(db, version.resources)
    jobs: list[dict[str, Any]] = []
    for index, request in enumerate(requests):
        try:
            resolved = _resolve_inputs(db, algorithm, version, request.case_id, request.inputs)
        except InvalidInputs as err:
            raise InvalidInputs(f"job {index} (case {request.case_id}): {err}") from err
        jobs.append(
            {
                "algorithm_id": algorithm.id,
                "version_id": version.id,
                "archive_id": request.archive_id,
                "case_id": request.case_id,
                "created_by": principal.user_id,
                "queue": queue,
                "priority": request.priority,
                "inputs": {"values": resolved}
                | ({"webhook": request.webhook} if request.webhook else {}),
            }
        )
    return engine.create_jobs(db, jobs, send)


def _check_cases(db: Session, requests: Sequence[JobCreate]) -> None:
    """Every request's case exists in its archive (one query for all of them)."""
    wanted = {r.case_id for r in requests}
    rows = db.execute(select(Case.id, Case.archive_id).where(Case.id.in_(wanted)))
    found = {case_id: archive_id for case_id, archive_id in rows}
    for request in requests:
        if found.get(request.case_id) != request.archive_id:
            # The single-case lookup says what is wrong and how to list the cases.
            archives.get_case(db, request.archive_id, request.case_id)


def _runnable_version(db: Session, algorithm: Algorithm) -> AlgorithmVersion:
    version = latest_version(db, algorithm)
    if version is None:
        raise InvalidInputs(f"algorithm {algorithm.slug!r} has no version to run yet")
    return version


def _resolve_inputs(
    db: Session,
    algorithm: Algorithm,
    version: AlgorithmVersion,
    case_id: uuid.UUID,
    inputs: dict[str, InputRef],
) -> dict[str, Any]:
    unknown = set(inputs) - {i["interface"] for i in version.inputs}
    if unknown:
        raise InvalidInputs(
            f"algorithm {algorithm.slug!r} has no input {', '.join(sorted(unknown))}; its "
            f"inputs are {', '.join(i['interface'] for i in version.inputs)}"
        )
    return {
        spec["interface"]: _resolve_input(db, case_id, spec, inputs.get(spec["interface"]))
        for spec in version.inputs
    }
