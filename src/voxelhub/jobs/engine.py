"""The job state machine: create, dispatch after commit, claim, finish, cancel, reconcile.

pending --dispatch--> queued --claim--> running --finish--> succeeded | failed
   \\____________________\\__cancel__________\\--> cancelled
A running job whose worker stopped beating goes back to queued (one more attempt) or, out
of attempts, fails. Every transition is one guarded UPDATE, so two processes never both win.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Table, and_, or_, select, text, update
from sqlalchemy.orm import Session

from voxelhub.core.db import after_commit, utcnow
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

# How a message is sent: (job id, queue, priority) -> None. Set per process.
Sender = Callable[[uuid.UUID, str, int], None]


def create_job(db: Session, job: Job, send: Sender) -> Job:
    """Add a job in the caller's transaction; its message goes out after the commit."""
    job.state = PENDING
    db.add(job)
    db.flush()
    job_id, queue, priority = job.id, job.queue, job.priority
    after_commit(db, lambda: _send_quietly(send, job_id, queue, priority))
    return job


def create_jobs(db: Session, jobs: list[Job], send: Sender) -> list[Job]:
    """`create_job` for many jobs: one INSERT, their messages handed over together."""
    for job in jobs:
        job.state = PENDING
    db.add_all(jobs)
    db.flush()
    messages = [(job.id, job.queue, job.priority) for job in jobs]

    def send_all() -> None:
        for message in messages:
            _send_quietly(send, *message)

    after_commit(db, send_all)
    return jobs


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


_COLUMNS = tuple((c.name, c.key) for c in _JOBS.c)
# The claim: a guarded UPDATE … RETURNING that counts, in the same statement, the running
# jobs of the job's user and of its algorithm (psycopg's own parameters: it runs there).
_CLAIM_SQL = f"""
UPDATE jobs SET state = '{RUNNING}', attempts = attempts + 1,
    started_at = %(now)s, worker = %(worker)s
WHERE id = %(job_id)s AND state IN ('{PENDING}', '{QUEUED}') AND NOT cancel_requested
    AND (SELECT count(*) FROM jobs AS running WHERE running.state = '{RUNNING}'
         AND running.created_by IS NOT DISTINCT FROM jobs.created_by) < %(max_jobs_per_user)s
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
    params = {
        "job_id": job_id,
        "max_jobs_per_user": max_jobs_per_user,
        "now": utcnow(),
        "worker": worker,
    }
    row = kept(database_url, "claims").run(lambda conn: _claim_on(conn, params))
    if row is None:
        return None
    return Job(**{key: value for (_, key), value in zip(_COLUMNS, row, strict=True)})


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


# Statements that store a run's outputs with its end on a kept connection (see
# `finish_now`): called inside the transaction, in pipeline mode, with the finish's
# parameters and a function that sends the finish UPDATE; sends its locks, then that,
# then its writes (each guarded by FINISHED_HERE), and returns what to do after the commit.
Writes = Callable[[psycopg.Connection[Any], dict[str, Any], Callable[[], None]], Callable[[], None]]


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


def finish_now(database_url: str, job_id: uuid.UUID, worker: str, result: Finish) -> bool:
    """`finish` with the result's `writes`, committed, in one round trip on this process's
    kept connection (see `kept`); False, with nothing written, if the job was taken from
    this worker meanwhile (or deleted)."""
    params = {
        **_ending(result),
        "job_id": job_id,
        "worker": worker,
        "now": utcnow(),
        "resources": _json_or_none(result.resources),
        "outputs": _json_or_none(result.outputs),
    }

    def run(conn: psycopg.Connection[Any]) -> tuple[bool, Callable[[], None] | None]:
        sent: list[psycopg.Cursor[Any]] = []

        def send_finish() -> None:
            sent.append(conn.execute(_FINISH_SQL, params))

        with conn.pipeline():
            then = None
            if result.writes is None:
                send_finish()
            else:
                then = result.writes(conn, params, send_finish)
            conn.commit()
        return sent[0].fetchone() is not None, then

    done, then = kept(database_url, "finish").run(run)
    if done and then is not None:
        try:
            then()
        except Exception:  # the end stands; what is left is an orphan for the sweep
            logger.warning("after recording job %s", job_id, exc_info=True)
    return done


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
