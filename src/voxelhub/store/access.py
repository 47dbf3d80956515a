"""Which studies a caller may see, and finding stored objects within that view."""

from __future__ import annotations

import uuid
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
    statement = (
        select(Series)
        .join(Study, Study.id == Series.study_id)
        .where(Study.study_instance_uid == study_uid, Series.series_instance_uid == series_uid)
    )
    series: Series | None = db.scalars(
        view.where(statement, Series).order_by(Series.created_at)
    ).first()
    if series is None:
        raise SeriesNotFound(f"no series {series_uid} in study {study_uid} that you can see")
    return series


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
    """The instance in any visible copy of its series: the same series can be held by
    several archives with different instances (a study sent to two of them in parts)."""
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
    instance: Instance | None = db.scalars(
        view.where(statement, Instance).order_by(Instance.created_at)
    ).first()
    if instance is None:
        find_series(db, view, study_uid, series_uid)  # says so when the series is not there
        raise InstanceNotFound(f"no instance {sop_uid} in series {series_uid} that you can see")
    return instance
