"""A connection a process keeps for its most frequent short statements (claims, marks).

Through a pooled session a claim costs a check-out with its ping, the lock, the UPDATE and
a COMMIT: four round trips to PostgreSQL. On a kept connection, with the statements and
the COMMIT sent together (psycopg's pipeline mode), it costs one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy import make_url

logger = logging.getLogger(__name__)

T = TypeVar("T")


class KeptConnection:
    """One connection, used by one thread at a time, opened on first use."""

    def __init__(self, database_url: str, purpose: str) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self.conninfo = url.render_as_string(hide_password=False)
        self.purpose = purpose
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """`work(connection)`, which must end its own transaction (commit)."""
        with self._lock:
            reused = self._conn is not None and not self._conn.closed
            try:
                return work(self._connection())
            except psycopg.OperationalError:
                self.close()
                if not reused:
                    raise
                # The kept connection went away while idle (the database restarted, or
                # dropped it): what was sent never reached a live server. Once more, anew.
                logger.info("lost the %s connection; reconnecting", self.purpose, exc_info=True)
                return work(self._connection())
            except BaseException:
                self.close()
                raise

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo)
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


_kept: dict[tuple[str, str], KeptConnection] = {}
_kept_lock = threading.Lock()


def kept(database_url: str, purpose: str) -> KeptConnection:
    """This process's kept connection for `purpose` on that database."""
    with _kept_lock:
        found = _kept.get((database_url, purpose))
        # A forked pool process opens a connection of its own (never uses its parent's).
        if found is None or found.pid != os.getpid():
            found = _kept[(database_url, purpose)] = KeptConnection(database_url, purpose)
        return found
