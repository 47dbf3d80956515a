"""kombu's Redis transport, with one client per channel instead of one per command.

kombu builds a new `redis.Redis` object for every message it sends, and for every message
a worker takes and acknowledges (its bookkeeping of unacknowledged messages), on the same
connection pool each time. Building one fills a table of response callbacks, which costs
more CPU than sending the command. A client only checks connections out of its pool, so one
per channel is as safe for threads; a new one is made when the pool is (after a fork or a
lost connection).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _vxh_client: Any = None
    _vxh_pool: Any = None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        if self._vxh_client is None or self._vxh_pool is not pool:
            self._vxh_client = self._create_client()  # type: ignore[attr-defined]
            self._vxh_pool = pool
        yield self._vxh_client


class Transport(kombu_redis.Transport):
    Channel = Channel


SCHEMES = ("redis", "rediss")
