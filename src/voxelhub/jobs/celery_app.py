"""The Celery application and the house task decorator.

Embedded default: the broker is kombu's SQLAlchemy transport on the platform's own
PostgreSQL (no extra server), polling faster than kombu's default (see `broker`).
Scale-out: `VOXELHUB_BROKER_URL` (Redis, RabbitMQ, SQS).
The broker only carries job ids; job state lives in PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery import Celery, shared_task
from celery.app.task import Task

from voxelhub.core.settings import Settings
from voxelhub.jobs import broker
from voxelhub.jobs.errors import RetryableError

DEFAULT_QUEUES = ("cpu",)
QUEUES = ("cpu", "gpu", "realtime")


def broker_url_for(settings: Settings, database_url: str) -> str:
    if settings.broker_url:
        return settings.broker_url
    return f"{broker.SCHEME}+{database_url}"


def house_task(
    *, name: str, retry_on: tuple[type[BaseException], ...] = ()
) -> Callable[[Callable[..., None]], Task[Any, None]]:
    """The one reliability policy of every task.

    Late acknowledgement and re-queue when the worker dies (a message is never lost with
    its worker), retries only on the listed errors, keyword-only arguments (ids).
    """

    def decorate(fn: Callable[..., None]) -> Task[Any, None]:
        task: Task[Any, None] = shared_task(
            name=name,
            acks_late=True,
            reject_on_worker_lost=True,
            autoretry_for=(RetryableError, *retry_on),
            retry_backoff=True,
            retry_backoff_max=60,
            max_retries=5,
            ignore_result=True,
        )(fn)
        return task

    return decorate


def make_celery(settings: Settings, database_url: str) -> Celery:
    return _make(broker_url_for(settings, database_url))


def _make(broker_url: str) -> Celery:
    broker.register()
    app = Celery("voxelhub", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUES[0],
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        task_ignore_result=True,
        enable_utc=True,
        # Redis/SQS: an unacknowledged message comes back after this (a dead worker's job).
        broker_transport_options={"visibility_timeout": 3600}
        if broker_url.startswith(("redis", "rediss", "sqs"))
        else {},
    )
    # No broker_transport_options for the SQLAlchemy transport: it passes them all to
    # create_engine(), which rejects the ones it does not know.
    app.set_default()
    return app


def celery_for(settings: Settings, database_url: str) -> Celery:
    """The process's Celery app for sending (one per broker)."""
    return _cached(broker_url_for(settings, database_url))


@functools.cache
def _cached(broker_url: str) -> Celery:
    from voxelhub.jobs import tasks  # noqa: F401 - registers the tasks on the app

    return _make(broker_url)
