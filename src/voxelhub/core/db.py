"""Database engine, sessions and the declarative base shared by every capability.

One transaction per request: `session_scope()` commits on success and rolls back on error;
services only flush.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import DateTime, MetaData, Table, create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with the house constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class UUIDPk:
    """Mixin: a random UUID primary key (ids are never guessable or sequential)."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def make_engine(url: str) -> Engine:
    """An engine for `url` (psycopg 3), with pre-ping so a restarted database is survived."""
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@functools.cache
def engine_for(url: str) -> Engine:
    return make_engine(url)


@functools.cache
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the session's transaction has committed (e.g. delete objects)."""
    session.info.setdefault("after_commit", []).append(callback)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session in one transaction: committed when the block succeeds, else rolled back.

    Callbacks registered with `after_commit` run after a successful commit; a failing
    callback is logged, never raised, since the transaction already stands.
    """
    session = _sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        callbacks = session.info.pop("after_commit", [])
        session.close()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            logger.warning("after-commit callback %r failed", callback, exc_info=True)


@functools.cache
def insert_from_json(table: Table, columns: tuple[str, ...]) -> str:
    """An INSERT of many rows of `table` from one JSON parameter, `rows` (see `json_rows`).

    One short statement for any number of rows: the driver parses it once and the server
    prepares it, where a multi-row VALUES statement (the ORM's) is new text of thousands of
    characters for each batch, parsed and planned anew every time. Built at first use, not
    at import: a foreign key's column has its type only once the table it refers to is
    defined.
    """
    dialect = make_url("postgresql+psycopg://").get_dialect()()
    names = ", ".join(f'"{name}"' for name in columns)
    typed = ", ".join(f'"{name}" {table.c[name].type.compile(dialect=dialect)}' for name in columns)
    return (
        f"INSERT INTO {table.name} ({names}) "
        f"SELECT {names} FROM jsonb_to_recordset(%(rows)s::jsonb) AS given({typed})"
    )


def _json_default(value: object) -> str:
    """UUIDs and timestamps as PostgreSQL reads them back from JSON text."""
    if isinstance(value, uuid.UUID | datetime):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not sent as JSON")


_dumps = functools.partial(json.dumps, default=_json_default)


def json_param(value: Any) -> Jsonb:
    """`value` as a JSONB parameter, its UUIDs and timestamps as strings: rows for a
    statement to read with `jsonb_to_recordset`, sent as one JSON document dumped in one C
    call, where the driver builds and escapes array parameters element by element in
    Python."""
    return Jsonb(value, dumps=_dumps)


def json_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Jsonb:
    """The `rows` parameter of `insert_from_json(table, columns)`."""
    return json_param([dict(zip(columns, row, strict=True)) for row in rows])


def ping(url: str) -> None:
    """Raise when the database cannot run a query."""
    with engine_for(url).connect() as conn:
        conn.execute(text("SELECT 1"))
