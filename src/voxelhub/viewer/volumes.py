"""Series of the image store as the viewer sees them: images, geometry and how to decode them.

`series_info` reads a series' instance rows and its metadata document once per series
version (kept per process), and says whether its images form a volume. `decode_image`
decodes one stored frame; `volume_source` tells the cache how to build the whole volume.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.codecs import decode_frame, decoded_description, numpy_dtype
from voxelhub.dicom.model import PixelDescription
from voxelhub.store.imagesets import pixel_of
from voxelhub.store.models import Instance, Series
from voxelhub.viewer.cache import VolumeSource
from voxelhub.viewer.errors import UndecodableImage
from voxelhub.viewer.render.geometry import SliceInfo, VolumePlan, plan_volume
from voxelhub.viewer.render.planes import Volume, rescale

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_INFO_CACHE_SIZE = 128
# Position, orientation, pixel spacing, rescale intercept and slope.
_GEOMETRY_TAGS = ("00200032", "00200037", "00280030", "00281052", "00281053")
_info_lock = threading.Lock()
_infos: OrderedDict[tuple[uuid.UUID, int], SeriesInfo] = OrderedDict()


@dataclass(frozen=True)
class ImageRef:
    """One stored frame to show: where its bytes are, how to decode and rescale them."""

    sop_instance_uid: str
    object_key: str
    start: int
    stop: int
    transfer_syntax: str
    pixel: PixelDescription
    slope: float
    intercept: float
    spacing: tuple[float, float] | None  # PixelSpacing (between rows, between columns), mm


@dataclass(frozen=True)
class SeriesInfo:
    """A series as the viewer needs it; `images` are in volume order when the plan is valid."""

    series_id: uuid.UUID
    version: int
    series_instance_uid: str
    modality: str
    kind: str  # image | seg | other
    images: tuple[ImageRef, ...]
    plan: VolumePlan
    rescale: tuple[float, float] | None  # one (slope, intercept) for all images, slope > 0
    window: tuple[float, float] | None
    unit: str
    referenced_series_uid: str | None
    first: dict[str, Any]  # the first instance's DICOM JSON (overlay text, SEG segments)
    sop_uids: tuple[str, ...]  # every instance, in index order

    @property
    def key(self) -> tuple[uuid.UUID, int]:
        return self.series_id, self.version

    @property
    def volume_dtype(self) -> np.dtype[Any]:
        """Stored values when one rescale fits all images, else real values as float32."""
        if self.rescale is not None:
            return numpy_dtype(self.images[0].pixel)
        return np.dtype(np.float32)


def first_value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value")
    return values[0] if values else None


def _numbers(dataset: dict[str, Any], tag: str) -> tuple[float, ...] | None:
    values = dataset.get(tag, {}).get("Value")
    try:
        return tuple(float(v) for v in values) if values else None
    except (TypeError, ValueError):
        return None


def _number(dataset: dict[str, Any], tag: str, default: float) -> float:
    numbers = _numbers(dataset, tag)
    return numbers[0] if numbers else default


def series_info(db: Session, series: Series) -> SeriesInfo:
    """The viewer's view of `series`, built once per series version in this process."""
    key = (series.id, series.version)
    with _info_lock:
        found = _infos.get(key)
        if found is not None:
            _infos.move_to_end(key)
            return found
    info = _build(db, series)
    with _info_lock:
        _infos[key] = info
        while len(_infos) > _INFO_CACHE_SIZE:
            _infos.popitem(last=False)
    return info


def _build(db: Session, series: Series) -> SeriesInfo:
    rows, documents = _instances(db, series)
    images: list[ImageRef] = []
    slices: list[SliceInfo] = []
    for row in rows:
        dataset = documents.get(row.sop_instance_uid, {})
        pixel = pixel_of(row)
        if pixel is None or pixel.bits_allocated == 1:
            continue
        decoded = decoded_description(pixel, row.frames_transfer_syntax_uid)
        slope = _number(dataset, "00281053", 1.0)
        intercept = _number(dataset, "00281052", 0.0)
        info = _slice_info(dataset, pixel)
        offsets = row.frame_offsets
        for frame in range(len(offsets) - 1):
            images.append(
                ImageRef(
                    row.sop_instance_uid,
                    row.object_key,
                    offsets[frame],
                    offsets[frame + 1],
                    row.frames_transfer_syntax_uid,
                    decoded,
                    slope,
                    intercept,
                    info.pixel_spacing,
                )
            )
        slices.append(info)
    plan = (
        plan_volume(slices)
        if len(images) == len(slices)
        else VolumePlan(tuple(range(len(images))), None, "the series holds multi-frame images")
    )
    if plan.valid:
        images = [images[i] for i in plan.order]
    first = _full_dataset(db, rows[0]) if rows else {}
    sop_class = rows[0].sop_class_uid if rows else ""
    modality = series.modality or str(first_value(first, "00080060") or "")
    kind = "seg" if modality == "SEG" or sop_class == SEGMENTATION_STORAGE else "image"
    if kind == "image" and not images:
        kind = "other"
    return SeriesInfo(
        series_id=series.id,
        version=series.version,
        series_instance_uid=series.series_instance_uid,
        modality=modality,
        kind=kind,
        images=tuple(images),
        plan=plan,
        rescale=_common_rescale(images),
        window=_window(first),
        unit="HU" if modality == "CT" or first_value(first, "00281054") == "HU" else "",
        referenced_series_uid=_referenced_series(first),
        first=first,
        sop_uids=tuple(r.sop_instance_uid for r in rows),
    )


def _instances(db: Session, series: Series) -> tuple[list[Instance], dict[str, dict[str, Any]]]:
    """The instance rows in index order, with just the attributes geometry needs.

    PostgreSQL picks the few attributes out of each instance's DICOM JSON, which is much
    less to read than the series' whole metadata document.
    """
    fields = [Instance.dataset_json[tag] for tag in _GEOMETRY_TAGS]
    found = db.execute(
        select(Instance, *fields)
        .where(Instance.series_id == series.id)
        .order_by(Instance.instance_number.nulls_last(), Instance.sop_instance_uid)
    ).all()
    rows = [row[0] for row in found]
    documents = {
        row[0].sop_instance_uid: {
            tag: value for tag, value in zip(_GEOMETRY_TAGS, row[1:], strict=True) if value
        }
        for row in found
    }
    return rows, documents


def _full_dataset(db: Session, instance: Instance) -> dict[str, Any]:
    found = db.scalar(select(Instance.dataset_json).where(Instance.id == instance.id))
    return dict(found or {})


def _slice_info(dataset: dict[str, Any], pixel: PixelDescription) -> SliceInfo:
    position = _numbers(dataset, "00200032")
    spacing = _numbers(dataset, "00280030")
    return SliceInfo(
        position=(position[0], position[1], position[2])
        if position and len(position) == 3
        else None,
        orientation=_numbers(dataset, "00200037"),
        pixel_spacing=(spacing[0], spacing[1]) if spacing and len(spacing) == 2 else None,
        rows=pixel.rows,
        columns=pixel.columns,
        frames=pixel.number_of_frames,
        samples=pixel.samples_per_pixel,
    )


def _common_rescale(images: list[ImageRef]) -> tuple[float, float] | None:
    if not images:
        return None
    first = images[0]
    same = all(
        (i.slope, i.intercept, i.pixel) == (first.slope, first.intercept, first.pixel)
        for i in images
    )
    if not same or first.slope <= 0 or first.pixel.samples_per_pixel != 1:
        return None
    return first.slope, first.intercept


def _window(dataset: dict[str, Any]) -> tuple[float, float] | None:
    center = _numbers(dataset, "00281050")
    width = _numbers(dataset, "00281051")
    if center and width and width[0] > 0:
        return center[0], width[0]
    return None


def _referenced_series(dataset: dict[str, Any]) -> str | None:
    for item in dataset.get("00081115", {}).get("Value", []):
        uid = first_value(item, "0020000E")
        if uid:
            return str(uid)
    return None


def decode_image(store: ObjectStore, image: ImageRef) -> npt.NDArray[Any]:
    """The stored values of one frame: (rows, columns), or (rows, columns, 3) for colour."""
    frame = store.get_range(image.object_key, image.start, image.stop)
    pixel = image.pixel
    samples = pixel.samples_per_pixel
    try:
        native = decode_frame(frame, image.transfer_syntax, image.pixel)
        flat = np.frombuffer(
            native, dtype=numpy_dtype(pixel), count=pixel.rows * pixel.columns * samples
        )
    except Exception as err:  # any codec's error: the stored frame is damaged
        raise UndecodableImage(
            f"the stored frame of instance {image.sop_instance_uid} cannot be decoded "
            f"({type(err).__name__}: {err}); re-send the instance to replace it"
        ) from err
    if samples == 1:
        return flat.reshape(pixel.rows, pixel.columns)
    if pixel.planar_configuration == 1:
        return flat.reshape(samples, pixel.rows, pixel.columns).transpose(1, 2, 0)
    return flat.reshape(pixel.rows, pixel.columns, samples)


def volume_source(store: ObjectStore, info: SeriesInfo) -> VolumeSource:
    """How the cache builds the volume of `info` (its plan must be valid)."""
    geometry = info.plan.geometry
    if geometry is None:
        raise ValueError(f"series {info.series_instance_uid} does not form a volume")
    dtype = info.volume_dtype

    def read(k: int) -> npt.NDArray[Any]:
        image = info.images[k]
        raw = decode_image(store, image)
        if info.rescale is not None:
            return raw
        return rescale(raw, image.slope, image.intercept)

    return VolumeSource(geometry.dims, dtype, read)


def as_volume(info: SeriesInfo, data: npt.NDArray[Any]) -> Volume:
    """The cached array of `info` with its geometry and rescale."""
    geometry = info.plan.geometry
    if geometry is None:
        raise ValueError(f"series {info.series_instance_uid} does not form a volume")
    slope, intercept = info.rescale or (1.0, 0.0)
    return Volume(data, geometry, slope, intercept)
