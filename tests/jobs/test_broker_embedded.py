"""The embedded broker (kombu's SQLAlchemy transport, as voxelhub runs it) on a real database."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from queue import Empty
from typing import Any

import pytest
from sqlalchemy import text

from voxelhub.core.db import session_scope
from voxelhub.jobs import broker
from voxelhub.jobs.celery_app import QUEUES, _make

PREPARE = (
    "import sys\n"
    "from voxelhub.jobs import broker\n"
    "from voxelhub.jobs.celery_app import QUEUES, _make\n"
    "broker.prepare(_make(sys.argv[1]), sys.argv[2], QUEUES)\n"
)


def _broker_url(database_url: str) -> str:
    return f"{broker.SCHEME}+{database_url}"


@pytest.fixture(autouse=True)
def kombu_engines_closed(database_url: str) -> Iterator[None]:
    """kombu keeps an engine per database for the process: close ours before it is dropped."""
    yield
    from kombu.transport.sqlalchemy import Channel

    cached = Channel._engines.pop(database_url, None)
    if cached is not None:
        cached[0].dispose()


def test_prepare_from_many_processes_at_once_on_a_new_database(database_url: str) -> None:
    """What several workers of a fresh home do when they start together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE, _broker_url(database_url), database_url],
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)
    with session_scope(database_url) as db:
        names = sorted(db.scalars(text("SELECT name FROM kombu_queue")))
        index = db.scalar(text("SELECT to_regclass('ix_kombu_message_waiting')"))
    assert names == sorted(QUEUES)
    assert index is not None


@pytest.fixture
def channel(database_url: str) -> Any:
    app = _make(_broker_url(database_url))
    broker.prepare(app, database_url, QUEUES)
    with app.connection_for_write() as connection:
        assert connection.transport.polling_interval == broker.POLLING_INTERVAL_S
        yield connection.default_channel


def test_messages_come_out_in_order_and_once(channel: Any, database_url: str) -> None:
    for n in range(3):
        channel._put("cpu", {"n": n})
    channel._put("gpu", {"n": 99})
    assert [channel._get("cpu")["n"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Empty):
        channel._get("cpu")
    assert channel._get("gpu") == {"n": 99}
    with session_scope(database_url) as db:
        rows = db.execute(text("SELECT visible, timestamp IS NOT NULL FROM kombu_message"))
        # Taken messages stay, invisible and stamped, until the periodic prune.
        assert sorted(tuple(r) for r in rows) == [(False, True)] * 4


def test_two_consumers_never_take_one_message_twice(database_url: str) -> None:
    apps = [_make(_broker_url(database_url)) for _ in range(2)]
    broker.prepare(apps[0], database_url, QUEUES)
    with apps[0].connection_for_write() as producer:
        for n in range(60):
            producer.default_channel._put("cpu", {"n": n})
    taken: list[list[int]] = [[], []]

    def consume(index: int) -> None:
        with apps[index].connection_for_write() as connection:
            while True:
                try:
                    taken[index].append(connection.default_channel._get("cpu")["n"])
                except Empty:
                    return

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(taken[0] + taken[1]) == list(range(60))


def test_a_sent_message_wakes_a_waiting_consumer(database_url: str) -> None:
    """Consumers wait on LISTEN, not a fixed sleep: a send ends the wait at once."""
    app = _make(_broker_url(database_url))
    broker.prepare(app, database_url, QUEUES)
    with app.connection_for_write() as consumer, app.connection_for_write() as producer:
        transport = consumer.transport
        assert transport._listen() is not None
        woke = threading.Event()

        def wait() -> None:
            transport._wait(120.0)  # without a NOTIFY this lasts two minutes
            woke.set()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        producer.default_channel._put("cpu", {"n": 1})
        waiter.join(timeout=60)
        assert woke.is_set(), "sending a message did not wake the waiting consumer"
        assert consumer.default_channel._get("cpu") == {"n": 1}
        transport._close_listener()


def test_a_channel_leaves_no_transaction_open(channel: Any, database_url: str) -> None:
    """An idle worker must not hold a transaction: one left "idle in transaction" stops
    VACUUM from cleaning any table of the database for as long as the worker runs."""
    channel._put("cpu", {"n": 1})
    assert channel._get("cpu") == {"n": 1}
    with pytest.raises(Empty):
        channel._get("gpu")
    channel._size("cpu")
    with session_scope(database_url) as db:
        open_transactions = db.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
        )
    assert open_transactions == 0
