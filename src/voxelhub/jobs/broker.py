"""The embedded broker: kombu's SQLAlchemy transport on the platform's PostgreSQL.

kombu creates its tables and queue rows lazily, in every process that first touches them.
Several workers starting at once on a new database race to do it (CREATE SEQUENCE … already
exists, a duplicate key in kombu_queue_name_key) and the loser exits. `prepare` creates them
once, under a PostgreSQL advisory lock, before any worker consumes.

The stock transport sleeps a whole second whenever every queue is empty, which is most of a
short job's wait from creation to start. `Transport` polls more often; the interval is a
class attribute because the SQLAlchemy transport hands every transport option to
`create_engine()`, which rejects `polling_interval`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from queue import Empty
from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SqlaChannel
from kombu.transport.sqlalchemy import Transport as SqlaTransport
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from sqlalchemy import insert, select, text, update

from voxelhub.core.db import engine_for

logger = logging.getLogger(__name__)

# Seconds between polls of an idle embedded queue (one SELECT … FOR UPDATE per queue).
POLLING_INTERVAL_S = 0.1
SCHEME = "vxhsqla"
_PREPARE_LOCK = 0x766F78656C62726B


class Channel(SqlaChannel):
    """kombu's SQLAlchemy channel with one statement per message each way.

    kombu looks its queue row up again for every message sent or taken, and takes a message
    with `SELECT … FOR UPDATE` without SKIP LOCKED: a second worker polling at the same
    moment waits for the first one's row, then finds it taken, reports the queue empty and
    sleeps a whole polling interval although more messages wait. Here the queue's id is
    looked up once per channel, and a message is taken by one `UPDATE … WHERE id = (SELECT
    … FOR UPDATE SKIP LOCKED) RETURNING payload`. The rows are the same as kombu's (a taken
    message stays, invisible, stamped with the time it was taken, until pruned), so both
    implementations can share one database.
    """

    def _queue_id(self, queue: str) -> int:
        ids: dict[str, int] = self.__dict__.setdefault("_vxh_queue_ids", {})
        found = ids.get(queue)
        if found is None:
            found = ids[queue] = int(self._get_or_create(queue).id)  # type: ignore[attr-defined]
        return found

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        table = self.message_cls.__table__
        statement = insert(table).values(
            payload=dumps(payload), queue_id=self._queue_id(queue), visible=True, version=1
        )
        try:
            self.session.execute(statement)
            self.session.commit()
        except Exception:
            self.session.rollback()
            raise

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        table = self.message_cls.__table__
        # Messages waiting to be taken were never updated, so their timestamp is NULL:
        # kombu's order (timestamp, id) is the order of ids among them.
        oldest = (
            select(table.c.id)
            .where(table.c.queue_id == self._queue_id(queue), table.c.visible.is_(True))
            .order_by(table.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(table)
            .where(table.c.id == oldest)
            .values(visible=False, timestamp=datetime.now(), version=table.c.version + 1)
            .returning(table.c.payload)
        )
        try:
            payload = self.session.execute(statement).scalar()
            self.session.commit()
        except Exception:
            self.session.rollback()
            raise
        if payload is None:
            raise Empty()
        return loads(bytes_to_str(payload))


class Transport(SqlaTransport):
    """kombu's SQLAlchemy transport, polling an idle queue every 100 ms instead of 1 s."""

    Channel = Channel
    polling_interval = POLLING_INTERVAL_S


def register() -> None:
    """Make `vxhsqla+postgresql://…` broker URLs resolve to this transport."""
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")


def is_embedded(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith(f"{SCHEME}+")


def prepare(app: Celery, database_url: str, queues: tuple[str, ...]) -> None:
    """Create the embedded broker's tables and queue rows once, before workers start.

    Safe to call from any number of processes at once: the first takes the lock and
    creates, the others wait for it and then find everything there. A no-op on Redis,
    RabbitMQ and SQS, which need no preparation.
    """
    if not is_embedded(app):
        return
    with engine_for(database_url).connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PREPARE_LOCK})
        try:
            with app.connection_for_write() as connection:
                channel = connection.default_channel
                for queue in queues:
                    channel.queue_declare(queue=queue)  # type: ignore[attr-defined]
            # What a poll looks for: the oldest visible message of one queue.
            lock.execute(
                text(
                    "CREATE INDEX IF NOT EXISTS ix_kombu_message_waiting "
                    "ON kombu_message (queue_id, id) WHERE visible"
                )
            )
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PREPARE_LOCK})
            lock.commit()
    logger.debug("embedded broker ready (queues %s)", ", ".join(queues))
