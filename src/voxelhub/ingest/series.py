"""DICOM series of an upload as case values: the series itself, and an MHA volume.

Every series an upload touched gets a `DicomSeriesValue` in its study's case; CT, MR and PT
series also get their volume (slices ordered by position, in real units) as an MHA image.
The volume is built from every stored instance of the series, also those of earlier
uploads, so a series sent in parts ends as one volume. A series that cannot be a volume
(uneven gaps, mixed sizes) keeps its series value and is reported with the reason; a
volume of an earlier, smaller version of the series is removed rather than left stale. A
gantry-tilted series is resampled into its volume, and the report's warnings say so.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from voxelhub.archives import values_service
from voxelhub.archives.models import Case
from voxelhub.archives.values import DicomSeriesValue, as_stored
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.join import join_instance
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.volume import series_volume, write_mha
from voxelhub.ingest import cases
from voxelhub.ingest.dicom_files import SeriesBatch
from voxelhub.ingest.schemas import SeriesReport
from voxelhub.store.imagesets import instances_of, pixel_of, read_instance
from voxelhub.store.models import Instance, Series

logger = logging.getLogger(__name__)

VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})


def attach_series(
    db: Session, store: ObjectStore, *, archive_id: uuid.UUID, batch: SeriesBatch
) -> SeriesReport:
    """Give the batch's series its case values, in a savepoint; failures become the report."""
    keys = batch.keys
    try:
        with db.begin_nested():
            return _attach(db, store, archive_id=archive_id, batch=batch)
    except (VoxelhubError, SQLAlchemyError, OSError, RuntimeError) as err:
        logger.warning("attaching series %s failed", keys.series_instance_uid, exc_info=True)
        reason = err.message if isinstance(err, VoxelhubError) else f"{type(err).__name__}: {err}"
        return SeriesReport(
            study_instance_uid=keys.study_instance_uid,
            series_instance_uid=keys.series_instance_uid,
            modality=keys.modality,
            number_of_instances=len(batch.files),
            outcome="failed",
            reason=f"the series was stored but not added to a case: {reason}",
        )


def _attach(
    db: Session, store: ObjectStore, *, archive_id: uuid.UUID, batch: SeriesBatch
) -> SeriesReport:
    keys = batch.keys
    series = db.scalar(
        select(Series).where(
            Series.archive_id == archive_id,
            Series.series_instance_uid == keys.series_instance_uid,
        )
    )
    if series is None:
        raise VoxelhubError(f"series {keys.series_instance_uid} is not in the index")
    case = cases.case_for_study(db, archive_id, keys)
    interface = cases.series_interface(db, case, keys)
    volume_interface = f"{interface}-volume" if keys.modality in VOLUME_MODALITIES else None
    value = DicomSeriesValue(
        study_instance_uid=keys.study_instance_uid,
        series_instance_uid=keys.series_instance_uid,
        modality=keys.modality,
        number_of_instances=series.number_of_instances,
        series_description=keys.series_description,
    )
    report = SeriesReport(
        study_instance_uid=keys.study_instance_uid,
        series_instance_uid=keys.series_instance_uid,
        modality=keys.modality,
        number_of_instances=series.number_of_instances,
        outcome="series_only",
        case_id=case.id,
        case_title=case.title,
        interface=interface,
    )
    if _unchanged(db, case, interface=interface, value=value, volume=volume_interface):
        return report.model_copy(update={"outcome": "duplicate", "reason": "already in the case"})
    cases.set_series_value(db, case, interface, value)
    if volume_interface is None:
        reason = f"{keys.modality or 'this'} series are not converted to volumes"
        return report.model_copy(update={"reason": reason})
    return _add_volume(db, store, case=case, series=series, batch=batch, report=report,
                       volume_interface=volume_interface)  # fmt: skip


def _unchanged(
    db: Session, case: Case, *, interface: str, value: DicomSeriesValue, volume: str | None
) -> bool:
    current = cases.value_at(db, case, interface)
    if current is None or current.value != as_stored(value):
        return False
    return volume is None or cases.value_at(db, case, volume) is not None


def _add_volume(
    db: Session,
    store: ObjectStore,
    *,
    case: Case,
    series: Series,
    batch: SeriesBatch,
    report: SeriesReport,
    volume_interface: str,
) -> SeriesReport:
    try:
        converted = series_volume(_datasets(db, store, series, local=batch.files))
    except Exception as err:  # pydicom's decoders raise many types
        if not isinstance(err, DicomError):
            logger.warning("converting series %s failed", series.id, exc_info=True)
        if cases.value_at(db, case, volume_interface) is not None:
            values_service.delete_value(db, store, case, volume_interface)
        why = err.message if isinstance(err, DicomError) else f"{type(err).__name__}: {err}"
        return report.model_copy(
            update={"outcome": "failed", "reason": f"not converted to a volume: {why}"}
        )
    with tempfile.TemporaryDirectory(prefix="vxh-volume-") as tmp:
        path = Path(tmp) / f"{volume_interface}.mha"
        write_mha(converted.voxels, converted.geometry, path)
        with path.open("rb") as data:
            row = values_service.put_file(
                db, store, case, volume_interface, filename=path.name, data=data,
                content_type="application/octet-stream",
            )  # fmt: skip
    return report.model_copy(
        update={
            "outcome": "converted",
            "volume_interface": volume_interface,
            "volume_value_id": row.id,
            "warnings": [*report.warnings, *converted.notes],
        }
    )


def _datasets(
    db: Session, store: ObjectStore, series: Series, *, local: dict[str, Path]
) -> list[Dataset]:
    """Every stored instance of the series: from this upload's files, else from the store."""
    return [
        read_dataset(local[row.sop_instance_uid].read_bytes())
        if row.sop_instance_uid in local
        else _from_store(store, row)
        for row in instances_of(db, series.id)
    ]


def _from_store(store: ObjectStore, row: Instance) -> Dataset:
    header, frames = read_instance(store, row)
    data = join_instance(
        header, frames, row.frames_transfer_syntax_uid,
        target_transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN, pixel=pixel_of(row),
    )  # fmt: skip
    return read_dataset(data)
