"""A worker process: consumes the named queues and reports a heartbeat to the database."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from sqlalchemy import delete, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from voxelhub.core.db import engine_for, session_scope, utcnow
from voxelhub.jobs import broker
from voxelhub.jobs.models import WorkerHeartbeat

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0


class Heartbeat:
    """Upserts this worker's row every few seconds until stopped."""

    def __init__(self, database_url: str, queues: list[str]) -> None:
        self.database_url = database_url
        self.queues = queues
        self.hostname = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        now = utcnow()
        row = {
            "hostname": self.hostname,
            "queues": ",".join(self.queues),
            "pid": os.getpid(),
            "started_at": now,
            "seen_at": now,
        }
        statement = insert(WorkerHeartbeat).values(**row)
        statement = statement.on_conflict_do_update(
            index_elements=["hostname"], set_={"seen_at": now, "queues": row["queues"]}
        )
        with session_scope(self.database_url) as db:
            db.execute(statement)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception:
                logger.warning("heartbeat failed; retrying", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        try:
            with session_scope(self.database_url) as db:
                db.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.hostname == self.hostname))
        except Exception:
            logger.warning("could not clear the heartbeat row", exc_info=True)


PERIODIC_SECONDS = 1.0
# Only one process at a time runs the periodic duties (any number of workers may exist).
_PERIODIC_LOCK = 0x766F78656C6A6F62

Periodic = Callable[[Session], None]


class PeriodicDuties:
    """Reconciler and other periodic work, run by whichever worker holds the lock."""

    def __init__(self, database_url: str, duties: list[Periodic]) -> None:
        self.database_url, self.duties = database_url, duties
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="periodic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> bool:
        with session_scope(self.database_url) as db:
            got = db.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _PERIODIC_LOCK})
            if not got.scalar():
                return False
            for duty in self.duties:
                # One failing duty must not undo or stop the others.
                try:
                    with db.begin_nested():
                        duty(db)
                except Exception:
                    logger.warning("periodic duty %s failed", duty.__name__, exc_info=True)
        return True

    def _run(self) -> None:
        while not self._stop.wait(PERIODIC_SECONDS):
            try:
                self.run_once()
            except Exception:
                logger.warning("periodic duties failed; retrying", exc_info=True)


def _forget_inherited_connections(**_: Any) -> None:
    """In a freshly forked pool process: drop (without closing) the parent's connections.

    A connection used by two processes corrupts both sessions (an error such as "can't
    change 'autocommit' now" or "server closed the connection"), and a pool process may
    be forked long after start (a replacement), when the parent holds connections again.
    """
    from kombu.transport.sqlalchemy import Channel

    for url in list(_forked_urls):
        engine_for(url).dispose(close=False)
    for engine, _ in list(Channel._engines.values()):
        engine.dispose(close=False)


_forked_urls: set[str] = set()

# Celery's two INFO lines per task ("received", "succeeded in …"): the job's row says as
# much (states, timestamps, outcome), and writing them costs the worker more CPU than
# the whole of a trivial job's algorithm.
TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def _quiet_task_lines() -> None:
    """Drop Celery's per-task INFO lines unless this process logs at DEBUG."""
    if logging.getLogger("voxelhub").isEnabledFor(logging.DEBUG):
        return
    for name in TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_worker(
    app: Celery,
    database_url: str,
    *,
    queues: list[str],
    concurrency: int,
    on_start: Callable[[str], None] | None = None,
    duties: list[Periodic] | None = None,
) -> None:
    """Run a Celery worker in this process until it is told to stop."""
    heartbeat = Heartbeat(database_url, queues)
    periodic = PeriodicDuties(database_url, duties or [])

    def on_ready(**_: Any) -> None:
        heartbeat.start()
        periodic.start()
        logger.info("worker %s consuming %s", heartbeat.hostname, ",".join(queues))

    def on_shutdown(**_: Any) -> None:
        periodic.stop()
        heartbeat.stop()

    if on_start is not None:
        on_start(heartbeat.hostname)
    broker.prepare(app, database_url, tuple(queues))
    # Pool processes are forked from this one: none may inherit its pooled connections.
    engine_for(database_url).dispose()
    _forked_urls.add(database_url)
    worker_process_init.connect(_forget_inherited_connections, weak=False)

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    _quiet_task_lines()
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork" if concurrency > 1 else "solo",
            "--hostname",
            f"voxelhub@{heartbeat.hostname}",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ]
    )
