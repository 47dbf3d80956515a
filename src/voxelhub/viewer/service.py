"""The viewer's study list and study documents, within what the caller may see."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from sqlalchemy import Select, any_, func, literal, or_, select
from sqlalchemy.orm import Session

from voxelhub.archives.models import Archive
from voxelhub.core.objects import ObjectStore
from voxelhub.store.access import View, find_studies, series_of_studies
from voxelhub.store.errors import StudyNotFound
from voxelhub.store.models import Series, Study
from voxelhub.viewer.errors import InvalidParameter, SeriesNotVisible
from voxelhub.viewer.params import integer
from voxelhub.viewer.render.geometry import Plane, VolumeGeometry, direction_letter
from voxelhub.viewer.seg import segments
from voxelhub.viewer.volumes import SeriesInfo, decode_image, first_value, series_info

MAX_LIMIT = 500
_MAX_WINDOWS = 1024
_DATE = re.compile(r"^\d{8}$")
_windows: dict[tuple[uuid.UUID, int], tuple[float, float]] = {}
_windows_lock = threading.Lock()


def find_visible_series(db: Session, view: View, series_uid: str) -> Series:
    statement = view.where(select(Series).where(Series.series_instance_uid == series_uid), Series)
    series: Series | None = db.scalars(statement.order_by(Series.created_at)).first()
    if series is None:
        raise SeriesNotVisible(f"no series {series_uid} that you can see")
    return series


def search_studies(db: Session, view: View, query: Mapping[str, str]) -> dict[str, Any]:
    joined = select(Study, Archive.name).join(Archive, Archive.id == Study.archive_id)
    statement = view.where(cast("Select[Any]", joined), Study)
    patient = query.get("patient", "").strip()
    if patient:
        like = "%" + patient.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                Study.patient_name.ilike(like, escape="\\"),
                Study.patient_id.ilike(like, escape="\\"),
            )
        )
    for name, op in (("date_from", "__ge__"), ("date_to", "__le__")):
        value = query.get(name, "")
        if value:
            if not _DATE.match(value):
                raise InvalidParameter(f"{name} must be a date as YYYYMMDD, not {value!r}")
            statement = statement.where(getattr(Study.study_date, op)(value))
    if query.get("modality"):
        modality = literal(query["modality"].upper())
        statement = statement.where(modality == any_(Study.modalities))
    if query.get("archive"):
        try:
            archive_id = uuid.UUID(query["archive"])
        except ValueError:
            raise InvalidParameter(
                f"archive must be an archive id, not {query['archive']!r}"
            ) from None
        statement = statement.where(Study.archive_id == archive_id)
    limit = integer(query, "limit", default=100, low=1, high=MAX_LIMIT)
    offset = integer(query, "offset", default=0, low=0)
    total = db.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = db.execute(
        statement.order_by(Study.study_date.desc(), Study.created_at.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return {"studies": [study_json(study, name) for study, name in rows], "total": total}


def study_json(study: Study, archive_name: str) -> dict[str, Any]:
    return {
        "study_instance_uid": study.study_instance_uid,
        "archive_id": str(study.archive_id),
        "archive_name": archive_name,
        "patient_name": study.patient_name,
        "patient_id": study.patient_id,
        "study_date": study.study_date,
        "study_description": study.study_description,
        "modalities": list(study.modalities or []),
        "number_of_series": study.number_of_series,
        "number_of_instances": study.number_of_instances,
    }


def study_document(db: Session, store: ObjectStore, view: View, study_uid: str) -> dict[str, Any]:
    try:
        study = find_studies(db, view, study_uid)[0]
    except StudyNotFound:
        raise SeriesNotVisible(f"no study {study_uid} that you can see") from None
    archive_name = db.scalar(select(Archive.name).where(Archive.id == study.archive_id)) or ""
    series = [
        series_json(study, s, series_info(db, s), store) for s in series_of_studies(db, [study])
    ]
    return {"study": study_json(study, archive_name), "series": series}


def series_json(
    study: Study, series: Series, info: SeriesInfo, store: ObjectStore
) -> dict[str, Any]:
    first = info.first
    center, width = default_window(store, info)
    body: dict[str, Any] = {
        "series_instance_uid": series.series_instance_uid,
        "modality": info.modality,
        "series_description": series.series_description,
        "series_number": series.series_number,
        "number_of_instances": series.number_of_instances,
        "number_of_images": len(info.images),
        "thumbnail_url": (
            f"/dicom-web/studies/{study.study_instance_uid}/series/"
            f"{series.series_instance_uid}/thumbnail"
        ),
        "kind": info.kind,
        "volume": volume_json(info),
        "window": {"center": center, "width": width},
        "unit": info.unit,
        "overlay_text": {
            "patient_name": study.patient_name,
            "patient_id": study.patient_id,
            "study_date": study.study_date,
            "study_description": study.study_description,
            "series_description": series.series_description,
            "series_number": series.series_number,
            "modality": info.modality,
            "institution": str(first_value(first, "00080080") or ""),
            "slice_thickness": first_value(first, "00180050"),
        },
        "referenced_series_uid": info.referenced_series_uid,
        # Series of one frame of reference share patient coordinates: linked views.
        "frame_of_reference_uid": first_value(first, "00200052"),
        "segments": [
            {"number": s.number, "label": s.label, "color": list(s.color)} for s in segments(first)
        ]
        if info.kind == "seg"
        else [],
    }
    return body


def volume_json(info: SeriesInfo) -> dict[str, Any]:
    geometry = info.plan.geometry
    if geometry is not None:
        return {
            "valid": True,
            "reason": None,
            # How many images each plane has: a gantry-tilted series is reformatted on a
            # grid wider than its slices.
            "dims": [geometry.plane_size(plane) for plane in Plane],
            "spacing": list(geometry.spacing),
            "orientation_labels": geometry.orientation_labels(),
            "gantry_tilt_degrees": None if geometry.tilt is None else geometry.tilt.degrees,
            "grid": grid_json(geometry),
        }
    first = info.images[0] if info.images else None
    spacing = (first.spacing if first else None) or (1.0, 1.0)
    cosines = tuple(float(v) for v in info.first.get("00200037", {}).get("Value", []) or ())
    labels: dict[str, dict[str, str]] = {}
    if len(cosines) == 6:
        right, down = cosines[:3], cosines[3:]
        labels["axial"] = {
            "top": direction_letter((-down[0], -down[1], -down[2])),
            "bottom": direction_letter((down[0], down[1], down[2])),
            "left": direction_letter((-right[0], -right[1], -right[2])),
            "right": direction_letter((right[0], right[1], right[2])),
        }
    return {
        "valid": False,
        "reason": info.plan.reason or "the series has no images",
        "dims": [
            len(info.images),
            first.pixel.rows if first else 0,
            first.pixel.columns if first else 0,
        ],
        "spacing": [0.0, spacing[0], spacing[1]],
        "orientation_labels": labels,
        "gantry_tilt_degrees": None,
        "grid": None,
    }


def grid_json(geometry: VolumeGeometry) -> dict[str, Any]:
    """Where the images of every plane lie in the patient (LPS, mm), for linked cross-hairs.

    Voxel (slice, row, column) of the grid that coronal and sagittal images are cut from
    lies at origin + slice * steps_mm[0] + row * steps_mm[1] + column * steps_mm[2]. The
    axial image of a slice shows it as acquired (`slice_size` rows and columns), its first
    pixel on the grid's row and column `slice_offsets[slice]` (null: all 0, no gantry tilt).
    `flipped`: coronal and sagittal images show the last slice at the top.
    """
    tilt = geometry.tilt
    return {
        "origin": list(geometry.grid_origin()),
        "steps_mm": [list(step) for step in geometry.grid_steps_mm()],
        "slice_size": list(geometry.dims[1:]),
        "slice_offsets": None if tilt is None else [list(offset) for offset in tilt.offsets],
        "flipped": geometry.flipped(Plane.CORONAL),
    }


def default_window(store: ObjectStore, info: SeriesInfo) -> tuple[float | None, float | None]:
    """The window the series names, else one spanning the values of its middle image."""
    if info.window is not None:
        return info.window
    if info.kind != "image" or not info.images:
        return None, None
    with _windows_lock:
        known = _windows.get(info.key)
    if known is None:
        image = info.images[len(info.images) // 2]
        values = decode_image(store, image).astype(np.float64) * image.slope + image.intercept
        low, high = float(values.min()), float(values.max())
        known = ((low + high) / 2, max(high - low, 1.0))
        with _windows_lock:
            if len(_windows) > _MAX_WINDOWS:
                _windows.clear()
            _windows[info.key] = known
    return known
