"""Which studies a caller may see, and finding stored objects within that view."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from voxelhub.archives.service import ARCHIVE
from voxelhub.auth import permissions
from voxelhub.auth.roles import ArchiveRole
from voxelhub.auth.service import Principal
from voxelhub.store.errors import InstanceNotFound, SeriesNotFound, StudyNotFound
from voxelhub.store.models import Instance, Series, Study


@dataclass(frozen=True)
class View:
    """The archives a request may read: all it has a role on, or one (a scoped base URL)."""

    archives: Select[Any] | None
    scope: uuid.UUID | None

    def where(self, statement: Select[Any], model: Any) -> Select[Any]:
        if self.archives is not None:
            statement = statement.where(model.archive_id.in_(self.archives))
        if self.scope is not None:
            statement = statement.where(model.archive_id == self.scope)
        return statement


def view_for(principal: Principal, scope: uuid.UUID | None) -> View:
    return View(permissions.ids_with_role(principal, ARCHIVE, ArchiveRole.viewer), scope)


def find_studies(db: Session, view: View, study_uid: str) -> list[Study]:
    """Every visible copy of a study (one per archive that holds it)."""
    statement = view.where(select(Study).where(Study.study_instance_uid == study_uid), Study)
    studies = list(db.scalars(statement.order_by(Study.created_at)))
    if not studies:
        raise StudyNotFound(f"no study {study_uid} that you can see")
    return studies


def find_series(db: Session, view: View, study_uid: str, series_uid: str) -> Series:
    """The oldest visible copy of a series."""
    return find_series_copies(db, view, study_uid, series_uid)[0]


def find_series_copies(db: Session, view: View, study_uid: str, series_uid: str) -> list[Series]:
    """Every visible copy of a series, oldest first (one per archive that holds it)."""
    statement = (
        select(Series)
        .join(Study, Study.id == Series.study_id)
        .where(Study.study_instance_uid == study_uid, Series.series_instance_uid == series_uid)
    )
    copies = list(db.scalars(view.where(statement, Series).order_by(Series.created_at)))
    if not copies:
        raise SeriesNotFound(f"no series {series_uid} in study {study_uid} that you can see")
    return copies


def first_copies(instances: Iterable[Instance]) -> list[Instance]:
    """`instances` with each SOP Instance UID once, the first seen kept: at /dicom-web an
    instance that several archives hold is the oldest copy (as `find_instance` finds it)."""
    seen: set[str] = set()
    out = []
    for instance in instances:
        if instance.sop_instance_uid not in seen:
            seen.add(instance.sop_instance_uid)
            out.append(instance)
    return out


def first_documents(documents: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`first_copies` for DICOM JSON documents (by their SOP Instance UID)."""
    seen: set[Any] = set()
    out = []
    for document in documents:
        uid = (document.get("00080018", {}).get("Value") or [None])[0]
        if uid is None or uid not in seen:
            seen.add(uid)
            out.append(document)
    return out


def series_of_studies(db: Session, studies: list[Study]) -> list[Series]:
    return list(
        db.scalars(
            select(Series)
            .where(Series.study_id.in_([s.id for s in studies]))
            .order_by(Series.series_number.nulls_last(), Series.created_at)
        )
    )


def find_instance(
    db: Session, view: View, study_uid: str, series_uid: str, sop_uid: str
) -> Instance:
    """The instance in any visible copy of its series (the oldest copy that holds it): the
    same series can be held by several archives with different instances (a study sent to
    two of them in parts)."""
    return find_instance_copies(db, view, study_uid, series_uid, sop_uid)[0]


def find_instance_copies(
    db: Session, view: View, study_uid: str, series_uid: str, sop_uid: str
) -> list[Instance]:
    """Every visible copy of an instance, oldest first."""
    statement = (
        select(Instance)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(
            Study.study_instance_uid == study_uid,
            Series.series_instance_uid == series_uid,
            Instance.sop_instance_uid == sop_uid,
        )
    )
    copies = list(db.scalars(view.where(statement, Instance).order_by(Instance.created_at)))
    if not copies:
        find_series(db, view, study_uid, series_uid)  # says so when the series is not there
        raise InstanceNotFound(f"no instance {sop_uid} in series {series_uid} that you can see")
    return copies
