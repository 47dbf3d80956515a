"""QIDO-RS: searching the index at study, series and instance level (PS3.18 §10.6)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    any_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, undefer

from voxelhub.archives.models import Archive
from voxelhub.store import qido_studies
from voxelhub.store.attributes import (
    INSTANCE_TAGS,
    SERIES_TAGS,
    STUDY_TAGS,
    Attribute,
    attribute,
    element,
)
from voxelhub.store.errors import InvalidQuery
from voxelhub.store.models import Instance, Series, Study

MAX_LIMIT = 10_000
_MAX_OFFSET = 2**62
DEFAULT_LIMIT = 1_000
MODALITIES_IN_STUDY = "00080061"
_UID_SPLIT = re.compile(r"[,\\]")
AnySelect = Select[*tuple[Any, ...]]
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}


@dataclass(frozen=True)
class Query:
    """Parsed QIDO parameters."""

    filters: dict[str, tuple[Attribute, str]] = field(default_factory=dict)
    include: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fuzzy: bool = False


def parse_query(items: Iterable[tuple[str, str]]) -> Query:
    filters: dict[str, tuple[Attribute, str]] = {}
    include: set[str] = set()
    include_all, limit, offset, fuzzy = False, DEFAULT_LIMIT, 0, False
    for name, value in items:
        if name == "includefield":
            for part in value.split(","):
                if part.strip() == "all":
                    include_all = True
                elif part.strip():
                    include.add(attribute(part).tag)
        elif name in ("limit", "offset"):
            number = _non_negative(name, value)
            limit, offset = (min(number, MAX_LIMIT), offset) if name == "limit" else (limit, number)
        elif name == "fuzzymatching":
            fuzzy = value.lower() == "true"
        elif name not in _CONTROL:
            attr = attribute(name)
            if not value:
                # Universal matching (PS3.4 C.2.2.2.3): every entity matches, and the
                # attribute is returned.
                include.add(attr.tag)
                continue
            check_value(attr, value)
            filters[attr.tag] = (attr, value)
    return Query(filters, frozenset(include), include_all, limit, offset, fuzzy)


def server_limit(items: Iterable[tuple[str, str]]) -> int | None:
    """The most results the server returns for these (already parsed) parameters, where that
    is less than the client asked for: `DEFAULT_LIMIT` without a limit, `MAX_LIMIT` past it.

    A page that fills it may have more after it (PS3.18 §8.3.4.4.1: the response says so).
    """
    asked = [value for name, value in items if name == "limit"]
    if not asked:
        return DEFAULT_LIMIT
    return MAX_LIMIT if _non_negative("limit", asked[-1]) > MAX_LIMIT else None


_TEMPORAL = {
    "DA": (re.compile(r"\d{8}"), "YYYYMMDD"),
    "TM": (re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"), "HHMMSS (HH, HHMM or HHMMSS.FFFFFF)"),
}


def check_value(attr: Attribute, value: str) -> None:
    """Refuse a date or time match key that no stored value could be compared with."""
    pattern = _TEMPORAL.get(attr.vr)
    if pattern is None or value in ("*",):
        return
    form, shape = pattern
    start, dash, end = value.partition("-")
    ends = [start, end] if dash else [start]
    if (dash and not (start or end)) or not all(not e or form.fullmatch(e) for e in ends):
        raise InvalidQuery(
            f"{attr.keyword} takes {shape} or a range of two such values joined by '-' (either "
            f"end may be left out), not {value!r}"
        )


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise InvalidQuery(f"{name} must be a whole number ≥ 0, not {value!r}")
    # Past any possible result (and past what a 64-bit count holds): nothing is found.
    return min(number, _MAX_OFFSET)


def _wildcard(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


# The latest value of each VR: a range's end is completed from it, so that it takes in every
# value within its precision ("-1030" takes 10:30:45, "-2020" every DT of 2020).
_LATEST = {"DA": "99991231", "TM": "235959.999999", "DT": "99991231235959.999999"}


def range_end(vr: str, end: str) -> str:
    """The greatest stored value a range ending at `end` takes in.

    >>> range_end("TM", "1030")
    '103059.999999'
    """
    latest = _LATEST[vr]
    return end + latest[len(end) :]


def _range(column: Any, attr: Attribute, value: str) -> ColumnElement[bool]:
    start, _, end = value.partition("-")
    bounds = []
    if start:
        bounds.append(column >= start)
    if end:
        bounds.append(column <= range_end(attr.vr, end))
    return and_(column != "", *bounds)


def _number(column: Any, attr: Attribute, value: str) -> ColumnElement[bool]:
    try:
        return column == int(value)  # type: ignore[no-any-return]
    except ValueError:
        raise InvalidQuery(f"{attr.keyword} takes a number, not {value!r}") from None


def _person_name(column: Any, value: str, *, fuzzy: bool) -> ColumnElement[bool]:
    # Person names match case-insensitively, as most archives do.
    if fuzzy:
        return or_(column.op("%")(value), column.ilike(f"%{_wildcard(value)}%", escape="\\"))
    pattern = _wildcard(value).lower()
    lowered = func.lower(column)
    if value.startswith(("*", "?")):
        whole = column.ilike(_wildcard(value), escape="\\")
    # lower(name) is indexed (text_pattern_ops): a whole name or a prefix is a range scan.
    elif "*" in value or "?" in value:
        whole = lowered.like(pattern, escape="\\")
    else:
        whole = lowered == value.lower()
    if "=" in value:
        return whole  # type: ignore[no-any-return]
    # A key of one component group also matches that group of a name that has several
    # (PS3.5 6.2: "Yamada^Tarou=山田^太郎=やまだ^たろう"): its alphabetic group by prefix,
    # and where the key is not ASCII, its ideographic and phonetic groups.
    groups = [] if pattern.endswith("%") else [lowered.like(f"{pattern}=%", escape="\\")]
    if not value.isascii():
        groups.append(lowered.like(f"%={pattern}=%", escape="\\"))
        groups.append(lowered.like(f"%={pattern}", escape="\\"))
    return or_(whole, *groups)


def match(column: Any, attr: Attribute, value: str, *, fuzzy: bool) -> ColumnElement[bool]:
    """The SQL condition for one QIDO match key (PS3.4 C.2.2.2 matching rules)."""
    if attr.vr == "UI":
        return column.in_([u.strip() for u in _UID_SPLIT.split(value) if u.strip()])  # type: ignore[no-any-return]
    if attr.vr in ("DA", "TM", "DT") and "-" in value:
        return _range(column, attr, value)
    if attr.vr in ("IS", "US", "SS", "UL", "SL"):
        return _number(column, attr, value)
    if attr.vr == "PN":
        return _person_name(column, value, fuzzy=fuzzy)
    if "*" in value or "?" in value:
        return column.like(_wildcard(value), escape="\\")  # type: ignore[no-any-return]
    return column == value  # type: ignore[no-any-return]


def _apply(
    statement: AnySelect,
    query: Query,
    columns: dict[str, tuple[str, str, str]],
    model: Any,
    unsupported: list[str],
) -> AnySelect:
    for tag, (attr, value) in query.filters.items():
        if tag in columns:
            column: InstrumentedAttribute[Any] = getattr(model, columns[tag][2])
            statement = statement.where(match(column, attr, value, fuzzy=query.fuzzy))
        elif tag == MODALITIES_IN_STUDY and model is Study:
            wanted = [m for m in _UID_SPLIT.split(value) if m]
            statement = statement.where(
                or_(*(literal(m) == any_(Study.modalities) for m in wanted))
            )
        else:
            unsupported.append(attr.keyword)
    return statement


def later_copies_visible(db: Session, archives: AnySelect | None, scope: uuid.UUID | None) -> bool:
    """Whether a search across archives can meet a UID twice: some study it may see is a
    later copy of one another archive held first (one look through a small partial index).

    A series or instance held by two archives has its study in both, so this answers for
    every level."""
    if scope is not None:
        return False
    later = [~Study.first_copy]
    if archives is not None:
        later.append(Study.archive_id.in_(archives))
    return bool(db.scalar(select(exists().where(*later))))


def _visible(
    statement: AnySelect,
    model: Any,
    archives: AnySelect | None,
    scope: uuid.UUID | None,
    *,
    merge: bool = False,
) -> AnySelect:
    """Rows of the archives the caller may read; with `merge` (a search across archives
    that can meet a UID twice), each UID once, in its oldest visible copy: the one WADO-RS
    reads first."""
    if archives is not None:
        statement = statement.where(model.archive_id.in_(archives))
    if scope is not None:
        return statement.where(model.archive_id == scope)
    if not merge:
        return statement
    uid = {Study: "study_instance_uid", Series: "series_instance_uid"}.get(
        model, "sop_instance_uid"
    )
    if model is Study:
        # Most studies are the first copy of their UID (`Study.first_copy`); the later
        # copies whose older copies are all hidden from this caller are found once per
        # search, through their partial index, not looked for row by row.
        later, older = aliased(Study), aliased(Study)
        shown_later = select(later.id).where(
            ~later.first_copy, ~_older_copy(older, later, uid, archives)
        )
        if archives is not None:
            shown_later = shown_later.where(later.archive_id.in_(archives))
        return statement.where(or_(Study.first_copy, Study.id.in_(shown_later)))
    return statement.where(~_older_copy(aliased(model), model, uid, archives))


def _older_copy(older: Any, row: Any, uid: str, archives: AnySelect | None) -> Any:
    """An older visible copy of `row` exists (the same UID in another row)."""
    conditions = [
        getattr(older, uid) == getattr(row, uid),
        tuple_(older.created_at, older.id) < tuple_(row.created_at, row.id),
    ]
    if archives is not None:
        conditions.append(older.archive_id.in_(archives))
    return exists().where(*conditions)


def _fields(row: Any, columns: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
    return {tag: element(vr, getattr(row, name)) for tag, (_, vr, name) in columns.items()}


def _extra(query: Query, sample: dict[str, Any] | None, result: dict[str, Any]) -> None:
    """Fill requested attributes the index does not hold from a stored instance's JSON."""
    if not sample:
        return
    wanted = set(query.include)
    if query.include_all:
        wanted |= {t for t in sample if not t.startswith("7FE0") and "BulkDataURI" not in sample[t]}
    for tag in wanted:
        if tag not in result and tag in sample:
            result[tag] = sample[tag]


def _sample_json(model_fk: Any, owner_id: Any) -> Any:
    return (
        select(Instance.dataset_json)
        .where(model_fk == owner_id)
        .order_by(Instance.instance_number.nulls_last())
        .limit(1)
        .scalar_subquery()
    )


@dataclass
class Results:
    items: list[dict[str, Any]]
    unsupported: list[str]


def _paged_studies(
    query: Query, archives: AnySelect | None, scope: uuid.UUID | None, *, merge: bool
) -> tuple[AnySelect, list[str]]:
    unsupported: list[str] = []
    ids = select(Study.id, Study.study_date, Study.study_time)
    matched = _apply(ids, query, STUDY_TAGS, Study, unsupported)
    statement = _visible(matched, Study, archives, scope, merge=merge)
    statement = statement.order_by(*qido_studies.ORDER)
    return statement.offset(query.offset).limit(query.limit), unsupported


def study_search_body(
    db: Session,
    query: Query,
    *,
    archives: AnySelect | None,
    scope: uuid.UUID | None,
    base_url: str,
) -> tuple[qido_studies.Body, list[str]]:
    """The studies that match as a DICOM JSON body, and the match keys it could not use."""
    merge = later_copies_visible(db, archives, scope)
    statement, unsupported = _paged_studies(query, archives, scope, merge=merge)
    body = qido_studies.render(
        db, statement, include=query.include, include_all=query.include_all, base_url=base_url
    )
    return (_count_every_copy(db, body, archives) if merge else body), unsupported


def audited_study_search(
    db: Session,
    query: Query,
    *,
    archives: AnySelect | None,
    scope: uuid.UUID | None,
    base_url: str,
    event: dict[str, Any],
) -> tuple[qido_studies.Body | None, list[str]]:
    """`study_search_body` with its audit event recorded and committed in the same statement.

    None when `scope` is an archive the caller may not read (nothing is recorded then).
    """
    merge = later_copies_visible(db, archives, scope)
    statement, unsupported = _paged_studies(query, archives, scope, merge=merge)
    visible: ColumnElement[bool] = true()
    if scope is not None:
        archive = select(Archive.id).where(Archive.id == scope)
        if archives is not None:
            archive = archive.where(Archive.id.in_(archives))
        visible = archive.exists()
    bind = db.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with engine.connect() as connection:
        body = qido_studies.render_audited(
            connection,
            statement,
            include=query.include,
            include_all=query.include_all,
            base_url=base_url,
            visible=visible,
            event=event,
        )
    if merge and body is not None:
        body = _count_every_copy(db, body, archives)
    return body, unsupported


def _copies(model: Any, uid: Any, uids: list[str], archives: AnySelect | None) -> AnySelect:
    """The UIDs of `uids` that the caller sees in more than one row of `model`."""
    statement = select(uid).where(uid.in_(uids)).group_by(uid).having(func.count() > 1)
    return statement.where(model.archive_id.in_(archives)) if archives is not None else statement


def _count_every_copy(
    db: Session, body: qido_studies.Body, archives: AnySelect | None
) -> qido_studies.Body:
    """A merged search's studies counted over every copy the caller sees.

    A study held by several archives is found once, in its oldest copy, and WADO-RS joins
    its copies (each SOP instance once): its series, instances, modalities and (where asked
    for) SOP classes are counted the same way, where the copies differ. Studies with one
    visible copy are left as found.
    """
    studies: list[dict[str, Any]] = json.loads(body.json)
    uids = [study["0020000D"]["Value"][0] for study in studies]
    shared = _copies(Study, Study.study_instance_uid, uids, archives)
    statement = (
        select(
            Study.study_instance_uid,
            func.count(Series.series_instance_uid.distinct()),
            func.count(Instance.sop_instance_uid.distinct()),
            func.array_agg(Series.modality.distinct()),
            func.array_agg(Instance.sop_class_uid.distinct()),
        )
        .join(Series, Series.study_id == Study.id)
        .join(Instance, Instance.series_id == Series.id)
        .where(Study.study_instance_uid.in_(shared))
        .group_by(Study.study_instance_uid)
    )
    if archives is not None:
        statement = statement.where(Study.archive_id.in_(archives))
    counted = {row[0]: row[1:] for row in db.execute(statement)} if uids else {}
    if not counted:
        return body
    for study, uid in zip(studies, uids, strict=True):
        if uid not in counted:
            continue
        series, instances, modalities, sop_classes = counted[uid]
        study["00201206"] = element("IS", series)
        study["00201208"] = element("IS", instances)
        study[MODALITIES_IN_STUDY] = element("CS", sorted(m for m in modalities if m))
        if qido_studies.SOP_CLASSES_IN_STUDY in study:
            study[qido_studies.SOP_CLASSES_IN_STUDY] = element("UI", sorted(sop_classes))
    return qido_studies.Body(json.dumps(studies).encode(), body.count)


def search_studies(
    db: Session,
    query: Query,
    *,
    archives: AnySelect | None,
    scope: uuid.UUID | None,
    base_url: str,
) -> Results:
    body, unsupported = study_search_body(
        db, query, archives=archives, scope=scope, base_url=base_url
    )
    return Results(json.loads(body.json), unsupported)


def search_series(
    db: Session,
    query: Query,
    *,
    archives: AnySelect | None,
    scope: uuid.UUID | None,
    base_url: str,
    study_uid: str | None = None,
) -> Results:
    unsupported: list[str] = []
    sample = _sample_json(Instance.series_id, Series.id)
    statement = select(Series, Study.study_instance_uid, sample).join(
        Study, Study.id == Series.study_id
    )
    if study_uid is not None:
        statement = statement.where(Study.study_instance_uid == study_uid)
    study_filters = {t: f for t, f in query.filters.items() if t in STUDY_TAGS}
    series_query = Query(
        {t: f for t, f in query.filters.items() if t not in STUDY_TAGS},
        query.include,
        query.include_all,
        query.limit,
        query.offset,
        query.fuzzy,
    )
    statement = _apply(statement, series_query, SERIES_TAGS, Series, unsupported)
    statement = _apply(statement, Query(study_filters, fuzzy=query.fuzzy), STUDY_TAGS, Study, [])
    merge = later_copies_visible(db, archives, scope)
    statement = _visible(statement, Series, archives, scope, merge=merge)
    statement = statement.order_by(Series.series_number.nulls_last(), Series.created_at, Series.id)
    statement = statement.offset(query.offset).limit(query.limit)
    rows = db.execute(statement).all()
    counted: dict[str, int] = {}
    if merge and rows:
        counted = _series_instances(db, [row[0].series_instance_uid for row in rows], archives)
    items = []
    for series, study_instance_uid, sample_json in rows:
        result = _fields(series, SERIES_TAGS)
        result["0020000D"] = element("UI", study_instance_uid)
        instances = counted.get(series.series_instance_uid, series.number_of_instances)
        result["00201209"] = element("IS", instances)
        result["00080056"] = element("CS", "ONLINE")
        result["00081190"] = element(
            "UR", f"{base_url}/studies/{study_instance_uid}/series/{series.series_instance_uid}"
        )
        for tag in ("00080021", "00080031", "0040A073", "00400244", "00400245"):
            if sample_json and tag in sample_json:
                result[tag] = sample_json[tag]
        _extra(query, sample_json, result)
        items.append(dict(sorted(result.items())))
    return Results(items, unsupported)


def _series_instances(db: Session, uids: list[str], archives: AnySelect | None) -> dict[str, int]:
    """The instances of each series of `uids` the caller sees in more than one copy,
    counted over every copy (each SOP instance once, as WADO-RS joins them)."""
    shared = _copies(Series, Series.series_instance_uid, uids, archives)
    statement = (
        select(Series.series_instance_uid, func.count(Instance.sop_instance_uid.distinct()))
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.series_instance_uid.in_(shared))
        .group_by(Series.series_instance_uid)
    )
    if archives is not None:
        statement = statement.where(Series.archive_id.in_(archives))
    return {uid: count for uid, count in db.execute(statement)}


def search_instances(
    db: Session,
    query: Query,
    *,
    archives: AnySelect | None,
    scope: uuid.UUID | None,
    base_url: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> Results:
    unsupported: list[str] = []
    statement: AnySelect = (
        select(Instance, Series.series_instance_uid, Study.study_instance_uid)
        .options(undefer(Instance.dataset_json))
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
    )
    if study_uid is not None:
        statement = statement.where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        statement = statement.where(Series.series_instance_uid == series_uid)
    by_level: dict[str, dict[str, tuple[Attribute, str]]] = {"i": {}, "se": {}, "st": {}}
    for tag, item in query.filters.items():
        level = "st" if tag in STUDY_TAGS else "se" if tag in SERIES_TAGS else "i"
        by_level[level][tag] = item
    statement = _apply(
        statement, Query(by_level["i"], fuzzy=query.fuzzy), INSTANCE_TAGS, Instance, unsupported
    )
    statement = _apply(statement, Query(by_level["se"]), SERIES_TAGS, Series, [])
    statement = _apply(statement, Query(by_level["st"], fuzzy=query.fuzzy), STUDY_TAGS, Study, [])
    merge = later_copies_visible(db, archives, scope)
    statement = _visible(statement, Instance, archives, scope, merge=merge)
    statement = statement.order_by(Instance.instance_number.nulls_last(), Instance.sop_instance_uid)
    statement = statement.offset(query.offset).limit(query.limit)
    items = []
    for instance, series_instance_uid, study_instance_uid in db.execute(statement):
        result = _fields(instance, INSTANCE_TAGS)
        result["0020000D"] = element("UI", study_instance_uid)
        result["0020000E"] = element("UI", series_instance_uid)
        result["00080056"] = element("CS", "ONLINE")
        result["00081190"] = element(
            "UR",
            f"{base_url}/studies/{study_instance_uid}/series/{series_instance_uid}"
            f"/instances/{instance.sop_instance_uid}",
        )
        _extra(query, instance.dataset_json, result)
        items.append(dict(sorted(result.items())))
    return Results(items, unsupported)
