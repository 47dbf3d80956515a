"""Deleting image sets: rows now, objects after the commit (never objects before rows)."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from voxelhub.core.db import after_commit, utcnow
from voxelhub.core.objects import ObjectStore
from voxelhub.store.ingest import IMAGESET_PREFIX
from voxelhub.store.models import Instance, Series, Study


def _remove_later(db: Session, store: ObjectStore, prefixes: list[str]) -> None:
    def remove() -> None:
        for prefix in prefixes:
            store.delete_prefix(prefix)

    after_commit(db, remove)


def delete_series(db: Session, store: ObjectStore, series: Series) -> None:
    study_id, count = series.study_id, series.number_of_instances
    db.delete(series)
    db.flush()
    remaining = db.scalar(select(func.count()).where(Series.study_id == study_id)) or 0
    if remaining == 0:
        study = db.get(Study, study_id)
        if study is not None:
            _delete_study_row(db, study)
    else:
        modalities = (
            select(func.array_agg(func.distinct(Series.modality)))
            .where(Series.study_id == study_id, Series.modality != "")
            .scalar_subquery()
        )
        db.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(
                number_of_series=remaining,
                modalities=func.coalesce(modalities, []),
                number_of_instances=Study.number_of_instances - count,
                updated_at=utcnow(),
            )
        )
    db.flush()
    _remove_later(db, store, [f"{IMAGESET_PREFIX}/{series.id}/"])


def _delete_study_row(db: Session, study: Study) -> None:
    """Delete a study's row; when it was the first copy of its UID, the oldest copy left in
    another archive becomes the first (searches across archives then find it at no cost)."""
    uid, first = study.study_instance_uid, study.first_copy
    db.delete(study)
    if not first:
        return
    db.flush()
    oldest = (
        select(Study.id)
        .where(Study.study_instance_uid == uid)
        .order_by(Study.created_at, Study.id)
        .limit(1)
        .scalar_subquery()
    )
    db.execute(update(Study).where(Study.id == oldest).values(first_copy=True))


def delete_study(db: Session, store: ObjectStore, study: Study) -> None:
    series_ids = list(db.scalars(select(Series.id).where(Series.study_id == study.id)))
    _delete_study_row(db, study)
    db.flush()
    _remove_later(db, store, [f"{IMAGESET_PREFIX}/{sid}/" for sid in series_ids])


def delete_instance(db: Session, store: ObjectStore, instance: Instance) -> None:
    """One instance out of its series; the last one takes the series (and an emptied study)
    with it. The series row is locked first, so that counters stay exact under concurrent
    ingest or deletion, and its version moves on, so its metadata document is rebuilt."""
    series = db.scalar(select(Series).where(Series.id == instance.series_id).with_for_update())
    if series is None:  # deleted meanwhile, with its instances
        return
    remaining = db.scalar(
        select(func.count()).where(Instance.series_id == series.id, Instance.id != instance.id)
    )
    if not remaining:
        delete_series(db, store, series)
        return
    key, size = instance.object_key, instance.size_bytes
    db.delete(instance)
    now = utcnow()
    db.execute(
        update(Series)
        .where(Series.id == series.id)
        .values(number_of_instances=remaining, size_bytes=Series.size_bytes - size,
                version=Series.version + 1, updated_at=now)
    )  # fmt: skip
    db.execute(
        update(Study)
        .where(Study.id == series.study_id)
        .values(number_of_instances=Study.number_of_instances - 1, updated_at=now)
    )
    db.flush()
    after_commit(db, lambda: store.delete(key))
