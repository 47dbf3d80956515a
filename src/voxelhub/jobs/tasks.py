"""Queue glue: the task that runs a job, and how this process sends job messages."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from celery import Celery
from kombu import Producer
from sqlalchemy import select

from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.jobs import engine
from voxelhub.jobs.celery_app import celery_for, house_task
from voxelhub.jobs.models import Job

logger = logging.getLogger(__name__)

LIMIT_RETRY_SECONDS = 3
TASK_NAME = "voxelhub.run_job"
GROUP_TASK_NAME = "voxelhub.run_jobs"
# The most jobs one message carries. A worker claims a message's jobs together and runs
# them one after the other, so they count against the per-user and per-algorithm limits
# together: small groups keep several workers busy with one user's jobs.
GROUP_SIZE = 4
# A worker runs a group's jobs back to back while they are quick: once this much time has
# gone, the jobs it has not started yet are given back and sent again for any worker.
GROUP_SLICE_S = 0.25
# Ends of a group's runs wait to be recorded together at most this long (a long run next
# in the group does not hold the end of a quick one before it back).
GROUP_RECORD_WAIT_S = 0.1


class JobHandler(Protocol):
    """Runs one claimed job and says how it ended (the algorithms package provides it)."""

    def __call__(self, runtime: Runtime, job: Job, cancelled: threading.Event) -> engine.Finish: ...


@dataclass
class WorkerContext:
    runtime: Runtime
    hostname: str
    handler: JobHandler
    max_jobs_per_user: int = 8
    on_finish: Callable[[Runtime, uuid.UUID], None] | None = None


_context: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    """Called once when a worker process starts."""
    global _context  # noqa: PLW0603 - one worker context per process, set at start
    _context = context


def sender(runtime: Runtime) -> engine.Sender:
    """How this process puts a job on its queue (see `Dispatcher`)."""
    return dispatcher_for(runtime)


def dispatcher_for(runtime: Runtime) -> Dispatcher:
    """This process's dispatcher for the runtime's database and broker."""
    key = (runtime.database_url, celery_for(runtime.settings, runtime.database_url).conf.broker_url)
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(key)
        if dispatcher is None:
            dispatcher = _dispatchers[key] = Dispatcher(runtime)
    return dispatcher


class Dispatcher:
    """Sends job messages from a thread of its own and marks the jobs queued in batches.

    Called after a commit, `send` only hands the job over, so a request that created a job
    answers without waiting for the broker; the thread sends every message waiting, then
    marks all of them queued in one UPDATE. A message this process could not send (or that
    a crash lost before it went out) leaves its job pending: the reconciler sends it.

    Jobs waiting together for the same queue and priority (those of one batch, or created
    at the same moment) go out in groups of up to `group_size`: one message of
    `voxelhub.run_jobs` for the group, a lone job as `voxelhub.run_job`.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.database_url = runtime.database_url
        # Through this runtime's own app: the "current" Celery app may be another broker's.
        self.app = celery_for(runtime.settings, runtime.database_url)
        self.group_size = GROUP_SIZE
        self._waiting: queue.SimpleQueue[list[tuple[uuid.UUID, str, int]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __call__(self, job_id: uuid.UUID, queue_name: str, priority: int) -> None:
        self.send(job_id, queue_name, priority)

    def send(self, job_id: uuid.UUID, queue_name: str, priority: int) -> None:
        self.send_many([(job_id, queue_name, priority)])

    def send_many(self, messages: list[tuple[uuid.UUID, str, int]]) -> None:
        """Hand over the messages of several jobs together (they are grouped together)."""
        self._waiting.put(messages)
        with self._lock:
            # Started lazily, also after a fork (threads do not survive one).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dispatch", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = list(self._waiting.get())
            while len(batch) < DISPATCH_BATCH:
                try:
                    batch += self._waiting.get_nowait()
                except queue.Empty:
                    break
            try:
                self.dispatch(batch)
            except Exception:
                logger.warning("could not dispatch %d job(s) now; the reconciler will",
                               len(batch), exc_info=True)  # fmt: skip

    def dispatch(self, batch: list[tuple[uuid.UUID, str, int]]) -> None:
        grouped = groups(batch, self.group_size)
        try:
            # Redis: every message of the batch in one pipeline, one round trip (kombu's
            # publish batch; a broker without one publishes each message at once).
            with self.app.producer_or_acquire() as producer, producer.batch():
                for ids, queue_name, priority in grouped:
                    send_group(self.app, ids, queue_name, priority, producer=producer)
        except Exception:
            # What did not go out goes one message at a time (a message sent twice is
            # harmless: a job is claimed once).
            logger.warning("could not send %d message(s) together; one by one", len(grouped),
                           exc_info=True)  # fmt: skip
        else:
            engine.mark_queued_now(self.database_url, [i for ids, _, _ in grouped for i in ids])
            return
        sent: list[uuid.UUID] = []
        for ids, queue_name, priority in grouped:
            try:
                send_group(self.app, ids, queue_name, priority)
            except Exception:
                logger.warning("could not send job(s) %s now; the reconciler will",
                               ", ".join(map(str, ids)), exc_info=True)  # fmt: skip
                continue
            sent += ids
        if sent:
            engine.mark_queued_now(self.database_url, sent)


def groups(
    messages: list[tuple[uuid.UUID, str, int]], size: int
) -> list[tuple[list[uuid.UUID], str, int]]:
    """The jobs in groups of at most `size` that share a queue and a priority, in the order
    they came (a group goes where its first job came)."""
    by_route: dict[tuple[str, int], list[uuid.UUID]] = {}
    for job_id, queue_name, priority in messages:
        by_route.setdefault((queue_name, priority), []).append(job_id)
    step = max(size, 1)
    return [
        (ids[first : first + step], queue_name, priority)
        for (queue_name, priority), ids in by_route.items()
        for first in range(0, len(ids), step)
    ]


def send_group(
    app: Celery,
    ids: list[uuid.UUID],
    queue_name: str,
    priority: int,
    *,
    countdown: float = 0,
    producer: Producer | None = None,
) -> None:
    """One message for the jobs: `voxelhub.run_job` for one, `voxelhub.run_jobs` for more."""
    kwargs: dict[str, str | list[str]]
    if len(ids) == 1:
        name, kwargs = TASK_NAME, {"job_id": str(ids[0])}
    else:
        name, kwargs = GROUP_TASK_NAME, {"job_ids": [str(i) for i in ids]}
    app.send_task(name, kwargs=kwargs, queue=queue_name, priority=priority,
                  countdown=countdown or None, producer=producer)  # fmt: skip


DISPATCH_BATCH = 200
_dispatchers: dict[tuple[str, str], Dispatcher] = {}
_dispatchers_lock = threading.Lock()


@house_task(name=TASK_NAME)
def run_job(*, job_id: str) -> None:
    """Claim the job, run it, record how it ended."""
    if _context is None:
        raise RuntimeError("this process is not a voxelhub worker")
    execute(_context, uuid.UUID(job_id))


@house_task(name=GROUP_TASK_NAME)
def run_jobs(*, job_ids: list[str]) -> None:
    """Claim the jobs together, run them one after the other, record their ends together."""
    if _context is None:
        raise RuntimeError("this process is not a voxelhub worker")
    execute_group(_context, [uuid.UUID(job_id) for job_id in job_ids])


def execute_group(context: WorkerContext, job_ids: list[uuid.UUID]) -> None:
    """The jobs of one message, as `execute` runs one job, with fewer round trips.

    All of them that may run now are claimed in one statement (`engine.claim_many`, the
    limits included). Those a limit keeps out are claimed again once this worker's runs
    have ended (its own runs held some of the room); what a limit still keeps out then is
    sent again later, as `execute` does. A worker that dies here leaves the message
    unacknowledged, and the jobs it claimed running on a dead worker: the reconciler
    queues those again, as for one job.
    """
    runtime = context.runtime
    waiting = list(dict.fromkeys(job_ids))
    while waiting:
        claimed = engine.claim_many(
            runtime.database_url,
            waiting,
            context.hostname,
            max_jobs_per_user=context.max_jobs_per_user,
        )
        taken = {job.id for job in claimed}
        still: dict[uuid.UUID, tuple[str, int]] = {}
        if len(taken) < len(waiting):
            with session_scope(runtime.database_url) as db:
                still = engine.waiting_for_limits_many(
                    db, [job_id for job_id in waiting if job_id not in taken]
                )
        if not claimed:
            _send_later(still)
            return
        _run_group(context, claimed)
        waiting = [job_id for job_id in waiting if job_id in still]


def _send_later(waiting: dict[uuid.UUID, tuple[str, int]]) -> None:
    """Send the jobs again in a few seconds, grouped as the dispatcher does."""
    messages = [(job_id, route[0], route[1]) for job_id, route in waiting.items()]
    for ids, queue_name, priority in groups(messages, GROUP_SIZE):
        send_group(run_jobs.app, ids, queue_name, priority, countdown=LIMIT_RETRY_SECONDS)


def _run_group(context: WorkerContext, claimed: list[Job]) -> None:
    """Run claimed jobs back to back; their ends are recorded together (`_Ends`)."""
    runtime = context.runtime
    watch = _watch_for(runtime.database_url)
    cancels = {job.id: watch.add(job.id) for job in claimed}
    ends = _Ends(context)
    started = time.monotonic()
    try:
        for index, job in enumerate(claimed):
            if index and time.monotonic() - started > GROUP_SLICE_S:
                _give_back(context, claimed[index:])
                break
            if cancels[job.id].is_set():
                result = engine.Finish(engine.CANCELLED, "cancelled", "cancelled before it started")
            else:
                with ends.held_at_most(GROUP_RECORD_WAIT_S):
                    result = _run(context, job, cancels[job.id])
            ends.add(job, result)
    finally:
        ends.flush()
        for job in claimed:
            watch.remove(job.id)


def _give_back(context: WorkerContext, jobs: list[Job]) -> None:
    """Jobs claimed but not started go back to their queue, for any worker."""
    released = engine.release(
        context.runtime.database_url, [job.id for job in jobs], context.hostname
    )
    for ids, queue_name, priority in groups(released, GROUP_SIZE):
        try:
            send_group(run_jobs.app, ids, queue_name, priority)
        except Exception:  # queued without a message: the reconciler sends them
            logger.warning("could not send jobs %s again now; the reconciler will",
                           ", ".join(map(str, ids)), exc_info=True)  # fmt: skip


class _Ends:
    """The ends of a group's runs, recorded together: when the group is done, or by this
    process's `_Deadlines` thread when the next run takes longer than the ends may wait."""

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._ends: list[tuple[Job, engine.Finish]] = []

    def add(self, job: Job, result: engine.Finish) -> None:
        with self._lock:
            self._ends.append((job, result))

    @contextlib.contextmanager
    def held_at_most(self, seconds: float) -> Iterator[None]:
        with self._lock:
            waiting = bool(self._ends)
        if waiting:
            _deadlines.arm(self, seconds)
        try:
            yield
        finally:
            if waiting:
                _deadlines.disarm(self)

    def flush(self) -> None:
        with self._lock:
            ends, self._ends = self._ends, []
            if ends:
                record_ends(self.context, ends)


class _Deadlines:
    """One thread per process that flushes a group's waiting ends once their time is up.

    Not a timer thread per run: starting a thread waits until it is scheduled, which on a
    busy machine costs more than a trivial job. The thread is woken only when it sleeps
    without a deadline; otherwise it finds a later deadline when it wakes, and sleeps on.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, _Ends]] = {}
        self._idle = False
        self._thread: threading.Thread | None = None

    def arm(self, ends: _Ends, seconds: float) -> None:
        with self._cond:
            self._armed[id(ends)] = (time.monotonic() + seconds, ends)
            # Started lazily, also in a forked pool process (threads do not survive a fork).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="group-ends", daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()

    def disarm(self, ends: _Ends) -> None:
        with self._cond:
            self._armed.pop(id(ends), None)

    def _due(self) -> list[_Ends]:
        with self._cond:
            while True:
                now = time.monotonic()
                due = [ends for deadline, ends in self._armed.values() if deadline <= now]
                if due:
                    for ends in due:
                        self._armed.pop(id(ends), None)
                    return due
                self._idle = not self._armed
                self._cond.wait(
                    None if self._idle else min(d for d, _ in self._armed.values()) - now
                )
                self._idle = False

    def _run(self) -> None:
        while True:
            for ends in self._due():
                try:
                    ends.flush()
                except Exception:
                    logger.warning("recording the ends of a group failed", exc_info=True)


_deadlines = _Deadlines()


def _run(context: WorkerContext, job: Job, cancelled: threading.Event) -> engine.Finish:
    """The handler's Finish for a claimed job (a failure of the platform included)."""
    try:
        result = context.handler(context.runtime, job, cancelled)
    except Exception as err:
        logger.error("job %s failed in the platform", job.id, exc_info=True)
        result = engine.Finish(engine.FAILED, "error", f"{type(err).__name__}: {err}")
    if result.outcome == "cancelled":
        result = engine.Finish(
            engine.CANCELLED,
            "cancelled",
            result.message or "cancelled",
            log=result.log,
            resources=result.resources,
            cleanup=result.cleanup,
        )
    return result


def record_ends(context: WorkerContext, ends: list[tuple[Job, engine.Finish]]) -> None:
    """Record the ends of several runs of this worker, then clean up after each.

    Those whose outputs need no session (`record`'s one round trip) go in one transaction
    (`engine.finish_many_now`), in the order of their cases; the others, and all of them
    should that transaction fail, one by one through `record`.
    """
    url, worker = context.runtime.database_url, context.hostname
    quick = sorted(
        ((job, result) for job, result in ends if result.store is None or result.writes),
        key=lambda end: str(end[0].case_id),
    )
    done: dict[uuid.UUID, bool] = {}
    try:
        if len(quick) > 1:
            flags = engine.finish_many_now(url, worker, [(job.id, r) for job, r in quick])
            done = {job.id: flag for (job, _), flag in zip(quick, flags, strict=True)}
    except Exception:
        logger.warning("recording %d ends together failed; one by one", len(quick),
                       exc_info=True)  # fmt: skip
    for job, result in ends:
        try:
            finished = done[job.id] if job.id in done else record(url, job.id, worker, result)
        except Exception:
            logger.error("could not record the end of job %s", job.id, exc_info=True)
            finished = False
        finally:
            if result.cleanup is not None:
                result.cleanup()
        if not finished:
            logger.warning("job %s was taken from this worker before it finished", job.id)
        elif context.on_finish is not None and job.inputs.get("webhook"):
            context.on_finish(context.runtime, job.id)


def execute(context: WorkerContext, job_id: uuid.UUID) -> None:
    runtime = context.runtime
    claimed = engine.claim(
        runtime.database_url, job_id, context.hostname, max_jobs_per_user=context.max_jobs_per_user
    )
    waiting = None
    if claimed is None:
        with session_scope(runtime.database_url) as db:
            waiting = engine.waiting_for_limits(db, job_id)
    if waiting is not None:
        queue, priority = waiting
        run_job.apply_async(
            kwargs={"job_id": str(job_id)},
            queue=queue,
            priority=priority,
            countdown=LIMIT_RETRY_SECONDS,
        )
        return
    if claimed is None:
        return
    cancelled = _watch_for(runtime.database_url).add(job_id)
    try:
        result = _run(context, claimed, cancelled)
    finally:
        _watch_for(runtime.database_url).remove(job_id)
    try:
        finished = record(runtime.database_url, job_id, context.hostname, result)
    finally:
        if result.cleanup is not None:
            result.cleanup()
    if not finished:
        logger.warning("job %s was taken from this worker before it finished", job_id)
    elif context.on_finish is not None and claimed.inputs.get("webhook"):
        context.on_finish(runtime, job_id)


class _TakenAway(Exception):
    """The job is no longer this worker's: what its end wrote is rolled back."""


def record(database_url: str, job_id: uuid.UUID, worker: str, result: engine.Finish) -> bool:
    """Record how a run ended, with its outputs (`result.store`), in one transaction.

    False, with nothing written, if the job was taken from this worker meanwhile. Outputs
    the store step rejects, or a store step that fails, leave nothing behind either: the
    failure alone is recorded then.

    A result with nothing to store, or whose outputs come as `writes`, is recorded in one
    round trip (`engine.finish_now`); should that fail, its `store` is used instead.
    """
    if result.store is None or result.writes is not None:
        try:
            return engine.finish_now(database_url, job_id, worker, result)
        except Exception:
            if result.store is None:
                raise
            logger.warning("recording job %s at once failed; through a session instead",
                           job_id, exc_info=True)  # fmt: skip
    try:
        with session_scope(database_url) as db:
            final = result.store(db) if result.store is not None else result
            if not engine.finish(db, job_id, worker, final):
                raise _TakenAway
        return True
    except _TakenAway:
        return False
    except engine.Rejected as rejected:
        failure = rejected.finish
    except Exception as err:
        if result.store is None:
            raise
        logger.error("storing the outputs of job %s failed", job_id, exc_info=True)
        failure = engine.Finish(engine.FAILED, "error", f"{type(err).__name__}: {err}")
    with session_scope(database_url) as db:
        return engine.finish(db, job_id, worker, failure)


CANCEL_POLL_S = 1.0


class CancelWatch:
    """One thread per process that asks, once a second, whether any of its running jobs
    should stop, in one query for all of them (not a thread and a query per job)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._jobs: dict[uuid.UUID, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job_id: uuid.UUID) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._jobs[job_id] = event
            # Started lazily, also in a forked pool process (threads do not survive a fork).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)
                self._thread.start()
        return event

    def remove(self, job_id: uuid.UUID) -> None:
        with self._lock:
            event = self._jobs.pop(job_id, None)
        if event is not None:
            event.set()  # whatever still waits on it (an executor's poll) stops waiting

    def poll(self) -> None:
        with self._lock:
            ids = list(self._jobs)
        if not ids:
            return
        with session_scope(self.database_url) as db:
            stop = list(
                db.scalars(select(Job.id).where(Job.id.in_(ids), Job.cancel_requested.is_(True)))
            )
        with self._lock:
            for job_id in stop:
                if job_id in self._jobs:
                    self._jobs[job_id].set()

    def _run(self) -> None:
        while True:
            time.sleep(CANCEL_POLL_S)
            try:
                self.poll()
            except Exception:
                logger.debug("cancel watch failed once", exc_info=True)


_watches: dict[str, CancelWatch] = {}


def _watch_for(database_url: str) -> CancelWatch:
    watch = _watches.get(database_url)
    if watch is None:
        watch = _watches.setdefault(database_url, CancelWatch(database_url))
    return watch
