"""Queue glue: the task that runs a job, and how this process sends job messages."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.jobs import engine
from voxelhub.jobs.celery_app import celery_for, house_task
from voxelhub.jobs.models import Job

logger = logging.getLogger(__name__)

LIMIT_RETRY_SECONDS = 3
TASK_NAME = "voxelhub.run_job"


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
    key = (runtime.database_url, celery_for(runtime.settings, runtime.database_url).conf.broker_url)
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(key)
        if dispatcher is None:
            dispatcher = _dispatchers[key] = Dispatcher(runtime)
    return dispatcher.send


class Dispatcher:
    """Sends job messages from a thread of its own and marks the jobs queued in batches.

    Called after a commit, `send` only hands the job over, so a request that created a job
    answers without waiting for the broker; the thread sends every message waiting, then
    marks all of them queued in one UPDATE. A message this process could not send (or that
    a crash lost before it went out) leaves its job pending: the reconciler sends it.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.database_url = runtime.database_url
        # Through this runtime's own app: the "current" Celery app may be another broker's.
        self.app = celery_for(runtime.settings, runtime.database_url)
        self._waiting: queue.SimpleQueue[tuple[uuid.UUID, str, int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def send(self, job_id: uuid.UUID, queue_name: str, priority: int) -> None:
        self._waiting.put((job_id, queue_name, priority))
        with self._lock:
            # Started lazily, also after a fork (threads do not survive one).
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dispatch", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while len(batch) < DISPATCH_BATCH:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                self.dispatch(batch)
            except Exception:
                logger.warning("could not dispatch %d job(s) now; the reconciler will",
                               len(batch), exc_info=True)  # fmt: skip

    def dispatch(self, batch: list[tuple[uuid.UUID, str, int]]) -> None:
        sent = []
        for job_id, queue_name, priority in batch:
            try:
                self.app.send_task(
                    TASK_NAME, kwargs={"job_id": str(job_id)}, queue=queue_name, priority=priority
                )
            except Exception:
                logger.warning("could not send job %s now; the reconciler will", job_id,
                               exc_info=True)  # fmt: skip
                continue
            sent.append(job_id)
        if sent:
            engine.mark_queued_now(self.database_url, sent)


DISPATCH_BATCH = 200
_dispatchers: dict[tuple[str, str], Dispatcher] = {}
_dispatchers_lock = threading.Lock()


@house_task(name=TASK_NAME)
def run_job(*, job_id: str) -> None:
    """Claim the job, run it, record how it ended."""
    if _context is None:
        raise RuntimeError("this process is not a voxelhub worker")
    execute(_context, uuid.UUID(job_id))


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
        result = context.handler(runtime, claimed, cancelled)
    except Exception as err:
        logger.error("job %s failed in the platform", job_id, exc_info=True)
        result = engine.Finish(engine.FAILED, "error", f"{type(err).__name__}: {err}")
    finally:
        _watch_for(runtime.database_url).remove(job_id)
    if result.outcome == "cancelled":
        result = engine.Finish(
            engine.CANCELLED,
            "cancelled",
            result.message or "cancelled",
            log=result.log,
            resources=result.resources,
            cleanup=result.cleanup,
        )
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
