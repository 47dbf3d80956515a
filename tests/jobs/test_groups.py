"""Jobs sent together, in one message: claimed together (within the limits), run back to
back, their ends recorded together; safe when the worker dies mid-group, and cancellable
one by one. Run here by `tasks.execute_group` as a worker runs it (real workers on the
embedded broker and on Redis: test_groups_workers.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from sqlalchemy import select, update

from tests.conftest import Account
from voxelhub.algorithms import runner, service
from voxelhub.algorithms.catalog import register_builtins
from voxelhub.algorithms.models import Algorithm
from voxelhub.algorithms.schemas import InputRef, JobCreate
from voxelhub.archives.models import Archive, Case, CaseValue
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.jobs import engine, tasks
from voxelhub.jobs.models import Job

pytestmark = pytest.mark.usefixtures("builtins_registered")

WORKER = "test-host:1"


def _principal(account: Account) -> Principal:
    return Principal(user_id=account.id, username=account.username, is_admin=True, via="system")


def _echo_jobs(runtime: Runtime, admin: Account, count: int) -> list[uuid.UUID]:
    """`count` queued echo jobs, each on a case of its own, started together (no message)."""
    with session_scope(runtime.database_url) as db:
        archive = Archive(name=f"A-{uuid.uuid4().hex[:8]}")
        db.add(archive)
        db.flush()
        cases = [Case(archive_id=archive.id, title=f"c{i}") for i in range(count)]
        db.add_all(cases)
        db.flush()
        requests = [
            JobCreate(
                archive_id=archive.id, case_id=case.id, inputs={"payload": InputRef(value={"n": i})}
            )
            for i, case in enumerate(cases)
        ]
        jobs = service.start_jobs(
            db, _principal(admin), service.get_algorithm(db, "echo"), requests, send=lambda *_: None
        )
        ids = [job.id for job in jobs]
        engine.mark_queued(db, *ids)
    return ids


def _jobs(database_url: str, ids: list[uuid.UUID]) -> list[Job]:
    with session_scope(database_url) as db:
        found = {job.id: job for job in db.scalars(select(Job).where(Job.id.in_(ids)))}
        for job in found.values():
            db.expunge(job)
    return [found[job_id] for job_id in ids]


def _context(runtime: Runtime, *, max_jobs_per_user: int = 8) -> tasks.WorkerContext:
    register_builtins()
    return tasks.WorkerContext(
        runtime, WORKER, runner.run_algorithm_job, max_jobs_per_user=max_jobs_per_user
    )


def test_a_group_is_claimed_together_run_and_its_ends_recorded_together(
    runtime: Runtime, admin: Account
) -> None:
    ids = _echo_jobs(runtime, admin, 4)
    with session_scope(runtime.database_url) as db:
        cancelled = db.get(Job, ids[2])
        assert cancelled is not None
        engine.cancel(db, cancelled)
    tasks.execute_group(_context(runtime), ids)
    jobs = _jobs(runtime.database_url, ids)
    assert [job.state for job in jobs] == ["succeeded", "succeeded", "cancelled", "succeeded"]
    ran = [job for job in jobs if job.state == "succeeded"]
    assert all(job.attempts == 1 and job.worker == WORKER for job in ran)
    # One claim and one recording for the group: the same timestamps.
    assert len({job.started_at for job in ran}) == 1
    assert len({job.finished_at for job in ran}) == 1
    assert jobs[2].attempts == 0 and jobs[2].started_at is None
    with session_scope(runtime.database_url) as db:
        values = {
            value.case_id: value
            for value in db.scalars(
                select(CaseValue).where(CaseValue.case_id.in_([job.case_id for job in ran]))
            )
        }
    for n, job in enumerate(jobs):
        if job.state != "succeeded":
            continue
        value = values[job.case_id]
        assert value.value == {"kind": "json", "value": {"n": n}}
        assert job.outputs["payload"]["case_value"] == str(value.id)


def test_a_group_larger_than_the_user_limit_runs_in_turns(runtime: Runtime, admin: Account) -> None:
    ids = _echo_jobs(runtime, admin, 5)
    tasks.execute_group(_context(runtime, max_jobs_per_user=2), ids)
    jobs = _jobs(runtime.database_url, ids)
    assert {job.state for job in jobs} == {"succeeded"}
    claims = Counter(job.started_at for job in jobs)
    assert sorted(claims.values()) == [1, 2, 2]


def test_claiming_a_group_respects_both_limits(
    runtime: Runtime, admin: Account, make_user: Callable[..., Account]
) -> None:
    first: Account = make_user("first")
    second: Account = make_user("second")
    ids = _echo_jobs(runtime, admin, 9)
    owners = [first, *[first, second] * 4]
    with session_scope(runtime.database_url) as db:
        for job_id, owner in zip(ids, owners, strict=True):
            db.execute(update(Job).where(Job.id == job_id).values(created_by=owner.id))
        db.execute(update(Algorithm).where(Algorithm.slug == "echo").values(max_concurrent_jobs=5))
    url = runtime.database_url
    already = engine.claim(url, ids[0], "elsewhere:1", max_jobs_per_user=3)
    assert already is not None
    group = ids[1:]  # first, second, first, second, …
    claimed = engine.claim_many(url, group, WORKER, max_jobs_per_user=3)
    # The first user has one running: two more; the algorithm five in all: four more.
    assert [job.id for job in claimed] == group[:4]
    assert all(job.state == "running" and job.attempts == 1 for job in claimed)
    with session_scope(url) as db:
        assert set(engine.waiting_for_limits_many(db, group)) == set(group[4:])
    assert engine.claim_many(url, group, WORKER, max_jobs_per_user=3) == []
    assert engine.finish_now(url, ids[0], "elsewhere:1", engine.Finish("succeeded", "succeeded"))
    # One place left under the algorithm's limit: the first job that fits both.
    assert [job.id for job in engine.claim_many(url, group, WORKER, max_jobs_per_user=3)] == [
        group[4]
    ]
    with session_scope(url) as db:
        running = Counter(
            db.scalars(select(Job.created_by).where(Job.id.in_(ids), Job.state == "running"))
        )
    assert running == {first.id: 3, second.id: 2}


def test_jobs_given_back_are_queued_again_without_the_attempt(
    runtime: Runtime, admin: Account
) -> None:
    ids = _echo_jobs(runtime, admin, 3)
    url = runtime.database_url
    assert len(engine.claim_many(url, ids, WORKER)) == 3
    with session_scope(url) as db:
        job = db.get(Job, ids[1])
        assert job is not None
        engine.cancel(db, job)  # running: only asked to stop
    assert engine.release(url, ids[1:], "another:2") == []
    released = engine.release(url, ids[1:], WORKER)
    assert [job_id for job_id, _, _ in released] == [ids[2]]
    jobs = _jobs(url, ids)
    assert [job.state for job in jobs] == ["running", "cancelled", "queued"]
    assert [job.attempts for job in jobs] == [1, 0, 0]
    assert jobs[2].worker is None and jobs[2].started_at is None


def test_the_dispatcher_sends_jobs_together_in_groups() -> None:
    a, b, c, d, e = (uuid.uuid4() for _ in range(5))
    messages = [(a, "cpu", 5), (b, "cpu", 5), (c, "gpu", 5), (d, "cpu", 5), (e, "cpu", 1)]
    assert tasks.groups(messages, 2) == [
        ([a, b], "cpu", 5),
        ([d], "cpu", 5),
        ([c], "gpu", 5),
        ([e], "cpu", 1),
    ]


def test_the_dispatcher_sends_a_batch_to_redis_in_groups(runtime: Runtime, admin: Account) -> None:
    """On Redis the batch's messages go out together (one pipeline): all of them arrive,
    grouped, and their jobs are marked queued."""
    redis_url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    client = redis.Redis.from_url(redis_url)
    on_redis = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"broker_url": redis_url})
    )
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    ids = _echo_jobs(runtime, admin, 5)
    with session_scope(runtime.database_url) as db:
        db.execute(update(Job).where(Job.id.in_(ids)).values(state=engine.PENDING, queued_at=None))
    dispatcher = tasks.Dispatcher(on_redis)
    dispatcher.group_size = 2
    try:
        dispatcher.dispatch([(job_id, queue_name, 0) for job_id in ids])
        raw = client.lrange(queue_name, 0, -1)
    finally:
        client.delete(queue_name)
    sent = []
    for message in map(json.loads, raw):
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        sent.append((message["headers"]["task"], kwargs))
    # LPUSH: the first message sent is the last of the list.
    assert sent[::-1] == [
        (tasks.GROUP_TASK_NAME, {"job_ids": [str(ids[0]), str(ids[1])]}),
        (tasks.GROUP_TASK_NAME, {"job_ids": [str(ids[2]), str(ids[3])]}),
        (tasks.TASK_NAME, {"job_id": str(ids[4])}),
    ]
    assert all(job.state == engine.QUEUED for job in _jobs(runtime.database_url, ids))


def test_the_end_of_a_quick_run_is_recorded_while_a_long_one_after_it_runs(
    runtime: Runtime, admin: Account
) -> None:
    url = runtime.database_url
    ids = _echo_jobs(runtime, admin, 2)
    seen: list[str] = []

    def slow_second(runtime: Runtime, job: Job, cancelled: threading.Event) -> engine.Finish:
        """The second run lasts until the first one's end is in the database (at most 10 s)."""
        deadline = time.monotonic() + 10
        while job.id == ids[1] and time.monotonic() < deadline:
            seen.append(_jobs(url, ids[:1])[0].state)
            if seen[-1] == engine.SUCCEEDED:
                break
            time.sleep(0.02)
        return runner.run_algorithm_job(runtime, job, cancelled)

    register_builtins()
    tasks.execute_group(tasks.WorkerContext(runtime, WORKER, slow_second), ids)
    # Recorded without waiting for the end of the long run after it.
    assert seen[-1] == engine.SUCCEEDED
    assert [job.state for job in _jobs(url, ids)] == [engine.SUCCEEDED] * 2


def test_jobs_of_no_user_count_together_under_the_user_limit(
    runtime: Runtime, admin: Account
) -> None:
    """Jobs with no user (started by the platform) share one user limit, as one user."""
    url = runtime.database_url
    ids = _echo_jobs(runtime, admin, 4)
    nobody, theirs = ids[:3], ids[3]
    with session_scope(url) as db:
        db.execute(update(Job).where(Job.id.in_(nobody)).values(created_by=None))
    claimed = engine.claim_many(url, nobody, WORKER, max_jobs_per_user=2)
    assert [job.id for job in claimed] == nobody[:2]
    assert all(job.created_by is None and job.state == "running" for job in claimed)
    assert engine.claim(url, nobody[2], WORKER, max_jobs_per_user=2) is None
    # A user's job is not held back by the jobs of no user.
    mine = engine.claim(url, theirs, WORKER, max_jobs_per_user=2)
    assert mine is not None and mine.created_by == admin.id
    assert engine.finish_now(url, nobody[0], WORKER, engine.Finish("succeeded", "succeeded"))
    again = engine.claim(url, nobody[2], WORKER, max_jobs_per_user=2)
    assert again is not None and again.attempts == 1 and again.created_by is None
