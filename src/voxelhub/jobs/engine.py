"""The job state machine: create, dispatch after commit, claim, finish, cancel, reconcile.

pending --dispatch--> queued --claim--> running --finish--> succeeded | failed
   \\____________________\\__cancel__________\\--> cancelled
A running job whose worker stopped beating goes back to queued (one more attempt) or, out
of attempts, fails. Every transition is one guarded UPDATE, so two processes never both win.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Column, Table, and_, or_, select, text, update
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from voxelhub.core.db import after_commit, insert_from_json, json_param, json_rows, utcnow
from voxelhub.jobs.errors import JobNotFound, JobStateError
from voxelhub.jobs.kept import kept
from voxelhub.jobs.models import Job, WorkerHeartbeat

logger = logging.getLogger(__name__)

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINAL = (SUCCEEDED, FAILED, CANCELLED)
LOG_LIMIT = 256 * 1024
# The jobs table for Core statements (the ORM's bulk-update path costs more CPU than the
# statement itself where no loaded Job needs synchronising).
_JOBS = cast(Table, Job.__table__)
_COLUMNS = tuple((c.name, c.key) for c in _JOBS.c)

# How a message is sent: (job id, queue, priority) -> None. Set per process. A sender
# with a `send_many` method (the worker's dispatcher) is handed a batch's messages together.
Sender = Callable[[uuid.UUID, str, int], None]


def create_job(db: Session, job: Job, send: Sender) -> Job:
    """Add a job in the caller's transaction; its message goes out after the commit."""
    job.state = PENDING
    db.add(job)
    db.flush()
    job_id, queue, priority = job.id, job.queue, job.priority
    after_commit(db, lambda: _send_quietly(send, job_id, queue, priority))
    return job


def _default_of(column: Column[Any]) -> Callable[[], Any]:
    """The value the ORM gives `column` of a new row where none is set."""
    default = column.default
    if isinstance(default, CallableColumnDefault):
        # The ORM's wrapper of a default that takes no arguments: its context is unused.
        return functools.partial(default.arg, cast(Any, None))
    if isinstance(default, ScalarElementColumnDefault):
        return lambda: default.arg
    return lambda: None


_NEW_JOB = tuple((c.key, _default_of(c)) for c in _JOBS.c)
_JOB_KEYS = frozenset(key for key, _ in _NEW_JOB)


def create_jobs(db: Session, jobs: list[dict[str, Any]], send: Sender) -> list[Job]:
    """`create_job` for many jobs, given as their columns (the table's defaults fill the
    rest): one INSERT of them all (`insert_from_json`), their messages handed over
    together after the commit. The Jobs returned are of no session (to be read).

    Not the ORM's unit of work: for a batch its flush cost more than everything else a
    request to create jobs does, most of it building and parsing one multi-row VALUES
    statement of every column of every job.
    """
    for given in jobs:
        if unknown := given.keys() - _JOB_KEYS:
            raise ValueError(f"a job has no column {', '.join(sorted(unknown))}")
    rows = [
        tuple(
            PENDING if key == "state" else given[key] if key in given else default()
            for key, default in _NEW_JOB
        )
        for given in jobs
    ]
    names = tuple(name for name, _ in _COLUMNS)
    db.connection().exec_driver_sql(
        insert_from_json(_JOBS, names), {"rows": json_rows(names, rows)}
    )
    created = [_detached_job(row) for row in rows]
    messages = [(job.id, job.queue, job.priority) for job in created]
    send_many: Callable[[list[tuple[uuid.UUID, str, int]]], None] | None = getattr(
        send, "send_many", None
    )

    def send_all() -> None:
        if send_many is not None:
            try:
                send_many(messages)
            except Exception:  # the reconciler sends them later
                logger.warning("could not send %d jobs now; the reconciler will",
                               len(messages), exc_info=True)  # fmt: skip
            return
        for message in messages:
            _send_quietly(send, *message)

    after_commit(db, send_all)
    return created


def _send_quietly(send: Sender, job_id: uuid.UUID, queue: str, priority: int) -> None:
    try:
        send(job_id, queue, priority)
    except Exception:  # the reconciler sends it later
        logger.warning("could not send job %s now; the reconciler will", job_id, exc_info=True)


def _later(send: Sender, job_id: uuid.UUID, queue: str, priority: int) -> Callable[[], None]:
    def go() -> None:
        _send_quietly(send, job_id, queue, priority)

    return go


_MARK_QUEUED_SQL = (
    f"UPDATE jobs SET state = '{QUEUED}', queued_at = %(now)s "
    f"WHERE id = ANY(%(ids)s) AND state = '{PENDING}'"
)


def mark_queued_now(database_url: str, job_ids: list[uuid.UUID]) -> None:
    """`mark_queued` in a transaction of its own, in one round trip (see `kept`)."""

    def mark(conn: psycopg.Connection[Any]) -> None:
        with conn.pipeline():
            conn.execute(_MARK_QUEUED_SQL, {"now": utcnow(), "ids": job_ids})
            conn.commit()

    kept(database_url, "dispatch").run(mark)


def mark_queued(db: Session, *job_ids: uuid.UUID) -> None:
    """Pending jobs whose messages went out are queued (one UPDATE for all of them)."""
    db.execute(
        update(_JOBS)
        .where(_JOBS.c.id.in_(job_ids), _JOBS.c.state == PENDING)
        .values(state=QUEUED, queued_at=utcnow())
    )


# Claims take turns (for the milliseconds of one statement), so that two workers claiming
# at once cannot both see room under a limit: a count in one statement cannot see a claim
# that another transaction has not committed yet.
_CLAIM_LOCK = 0x766F78656C636C6D
NO_LIMIT = 1_000_000


def _user_running(jobs: str) -> str:
    """The running jobs of the user of `jobs` (a row of that name), those of no user
    together. Two counts, not one with IS NOT DISTINCT FROM, which no index serves: each is
    an index scan of ix_jobs_created_by_state, where a plain scan also marks the entries of
    ended runs dead for the next one (a bitmap scan of every running job's entry, a claim's
    cost before, grows with the runs since the last vacuum)."""
    running = f"SELECT count(*) FROM jobs AS running WHERE running.state = '{RUNNING}' AND"
    return (
        f"(CASE WHEN {jobs}.created_by IS NULL "
        f"THEN ({running} running.created_by IS NULL) "
        f"ELSE ({running} running.created_by = {jobs}.created_by) END)"
    )


# The claim: a guarded UPDATE … RETURNING that counts, in the same statement, the running
# jobs of the job's user and of its algorithm (psycopg's own parameters: it runs there).
_CLAIM_SQL = f"""
UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1,
    started_at = %(now)s, worker = %(worker)s
WHERE id = %(job_id)s AND state IN ('{PENDING}', '{QUEUED}') AND NOT cancel_requested
    AND {_user_running("jobs")} < %(max_jobs_per_user)s
    AND (SELECT count(*) FROM jobs AS running WHERE running.state = '{RUNNING}'
         AND running.algorithm_id = jobs.algorithm_id)
        < coalesce((SELECT max_concurrent_jobs FROM algorithms
                    WHERE algorithms.id = jobs.algorithm_id), {NO_LIMIT})
RETURNING {", ".join(name for name, _ in _COLUMNS)}
"""
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%(k)s)"


def _claim_on(conn: psycopg.Connection[Any], params: dict[str, Any]) -> tuple[Any, ...] | None:
    with conn.pipeline():
        conn.execute(_LOCK_SQL, {"k": _CLAIM_LOCK})
        cursor = conn.execute(_CLAIM_SQL, params)
        conn.commit()
    row: tuple[Any, ...] | None = cursor.fetchone()
    return row


def _claim_params(worker: str, max_jobs_per_user: int, **jobs: Any) -> dict[str, Any]:
    """The parameters of a claim statement: the job(s) named by `jobs`, this worker, now."""
    return {**jobs, "max_jobs_per_user": max_jobs_per_user, "now": utcnow(), "worker": worker}


def claim(
    database_url: str, job_id: uuid.UUID, worker: str, *, max_jobs_per_user: int = NO_LIMIT
) -> Job | None:
    """Move a queued job to running for this worker; None if it is not ours to run now.

    One guarded UPDATE checks the state, cancellation and both limits (running jobs of the
    job's user, and of its algorithm) and returns the claimed row, committed, in one round
    trip on this process's kept connection (see `kept`). None also
    when a limit is reached: `waiting_for_limits` tells that case apart. The Job returned
    is not attached to any session (it is read, never changed, by the job's handler).
    """
    params = _claim_params(worker, max_jobs_per_user, job_id=job_id)
    row = kept(database_url, "claims").run(lambda conn: _claim_on(conn, params))
    return None if row is None else _detached_job(row)


@functools.cache
def _new_job() -> Callable[[], Job]:
    configure_mappers()  # a Job made without its constructor does not configure them
    new: Callable[[], Job] = Job.__mapper__.class_manager.new_instance
    return new


def _detached_job(row: tuple[Any, ...]) -> Job:
    """A Job of no session from a row of `_COLUMNS`, its values set as loaded ones (the
    constructor's change events per column cost more than the rest of a trivial run's
    claim)."""
    job = _new_job()()
    job.__dict__.update(zip((key for _, key in _COLUMNS), row, strict=True))
    return job


# The claim of a group (the jobs of one message): the same guards as `_CLAIM_SQL`, with each
# job's place among the group's jobs of its user (and of its algorithm) added to the count
# of running ones, so that claiming several at once never passes a limit either.
# `found` and `ranked` are materialised: with statistics from before a burst of new jobs
# (an estimate of few waiting ones), the planner otherwise scanned every waiting job's entry
# in ix_jobs_state_queue, once to find the group's jobs, and as the outer side of the
# UPDATE's join, computing `ranked` (its counts of running jobs) again for each entry:
# thousands of index scans per claim once a thousand jobs wait.
_CLAIM_MANY_SQL = f"""
WITH found AS MATERIALIZED (
    SELECT jobs.id, jobs.created_by, jobs.algorithm_id, jobs.state, jobs.cancel_requested,
        given.place
    FROM unnest(%(job_ids)s::uuid[]) WITH ORDINALITY AS given(id, place)
    JOIN jobs ON jobs.id = given.id
), wanted AS (
    SELECT id, created_by, algorithm_id, place FROM found
    WHERE state IN ('{PENDING}', '{QUEUED}') AND NOT cancel_requested
), ranked AS MATERIALIZED (
    SELECT wanted.id,
        row_number() OVER (PARTITION BY wanted.created_by ORDER BY wanted.place)
        + {_user_running("wanted")} AS user_running,
        row_number() OVER (PARTITION BY wanted.algorithm_id ORDER BY wanted.place)
        + (SELECT count(*) FROM jobs AS running WHERE running.state = '{RUNNING}'
           AND running.algorithm_id = wanted.algorithm_id) AS algorithm_running,
        coalesce((SELECT max_concurrent_jobs FROM algorithms
                  WHERE algorithms.id = wanted.algorithm_id), {NO_LIMIT}) AS algorithm_limit
    FROM wanted
)
UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1,
    started_at = %(now)s, worker = %(worker)s
FROM ranked
WHERE jobs.id = ranked.id AND jobs.state IN ('{PENDING}', '{QUEUED}')
    AND NOT jobs.cancel_requested
    AND ranked.user_running <= %(max_jobs_per_user)s
    AND ranked.algorithm_running <= ranked.algorithm_limit
RETURNING {", ".join(f"jobs.{name}" for name, _ in _COLUMNS)}
"""


def _claim_many_on(conn: psycopg.Connection[Any], params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with conn.pipeline():
        conn.execute(_LOCK_SQL, {"k": _CLAIM_LOCK})
        cursor = conn.execute(_CLAIM_MANY_SQL, params)
        conn.commit()
    return cursor.fetchall()


def claim_many(
    database_url: str,
    job_ids: list[uuid.UUID],
    worker: str,
    *,
    max_jobs_per_user: int = NO_LIMIT,
) -> list[Job]:
    """`claim` for the jobs of one message, in one statement and one round trip.

    Returns the jobs claimed, in the order given. A job is claimed on the same terms as by
    `claim` (its state, its cancellation, both limits); where a limit leaves room for only
    some of the group's jobs of one user or algorithm, the first ones are claimed (a job
    kept out by one limit still takes its place under the other: never more than a limit
    allows, sometimes fewer). `waiting_for_limits_many` says which of the others still wait.
    """
    unique = list(dict.fromkeys(job_ids))
    if not unique:
        return []
    params = _claim_params(worker, max_jobs_per_user, job_ids=unique)
    rows = kept(database_url, "claims").run(lambda conn: _claim_many_on(conn, params))
    claimed = {job.id: job for job in map(_detached_job, rows)}
    return [claimed[job_id] for job_id in unique if job_id in claimed]


def waiting_for_limits_many(
    db: Session, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, int]]:
    """`waiting_for_limits` for several jobs in one query: (queue, priority) by job id of
    those that still wait to run."""
    rows = db.execute(
        select(Job.id, Job.queue, Job.priority).where(
            Job.id.in_(job_ids), Job.state.in_((PENDING, QUEUED)), Job.cancel_requested.is_(False)
        )
    )
    return {row.id: (row.queue, row.priority) for row in rows}


_RELEASE_SQL = f"""
UPDATE jobs SET
    state = CASE WHEN cancel_requested THEN '{CANCELLED}' ELSE '{QUEUED}' END,
    outcome = CASE WHEN cancel_requested THEN '{CANCELLED}' ELSE outcome END,
    message = CASE WHEN cancel_requested THEN 'cancelled before it started' ELSE message END,
    finished_at = CASE WHEN cancel_requested THEN %(now)s ELSE finished_at END,
    attempts = greatest(attempts - 1, 0), worker = NULL, started_at = NULL, queued_at = %(now)s
WHERE id = ANY(%(job_ids)s) AND state = '{RUNNING}' AND worker = %(worker)s
RETURNING id, queue, priority, state
"""


def release(
    database_url: str, job_ids: list[uuid.UUID], worker: str
) -> list[tuple[uuid.UUID, str, int]]:
    """Give back jobs this worker claimed but has not started: queued again, without the
    attempt their claim counted (cancelled instead where a cancellation was asked for
    meanwhile). Returns (id, queue, priority) of those queued again: they need a message.
    Jobs no longer this worker's are left alone."""
    if not job_ids:
        return []
    params = {"job_ids": job_ids, "worker": worker, "now": utcnow()}

    def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        with conn.pipeline():
            cursor = conn.execute(_RELEASE_SQL, params)
            conn.commit()
        return cursor.fetchall()

    rows = kept(database_url, "claims").run(run)
    return [(job_id, queue, priority) for job_id, queue, priority, state in rows if state == QUEUED]


def waiting_for_limits(db: Session, job_id: uuid.UUID) -> tuple[str, int] | None:
    """After a failed claim: (queue, priority) when the job still waits to run (a limit was
    reached), None when it is not to be run at all (gone, finished, taken, cancelled)."""
    row = db.execute(
        select(Job.queue, Job.priority).where(
            Job.id == job_id, Job.state.in_((PENDING, QUEUED)), Job.cancel_requested.is_(False)
        )
    ).one_or_none()
    return None if row is None else (row.queue, row.priority)


@dataclass(frozen=True)
class Finish:
    """How a run ended, as the handler reports it.

    `store` is the rest of the run's work that writes to the database (storing its outputs):
    it runs in the transaction that records the end, so a job's outputs and its final state
    commit together, and returns the Finish to record (or raises `Rejected`). `cleanup`
    runs afterwards whatever happened (the working folder the outputs were read from).
    """

    state: str
    outcome: str
    message: str = ""
    exit_code: int | None = None
    log: str = ""
    resources: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    store: Callable[[Session], Finish] | None = None
    cleanup: Callable[[], None] | None = None
    writes: Writes | None = None


class Writes(Protocol):
    """Statements that store a run's outputs with its end on a kept connection (see
    `finish_now`), sent inside the transaction that records the end, in pipeline mode,
    with parameters that hold at least those FINISHED_HERE reads: the locks they need
    before the end is recorded (`lock`), the writes after it (`write`, each guarded by
    FINISHED_HERE)."""

    def lock(self, conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
        """Send the statements that take the writes' locks."""

    def write(self, conn: psycopg.Connection[Any], params: dict[str, Any]) -> Callable[[], None]:
        """Send the writes; return what to do after the commit."""


class Rejected(Exception):
    """Raised by a Finish's `store` when the outputs are unusable: whatever it wrote is
    rolled back, and `finish` (the failure, saying why) is recorded instead."""

    def __init__(self, finish: Finish) -> None:
        super().__init__(finish.message)
        self.finish = finish


def _ending(result: Finish) -> dict[str, Any]:
    """The columns every end sets, cut to what the row keeps."""
    return {
        "state": result.state,
        "outcome": result.outcome,
        "message": result.message[:4000],
        "exit_code": result.exit_code,
        "log": result.log[-LOG_LIMIT:],
    }


def finish(db: Session, job_id: uuid.UUID, worker: str, result: Finish) -> bool:
    """Record the end of a run; False if the job was taken from this worker meanwhile."""
    values: dict[str, Any] = {**_ending(result), "finished_at": utcnow()}
    if result.resources is not None:
        values["resources"] = result.resources
    if result.outputs is not None:
        values["outputs"] = result.outputs
    jobs = _JOBS
    done = db.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == RUNNING, jobs.c.worker == worker)
        .values(**values)
        .returning(jobs.c.id)
    ).scalar_one_or_none()
    return done is not None


_FINISH_SQL = f"""
UPDATE jobs SET state = %(state)s, outcome = %(outcome)s, message = %(message)s,
    exit_code = %(exit_code)s, log = %(log)s, finished_at = %(now)s,
    resources = coalesce(%(resources)s, resources), outputs = coalesce(%(outputs)s, outputs)
WHERE id = %(job_id)s AND state = '{RUNNING}' AND worker = %(worker)s
RETURNING id
"""
# True, in a later statement of the transaction that sent the finish UPDATE, only when
# that UPDATE took effect (no other run ends at the same microsecond on the same worker).
FINISHED_HERE = (
    "EXISTS (SELECT 1 FROM jobs WHERE id = %(job_id)s AND worker = %(worker)s "
    "AND finished_at = %(now)s)"
)


def _json_or_none(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def _finish_params(job_id: uuid.UUID, worker: str, result: Finish, now: datetime) -> dict[str, Any]:
    return {
        **_ending(result),
        "job_id": job_id,
        "worker": worker,
        "now": now,
        "resources": _json_or_none(result.resources),
        "outputs": _json_or_none(result.outputs),
    }


def finish_now(database_url: str, job_id: uuid.UUID, worker: str, result: Finish) -> bool:
    """`finish` with the result's `writes`, committed, in one round trip on this process's
    kept connection (see `kept`); False, with nothing written, if the job was taken from
    this worker meanwhile (or deleted)."""
    params = _finish_params(job_id, worker, result, utcnow())
    writes = result.writes

    def run(conn: psycopg.Connection[Any]) -> tuple[bool, Callable[[], None] | None]:
        with conn.pipeline():
            if writes is not None:
                writes.lock(conn, params)
            finished = conn.execute(_FINISH_SQL, params)
            then = None if writes is None else writes.write(conn, params)
            conn.commit()
        return finished.fetchone() is not None, then

    done, then = kept(database_url, "finish").run(run)
    if done:
        _after_recording(job_id, then)
    return done


def _after_recording(job_id: uuid.UUID, then: Callable[[], None] | None) -> None:
    """What a recorded end's writes do after the commit (delete replaced objects)."""
    if then is None:
        return
    try:
        then()
    except Exception:  # the end stands; what is left is an orphan for the sweep
        logger.warning("after recording job %s", job_id, exc_info=True)


# `_FINISH_SQL` for several runs at once, each run's columns read from JSON (`json_param`).
_FINISH_MANY_SQL = f"""
UPDATE jobs SET state = e.state, outcome = e.outcome, message = e.message,
    exit_code = e.exit_code, log = e.log, finished_at = %(now)s,
    resources = coalesce(e.resources, jobs.resources),
    outputs = coalesce(e.outputs, jobs.outputs)
FROM jsonb_to_recordset(%(ends)s::jsonb) AS e(job_id uuid, state text, outcome text,
    message text, exit_code integer, log text, resources jsonb, outputs jsonb)
WHERE jobs.id = e.job_id AND jobs.state = '{RUNNING}' AND jobs.worker = %(worker)s
RETURNING jobs.id
"""


def finish_many_now(
    database_url: str, worker: str, ends: list[tuple[uuid.UUID, Finish]]
) -> list[bool]:
    """`finish_now` for several runs of this worker, in one transaction and one round trip:
    the locks of every run's `writes`, one UPDATE that records all the ends, then every
    run's writes. Says, run by run, whether its end was recorded (False: the job was taken
    from this worker meanwhile; its writes did nothing either). The caller orders the runs
    (the writes of each lock its case's row: in one order, two of these never deadlock).

    Any error rolls all of them back: the caller records them one by one then.
    """
    now = utcnow()
    # What the writes' FINISHED_HERE guards read.
    each = [{"job_id": job_id, "worker": worker, "now": now} for job_id, _ in ends]
    rows = [
        {"job_id": job_id, **_ending(result), "resources": result.resources,
         "outputs": result.outputs}
        for job_id, result in ends
    ]  # fmt: skip
    together = {"ends": json_param(rows), "now": now, "worker": worker}
    writes = [result.writes for _, result in ends]

    def run(conn: psycopg.Connection[Any]) -> tuple[set[uuid.UUID], list[Any]]:
        with conn.pipeline():
            for params, write in zip(each, writes, strict=True):
                if write is not None:
                    write.lock(conn, params)
            finished = conn.execute(_FINISH_MANY_SQL, together)
            thens = [
                None if write is None else write.write(conn, params)
                for params, write in zip(each, writes, strict=True)
            ]
            conn.commit()
        return {job_id for (job_id,) in finished.fetchall()}, thens

    recorded, thens = kept(database_url, "finish").run(run)
    for (job_id, _), then in zip(ends, thens, strict=True):
        if job_id in recorded:
            _after_recording(job_id, then)
    return [job_id in recorded for job_id, _ in ends]


def get_job(db: Session, job_id: uuid.UUID) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def cancel(db: Session, job: Job) -> Job:
    """Cancel a job: at once if it has not started, else ask its worker to stop it."""
    if job.state in FINAL:
        raise JobStateError(f"job {job.id} has already {job.state}; nothing to cancel")
    if job.state in (PENDING, QUEUED):
        job.state, job.outcome, job.finished_at = CANCELLED, CANCELLED, utcnow()
        job.message = "cancelled before it started"
    job.cancel_requested = True
    db.flush()
    return job


@dataclass(frozen=True)
class Reconciled:
    sent: int
    requeued: int
    failed: int


def reconcile(
    db: Session,
    send: Sender,
    *,
    pending_after: timedelta = timedelta(seconds=10),
    queued_after: timedelta = timedelta(minutes=5),
    worker_stale_after: timedelta = timedelta(seconds=30),
) -> Reconciled:
    """Repair what crashes leave: unsent jobs, lost messages, jobs of dead workers."""
    now = utcnow()
    live = select(WorkerHeartbeat.hostname).where(
        WorkerHeartbeat.seen_at > now - worker_stale_after
    )
    orphaned = list(
        db.scalars(
            select(Job)
            .where(Job.state == RUNNING, or_(Job.worker.is_(None), Job.worker.not_in(live)))
            .where(Job.started_at < now - worker_stale_after)
            .with_for_update(skip_locked=True)
        )
    )
    requeued = failed = 0
    for job in orphaned:
        if job.attempts >= job.max_attempts or job.cancel_requested:
            job.state, job.finished_at = (CANCELLED if job.cancel_requested else FAILED), now
            job.outcome = job.state
            job.message = (
                "cancelled"
                if job.cancel_requested
                else f"its worker died {job.attempts} time(s); giving up"
            )
            failed += 1
        else:
            job.message = (
                f"worker {job.worker or '?'} stopped during attempt {job.attempts}; retrying"
            )
            job.state, job.queued_at, job.worker = QUEUED, now, None
            requeued += 1
    stale = list(
        db.scalars(
            select(Job)
            .where(
                or_(
                    and_(Job.state == PENDING, Job.created_at < now - pending_after),
                    and_(Job.state == QUEUED, Job.queued_at < now - queued_after),
                ),
                Job.cancel_requested.is_(False),
            )
            .limit(1000)
        )
    )
    db.flush()
    resend = [
        (j.id, j.queue, j.priority) for j in (*stale, *(o for o in orphaned if o.state == QUEUED))
    ]
    for job in stale:
        if job.state == QUEUED:
            job.queued_at = now  # do not resend again before queued_after
    for job_id, queue, priority in resend:
        after_commit(db, _later(send, job_id, queue, priority))
    return Reconciled(len(resend), requeued, failed)


def prune_broker_messages(db: Session, *, older_than: timedelta = timedelta(minutes=10)) -> int:
    """Delete consumed messages of the embedded (SQLAlchemy) broker; it never does itself.

    Jobs do not depend on them: the job rows are the truth and the reconciler re-sends.
    """
    exists = db.execute(text("SELECT to_regclass('kombu_message')")).scalar()
    if exists is None:
        return 0
    # kombu writes naive local timestamps: compare with the server's local time.
    result = db.execute(
        text(
            "DELETE FROM kombu_message WHERE visible = false "
            "AND timestamp < localtimestamp - make_interval(secs => :seconds)"
        ),
        {"seconds": older_than.total_seconds()},
    )
    return int(getattr(result, "rowcount", 0) or 0)
