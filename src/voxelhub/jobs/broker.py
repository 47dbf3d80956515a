"""The embedded broker: kombu's SQLAlchemy transport on the platform's PostgreSQL.

kombu creates its tables and queue rows lazily, in every process that first touches them.
Several workers starting at once on a new database race to do it (CREATE SEQUENCE … already
exists, a duplicate key in kombu_queue_name_key) and the loser exits. `prepare` creates them
once, under a PostgreSQL advisory lock, before any worker consumes.

The stock transport sleeps a whole second whenever every queue is empty, which is most of a
short job's wait from creation to start. `Transport` is woken by a NOTIFY instead (see
there). Its fallback interval is a class attribute because the SQLAlchemy transport hands
every transport option to `create_engine()`, which rejects `polling_interval`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from queue import Empty
from time import monotonic
from typing import Any

import psycopg
from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SqlaChannel
from kombu.transport.sqlalchemy import Transport as SqlaTransport
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from sqlalchemy import Connection, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from voxelhub.jobs import broker_redis

logger = logging.getLogger(__name__)

# The longest a consumer waits before it polls its queues again when no NOTIFY came.
POLLING_INTERVAL_S = 1.0
NOTIFY_CHANNEL = "voxelhub_broker"
MESSAGE_SEQUENCE = "message_id_sequence"  # kombu's, fixed in its models
SCHEME = "vxhsqla"
_PREPARE_LOCK = 0x766F78656C62726B


class Channel(SqlaChannel):
    """kombu's SQLAlchemy channel with one statement, and one round trip, per message each way.

    kombu looks its queue row up again for every message sent or taken, and takes a message
    with `SELECT … FOR UPDATE` without SKIP LOCKED: a second worker polling at the same
    moment waits for the first one's row, then finds it taken, reports the queue empty and
    sleeps a whole polling interval although more messages wait. Here the queue's id is
    looked up once per channel, and a message is taken by one `UPDATE … WHERE id = (SELECT
    … FOR UPDATE SKIP LOCKED) RETURNING payload`. The rows are the same as kombu's (a taken
    message stays, invisible, stamped with the time it was taken, until pruned), so both
    implementations can share one database. Both run on a connection of the channel's own in
    autocommit, so neither needs a COMMIT of its own.
    """

    def _queue_id(self, queue: str) -> int:
        ids: dict[str, int] = self.__dict__.setdefault("_vxh_queue_ids", {})
        found = ids.get(queue)
        if found is None:
            try:
                found = ids[queue] = int(self._get_or_create(queue).id)  # type: ignore[attr-defined]
            finally:
                self._end_session_transaction()
        return found

    def _end_session_transaction(self) -> None:
        """End the transaction kombu's ORM session left open. Its lookups never commit, and
        this channel sends and takes on a connection of its own, so without this the
        session would sit "idle in transaction" for the worker's lifetime, holding back
        VACUUM (and autovacuum) in the whole database."""
        session = getattr(self, "_session", None)
        if session is not None:
            session.commit()

    def _size(self, queue: str) -> int:
        try:
            return int(super()._size(queue))
        finally:
            self._end_session_transaction()

    def _statements(self) -> tuple[Any, Any, Any]:
        """The send, the take from one queue and the take from any of several queues, built
        once per channel (only their parameters change)."""
        built = self.__dict__.get("_vxh_statements")
        if built is None:
            table = self.message_tablename
            # One round trip: the row, and the NOTIFY that is delivered at its commit.
            put = text(
                f"WITH sent AS (INSERT INTO {table} (id, visible, payload, version, queue_id) "
                f"VALUES (nextval('{MESSAGE_SEQUENCE}'), true, :payload, 1, :queue_id) "
                f"RETURNING id) SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM sent"
            )
            # Messages waiting to be taken were never updated, so their timestamp is NULL:
            # kombu's order (timestamp, id) is the order of ids among them.
            take = text(
                f"UPDATE {table} SET visible = false, timestamp = :now, version = version + 1 "
                f"WHERE id = (SELECT id FROM {table} WHERE queue_id = :queue_id AND visible "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING payload"
            )
            take_any = text(
                f"UPDATE {table} SET visible = false, timestamp = :now, version = version + 1 "
                f"WHERE id = (SELECT id FROM {table} WHERE queue_id = ANY(:queue_ids) "
                "AND visible ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "RETURNING payload, queue_id"
            )
            built = self.__dict__["_vxh_statements"] = (put, take, take_any)
        return built

    def _autocommit(self) -> Connection:
        """This channel's own connection, in autocommit: a send or a take is one statement,
        atomic by itself, so it needs no transaction around it (no COMMIT round trip)."""
        conn: Connection | None = self.__dict__.get("_vxh_connection")
        if conn is None or conn.closed or conn.invalidated:
            engine, _ = self._open()
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            self.__dict__["_vxh_connection"] = conn
        return conn

    def _one_statement(self, statement: Any, params: dict[str, Any]) -> Any:
        """The first row the statement returns, or None."""
        conn = self._autocommit()
        try:
            value = conn.execute(statement, params).first()
            conn.commit()  # ends SQLAlchemy's own bookkeeping; nothing is sent in autocommit
        except Exception:
            # A connection error (a restarted database) reaches kombu, which reconnects;
            # this connection is not used again.
            self.__dict__.pop("_vxh_connection", None)
            with contextlib.suppress(Exception):
                conn.invalidate()
            raise
        return value

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        put, _, _ = self._statements()
        self._one_statement(put, {"payload": dumps(payload), "queue_id": self._queue_id(queue)})

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        _, take, _ = self._statements()
        found = self._one_statement(
            take, {"now": datetime.now(), "queue_id": self._queue_id(queue)}
        )
        if found is None:
            raise Empty()
        return loads(bytes_to_str(found.payload))

    def _get_many(self, queues: Any, timeout: float | None = None) -> None:
        """Take the oldest message of any of the consumed queues, in one statement.

        kombu asks its queues in turn, one statement each: a worker consuming `cpu,gpu`
        while only `cpu` has messages would also ask the empty `gpu` once per message.
        Here the queues share one order, that of the messages' ids (first sent, first taken).
        """
        names = {self._queue_id(name): name for name in queues}
        if not names:
            raise Empty()
        _, _, take_any = self._statements()
        found = self._one_statement(take_any, {"now": datetime.now(), "queue_ids": list(names)})
        if found is None:
            raise Empty()
        self.connection._deliver(loads(bytes_to_str(found.payload)), names[found.queue_id])

    def close(self) -> None:
        conn: Connection | None = self.__dict__.pop("_vxh_connection", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        super().close()


class Transport(SqlaTransport):
    """kombu's SQLAlchemy transport, woken by PostgreSQL's NOTIFY when a message arrives.

    Where kombu sleeps a fixed interval after finding every queue empty, this transport
    waits on a connection that LISTENs for the notification each send raises, so a new
    message is taken within milliseconds, and an idle worker costs no more queries than
    kombu's. The interval stays as a bound (a lost listener connection, a message sent by
    a process on kombu's stock transport).
    """

    Channel = Channel
    polling_interval = POLLING_INTERVAL_S

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._listener: psycopg.Connection[Any] | None = None

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]
        started = monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[union-attr]
            except Empty:
                if timeout is not None and monotonic() - started >= timeout:
                    raise TimeoutError from None  # what kombu raises (socket.timeout)
                self._wait(interval)
            else:
                return

    def _wait(self, seconds: float) -> None:
        """Until a message is sent (a NOTIFY) or `seconds` pass."""
        listener = self._listen()
        if listener is None:
            time.sleep(seconds)
            return
        try:
            for _ in listener.notifies(timeout=seconds, stop_after=1):
                pass
            for _ in listener.notifies(timeout=0.0):  # the backlog: one poll serves all
                pass
        except psycopg.Error:
            logger.warning("lost the broker's wake-up connection; polling", exc_info=True)
            self._close_listener()
            time.sleep(seconds)

    def _listen(self) -> psycopg.Connection[Any] | None:
        if self._listener is not None and not self._listener.closed:
            return self._listener
        url = make_url(str(self.client.hostname)).set(drivername="postgresql")  # type: ignore[union-attr]
        try:
            listener = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error:
            logger.warning("cannot LISTEN for new messages; polling", exc_info=True)
            return None
        self._listener = listener
        return listener

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(psycopg.Error):
                self._listener.close()
        self._listener = None

    def close_connection(self, connection: Any) -> None:
        self._close_listener()
        super().close_connection(connection)


def register() -> None:
    """Make `vxhsqla+postgresql://…` broker URLs resolve to this transport, and Redis ones
    to `broker_redis`'s."""
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
    for scheme in broker_redis.SCHEMES:
        TRANSPORT_ALIASES[scheme] = f"{broker_redis.__name__}:Transport"


def is_embedded(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith(f"{SCHEME}+")


def prepare(app: Celery, database_url: str, queues: tuple[str, ...]) -> None:
    """Create the embedded broker's tables and queue rows once, before workers start.

    Safe to call from any number of processes at once: the first takes the lock and
    creates, the others wait for it and then find everything there. A no-op on Redis,
    RabbitMQ and SQS, which need no preparation. It leaves no open connection behind: a
    worker forks its pool after this, and a connection shared across a fork is corrupted
    by whichever process uses it second.
    """
    if not is_embedded(app):
        return
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PREPARE_LOCK})
            try:
                _declare(app, queues)
                # What a poll looks for: the oldest visible message of one queue, and
                # the oldest of several (a worker's queues, in one statement).
                lock.execute(
                    text(
                        "CREATE INDEX IF NOT EXISTS ix_kombu_message_waiting "
                        "ON kombu_message (queue_id, id) WHERE visible"
                    )
                )
                lock.execute(
                    text(
                        "CREATE INDEX IF NOT EXISTS ix_kombu_message_waiting_id "
                        "ON kombu_message (id) WHERE visible"
                    )
                )
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PREPARE_LOCK})
                lock.commit()
    finally:
        engine.dispose()
    logger.debug("embedded broker ready (queues %s)", ", ".join(queues))


def _declare(app: Celery, queues: tuple[str, ...]) -> None:
    with app.connection_for_write() as connection:
        try:
            channel = connection.default_channel
            for queue in queues:
                channel.queue_declare(queue=queue)  # type: ignore[attr-defined]
        finally:
            # kombu keeps one engine per database for the process: close this one's.
            cached = Channel._engines.pop(str(connection.hostname), None)
            if cached is not None:
                cached[0].dispose()
