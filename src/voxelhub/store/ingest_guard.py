"""Which archives have a store request in flight, for triggers to wait on.

A series sent in several STOW-RS requests looks settled between them, and more so on a
loaded server where the next request takes seconds to parse; a modality sending over
DIMSE may pause between instances. Each STOW-RS transaction holds a shared advisory lock
on its archive until it commits, and each C-STORE association holds one on a connection of
its own until everything it sent is indexed, so a trigger can tell "quiet" from "still
arriving" without guessing a delay.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

# The first key of the two-key advisory lock form: this namespace is ours.
_NAMESPACE = 0x76786869  # "vxhi"


def hold_during_transaction(db: Session, archive_id: uuid.UUID) -> None:
    """Mark a store request into `archive_id` in flight until this transaction ends."""
    db.execute(
        text("SELECT pg_advisory_xact_lock_shared(:ns, hashtext(:archive))"),
        {"ns": _NAMESPACE, "archive": str(archive_id)},
    )


def hold_on_connection(conn: Connection, archive_id: uuid.UUID) -> None:
    """Mark a store session into `archive_id` in flight on `conn` (in autocommit) until
    `release_on_connection`, or until the connection ends (a crash releases it too)."""
    conn.execute(
        text("SELECT pg_advisory_lock_shared(:ns, hashtext(:archive))"),
        {"ns": _NAMESPACE, "archive": str(archive_id)},
    )


def release_on_connection(conn: Connection, archive_id: uuid.UUID) -> None:
    conn.execute(
        text("SELECT pg_advisory_unlock_shared(:ns, hashtext(:archive))"),
        {"ns": _NAMESPACE, "archive": str(archive_id)},
    )


def in_flight(db: Session, archive_id: uuid.UUID) -> bool:
    """Whether a store request into `archive_id` is running now (never blocks)."""
    params = {"ns": _NAMESPACE, "archive": str(archive_id)}
    free = db.scalar(text("SELECT pg_try_advisory_lock(:ns, hashtext(:archive))"), params)
    if free:
        db.execute(text("SELECT pg_advisory_unlock(:ns, hashtext(:archive))"), params)
    return not free
