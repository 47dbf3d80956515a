"""QIDO-RS study search as one SQL statement that also writes the DICOM JSON response.

PostgreSQL filters, sorts and pages the studies, then joins each study's stored result text
(`qido_document`) with its RetrieveURL into the body, so a search of hundreds of studies
costs one round trip and no Python object per study. Attributes asked for with includefield
come from one stored instance's JSON and never override the indexed ones; SOPClassesInStudy,
which no instance holds, is computed from the study's instances when asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from voxelhub.auth import audit
from voxelhub.auth.models import AuditEvent
from voxelhub.store.models import Instance, Series, Study
from voxelhub.store.qido_document import JSON_STRING, KEYS, RETRIEVE_URL

AnySelect = Select[*tuple[Any, ...]]
_TAG = re.compile(r"[0-9A-F]{8}")
# What the page of studies is sorted by; the same order as the index that serves it.
ORDER = (Study.study_date.desc(), Study.study_time.desc(), Study.id)
_ORDER_SQL = "s.study_date DESC, s.study_time DESC, s.id"
_DOCUMENT = (
    f"""'{{' || s.qido_head || ',"{RETRIEVE_URL}":{{"vr":"UR","Value":[' """
    f"|| {JSON_STRING}(s.base_url || s.study_instance_uid) || ']}},' || s.qido_tail || '}}'"
)


SOP_CLASSES_IN_STUDY = "00080062"
# The distinct SOP Class UIDs of the study's instances as a DICOM JSON element (empty, with
# no "Value", for a study without instances).
_SOP_CLASSES_SQL = f"""(SELECT jsonb_build_object('{SOP_CLASSES_IN_STUDY}',
CASE WHEN count(*) = 0 THEN '{{"vr":"UI"}}'::jsonb
ELSE jsonb_build_object('vr', 'UI', 'Value',
jsonb_agg(DISTINCT i.sop_class_uid ORDER BY i.sop_class_uid)) END)
FROM {Instance.__tablename__} AS i JOIN {Series.__tablename__} AS se ON se.id = i.series_id
WHERE se.study_id = s.id)"""


def _extras_sql(include: frozenset[str], include_all: bool) -> str | None:
    """Attributes from the study's sample instance that the index does not hold."""
    if include_all:
        return (
            "(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(s.sample) AS e "
            "WHERE left(e.key, 4) <> '7FE0' AND NOT (e.value ? 'BulkDataURI'))"
        )
    wanted = sorted(include - KEYS - {SOP_CLASSES_IN_STUDY})
    if not wanted:
        return None
    for tag in wanted:  # tags are formatted from integers by `attributes.attribute`
        if not _TAG.fullmatch(tag):
            raise ValueError(f"not a tag: {tag!r}")
    listed = ", ".join(f"'{tag}'" for tag in wanted)
    return (
        f"(SELECT jsonb_object_agg(k, s.sample -> k) FROM unnest(ARRAY[{listed}]) AS k "
        "WHERE s.sample ? k)"
    )


@dataclass(frozen=True)
class Body:
    """A study search's response body as PostgreSQL wrote it, and how many studies it holds."""

    json: bytes
    count: int


def sample_json() -> Any:
    """One stored instance's DICOM JSON of the study in the enclosing query."""
    return (
        select(Instance.dataset_json)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == Study.id)
        .limit(1)
        .scalar_subquery()
    )


def _answer(
    page: AnySelect, *, include: frozenset[str], include_all: bool, base_url: str
) -> AnySelect:
    """One row: how many studies `page` found and the body.

    `page` selects the ids of one filtered, sorted page of studies (`select(Study.id)…`);
    their documents are read after paging, so an offset skips index entries, not rows.
    """
    ids = page.subquery("page")
    extras = _extras_sql(include, include_all)
    columns: list[Any] = [
        Study.id,
        Study.study_date,
        Study.study_time,
        Study.study_instance_uid,
        Study.qido_head,
        Study.qido_tail,
        literal(f"{base_url}/studies/", String).label("base_url"),
    ]
    if extras is not None:
        columns.append(sample_json().label("sample"))
    rows = select(*columns).join(ids, ids.c.id == Study.id).subquery("s")
    merged = [] if extras is None else [f"coalesce({extras}, '{{}}'::jsonb)"]
    if include_all or SOP_CLASSES_IN_STUDY in include:
        merged.append(_SOP_CLASSES_SQL)
    document = _DOCUMENT
    if merged:  # each part overrides those before it
        document = f"({' || '.join(merged)} || ({_DOCUMENT})::jsonb)::text"
    body = f"coalesce('[' || string_agg({document}, ',' ORDER BY {_ORDER_SQL}) || ']', '[]')"
    return select(func.count().label("count"), literal_column(body).label("body")).select_from(rows)


@contextmanager
def _planned_for_its_values(connection: Connection) -> Iterator[None]:
    """Plan each search for its own values, never with a generic plan.

    psycopg prepares a statement run five times; PostgreSQL may then plan it once for any
    values, and such a plan cannot use a name prefix or a small LIMIT: measured 3 to 10
    times slower than the plan for the values given (seq scans of the study table).
    """
    raw: Any = connection.connection.dbapi_connection
    saved = raw.prepare_threshold
    raw.prepare_threshold = None
    try:
        yield
    finally:
        raw.prepare_threshold = saved


def render(
    db: Session, page: AnySelect, *, include: frozenset[str], include_all: bool, base_url: str
) -> Body:
    """Run a page of study ids (see `_answer`) and render its studies as DICOM JSON."""
    answer = _answer(page, include=include, include_all=include_all, base_url=base_url)
    with _planned_for_its_values(db.connection()):
        row = db.execute(answer).one()
    return Body(str(row[1]).encode(), int(row[0]))


def render_audited(
    connection: Connection,
    page: AnySelect,
    *,
    include: frozenset[str],
    include_all: bool,
    base_url: str,
    visible: ColumnElement[bool],
    event: dict[str, Any],
) -> Body | None:
    """`render`, recording the search's audit event in the same statement, committed.

    One statement in its own transaction is one round trip to the database, where the
    search, an audit INSERT and a COMMIT would be four; on a busy host each costs more than
    the search. The event (`audit.event_values`) gets "returned" added to its detail.
    None, and nothing recorded, when `visible` (the caller may read the archive searched)
    is false.
    """
    answer = _answer(page, include=include, include_all=include_all, base_url=base_url).cte(
        "answer"
    )
    detail = literal(event["detail"], JSONB).op("||")(
        func.jsonb_build_object(literal_column("'returned'"), answer.c.count)
    )
    table = AuditEvent.__table__
    values = [literal(event[name], table.c[name].type) for name in audit.EVENT_COLUMNS[:-1]]
    recorded = (
        insert(AuditEvent)
        .from_select(list(audit.EVENT_COLUMNS), select(*values, detail).where(visible))
        .cte("recorded")
    )
    outcome = select(answer.c.count, answer.c.body, visible.label("visible")).add_cte(recorded)
    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
    with _planned_for_its_values(connection):
        row = connection.execute(outcome).one()
    if not row[2]:
        return None
    return Body(str(row[1]).encode(), int(row[0]))
