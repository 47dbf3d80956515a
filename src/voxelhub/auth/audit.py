"""The audit log: every read or write of patient data, in the same transaction as the act."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from voxelhub.auth.models import AuditEvent
from voxelhub.auth.service import Principal
from voxelhub.core.db import insert_from_json, json_rows, utcnow

# The columns `event_values` gives, in the order statements that insert events list them
# (`detail` last: a statement may compute it).
EVENT_COLUMNS = (
    "at",
    "user_id",
    "username",
    "action",
    "object_type",
    "object_id",
    "ip",
    "user_agent",
    "detail",
)


def event_values(
    principal: Principal | None,
    action: str,
    *,
    object_type: str | None = None,
    object_id: object | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The columns of one audit event, for `record` and for statements that insert it."""
    return {
        "at": utcnow(),
        "user_id": principal.user_id if principal else None,
        "username": principal.username if principal else None,
        "action": action,
        "object_type": object_type,
        "object_id": str(object_id) if object_id is not None else None,
        "ip": principal.ip if principal else None,
        "user_agent": principal.user_agent if principal else None,
        "detail": detail or {},
    }


def record(
    db: Session,
    principal: Principal | None,
    action: str,
    *,
    object_type: str | None = None,
    object_id: object | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one audit event (e.g. action="case.read", object_type="case")."""
    values = event_values(
        principal, action, object_type=object_type, object_id=object_id, detail=detail
    )
    db.add(AuditEvent(**values))


_EVENTS = cast(Table, AuditEvent.__table__)


def record_many(
    db: Session,
    principal: Principal | None,
    action: str,
    *,
    object_type: str,
    events: Sequence[tuple[object, dict[str, Any]]],
) -> None:
    """`record` for one act on many objects (`events`: object id and detail of each), in
    one statement, now (e.g. the jobs one request created)."""
    if not events:
        return
    common = event_values(principal, action, object_type=object_type)
    rows = []
    for object_id, detail in events:
        event = {**common, "object_id": str(object_id), "detail": detail}
        rows.append([event[name] for name in EVENT_COLUMNS])
    db.connection().exec_driver_sql(
        insert_from_json(_EVENTS, EVENT_COLUMNS), {"rows": json_rows(EVENT_COLUMNS, rows)}
    )


def recent(
    db: Session,
    *,
    limit: int = 100,
    before_id: int | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    if object_type is not None:
        query = query.where(AuditEvent.object_type == object_type)
    if object_id is not None:
        query = query.where(AuditEvent.object_id == object_id)
    return list(db.scalars(query))
