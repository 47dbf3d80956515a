"""A short-lived cache of who an API token belongs to, so a busy client costs no query.

Revocation, expiry and deactivation still take effect: at once for changes made through
this process (any ORM change of a token or user clears the cache), and within `TTL_S`
seconds for changes made elsewhere (another web process, the CLI, SQL by hand). A cached
answer never outlives the token's own expiry.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session

from voxelhub.auth.models import ApiToken, User
from voxelhub.core.db import utcnow

TTL_S = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token belongs to: what a request's principal needs."""

    user_id: uuid.UUID
    username: str
    is_admin: bool


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, TokenIdentity]] = {}
        self._lock = threading.Lock()

    def get(self, database: str, token_hash: str) -> TokenIdentity | None:
        with self._lock:
            found = self._entries.get((database, token_hash))
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]

    def put(
        self,
        database: str,
        token_hash: str,
        identity: TokenIdentity,
        *,
        expires_at: datetime | None,
    ) -> None:
        ttl = TTL_S
        if expires_at is not None:
            ttl = min(ttl, (expires_at - utcnow()).total_seconds())
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[(database, token_hash)] = (time.monotonic() + ttl, identity)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = TokenCache()


def database_of(db: Session) -> str:
    bind = db.get_bind()
    return str((bind if isinstance(bind, Engine) else bind.engine).url)


def _clear(*_: Any) -> None:
    CACHE.clear()


def _on_statement(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.class_ in (User, ApiToken):
        CACHE.clear()


for _attribute in (
    ApiToken.revoked_at,
    ApiToken.expires_at,
    ApiToken.user_id,
    User.is_active,
    User.is_admin,
    User.username,
):
    event.listen(_attribute, "set", _clear)
for _model in (User, ApiToken):
    event.listen(_model, "after_delete", _clear)
event.listen(Session, "do_orm_execute", _on_statement)
