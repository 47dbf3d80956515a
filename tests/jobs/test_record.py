"""Recording the end of a job with its scalar outputs in one round trip, run here by
`tasks.execute` as a worker runs it: values replaced as `values_service` replaces them,
nothing written for a job that is no longer the worker's. (Outputs of the wrong kind:
test_outputs.py.)"""

from __future__ import annotations

import io
import threading
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from tests.conftest import Account
from voxelhub.algorithms import runner, service
from voxelhub.algorithms.catalog import register_builtins
from voxelhub.algorithms.schemas import InputRef
from voxelhub.archives import values_service
from voxelhub.archives.models import Archive, Case, CaseValue
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.jobs import engine, tasks
from voxelhub.jobs.models import Job

pytestmark = pytest.mark.usefixtures("builtins_registered")

WORKER = "test-host:1"
OUTPUT = "echo.payload"


@dataclass(frozen=True)
class Made:
    job_id: uuid.UUID
    case_id: uuid.UUID
    old_key: str


def _job_on_a_case_with_a_file_output(runtime: Runtime, admin: Account, payload: object) -> Made:
    """An echo job, queued without a message, on a case whose `echo.payload` is a file."""
    principal = Principal(user_id=admin.id, username="admin", is_admin=True, via="system")
    with session_scope(runtime.database_url) as db:
        archive = Archive(name=f"A-{uuid.uuid4().hex[:8]}")
        db.add(archive)
        db.flush()
        case = Case(archive_id=archive.id, title="c")
        db.add(case)
        db.flush()
        old = values_service.put_file(
            db, runtime.store, case, OUTPUT, filename="old.json", data=io.BytesIO(b"{}")
        )
        job = service.start_job(
            db,
            principal,
            service.get_algorithm(db, "echo"),
            archive_id=archive.id,
            case_id=case.id,
            inputs={"payload": InputRef(value=payload)},
            send=lambda *_: None,
        )
        engine.mark_queued(db, job.id)
        return Made(job.id, case.id, old.object_keys[0])


def _context(runtime: Runtime) -> tasks.WorkerContext:
    register_builtins()
    return tasks.WorkerContext(runtime, WORKER, runner.run_algorithm_job)


def test_a_scalar_output_replaces_the_case_value_with_the_end_of_the_job(
    runtime: Runtime, admin: Account
) -> None:
    made = _job_on_a_case_with_a_file_output(runtime, admin, {"n": [1, 2]})
    tasks.execute(_context(runtime), made.job_id)
    with session_scope(runtime.database_url) as db:
        job = db.get(Job, made.job_id)
        assert job is not None and job.state == engine.SUCCEEDED, job and job.message
        values = list(db.scalars(select(CaseValue).where(CaseValue.case_id == made.case_id)))
        case = db.get(Case, made.case_id)
        assert case is not None
    assert len(values) == 1
    (value,) = values
    assert (value.interface, value.kind) == (OUTPUT, "json")
    assert value.value == {"kind": "json", "value": {"n": [1, 2]}}
    assert value.object_keys == []
    assert job.outputs == {
        "payload": {"case_value": str(value.id), "interface": OUTPUT, "kind": "json"}
    }
    assert case.updated_at >= job.started_at
    # The replaced file's object goes once the new value is committed.
    assert not runtime.store.exists(made.old_key)


def test_nothing_is_written_for_a_job_taken_from_its_worker(
    runtime: Runtime, admin: Account
) -> None:
    made = _job_on_a_case_with_a_file_output(runtime, admin, "late")
    claimed = engine.claim(runtime.database_url, made.job_id, WORKER)
    assert claimed is not None
    result = runner.run_algorithm_job(runtime, claimed, threading.Event())
    assert result.writes is not None
    with session_scope(runtime.database_url) as db:
        job = db.get(Job, made.job_id)
        assert job is not None
        job.worker = "another-host:2"  # re-queued meanwhile, and claimed by another worker
    try:
        assert not tasks.record(runtime.database_url, made.job_id, WORKER, result)
    finally:
        if result.cleanup is not None:
            result.cleanup()
    with session_scope(runtime.database_url) as db:
        job = db.get(Job, made.job_id)
        values = list(db.scalars(select(CaseValue).where(CaseValue.case_id == made.case_id)))
    assert job is not None and (job.state, job.worker) == (engine.RUNNING, "another-host:2")
    assert [(v.interface, v.kind) for v in values] == [(OUTPUT, "file")]
    assert runtime.store.exists(made.old_key)


def test_the_ends_of_a_group_replace_each_case_value_only_where_still_the_workers(
    runtime: Runtime, admin: Account
) -> None:
    kept, taken = (_job_on_a_case_with_a_file_output(runtime, admin, {"n": n}) for n in (1, 2))
    claimed = engine.claim_many(runtime.database_url, [kept.job_id, taken.job_id], WORKER)
    assert [job.id for job in claimed] == [kept.job_id, taken.job_id]
    results = [runner.run_algorithm_job(runtime, job, threading.Event()) for job in claimed]
    assert all(result.writes is not None for result in results)
    with session_scope(runtime.database_url) as db:
        job = db.get(Job, taken.job_id)
        assert job is not None
        job.worker = "another-host:2"  # re-queued meanwhile, and claimed by another worker
    tasks.record_ends(_context(runtime), list(zip(claimed, results, strict=True)))
    with session_scope(runtime.database_url) as db:
        jobs = {job_id: db.get(Job, job_id) for job_id in (kept.job_id, taken.job_id)}
        values = {
            made.case_id: list(
                db.scalars(select(CaseValue).where(CaseValue.case_id == made.case_id))
            )
            for made in (kept, taken)
        }
    done, other = jobs[kept.job_id], jobs[taken.job_id]
    assert done is not None and done.state == engine.SUCCEEDED
    assert other is not None and (other.state, other.worker) == (engine.RUNNING, "another-host:2")
    assert [(v.interface, v.kind, v.value) for v in values[kept.case_id]] == [
        (OUTPUT, "json", {"kind": "json", "value": {"n": 1}})
    ]
    assert done.outputs["payload"]["case_value"] == str(values[kept.case_id][0].id)
    assert [(v.interface, v.kind) for v in values[taken.case_id]] == [(OUTPUT, "file")]
    assert not runtime.store.exists(kept.old_key)
    assert runtime.store.exists(taken.old_key)
