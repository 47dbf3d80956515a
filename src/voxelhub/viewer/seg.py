"""DICOM SEG series in the viewer: their segments, and their label volume on the source grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from sqlalchemy.orm import Session

from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.join import join_instance
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.store.imagesets import instances_of, pixel_of, read_instance
from voxelhub.store.models import Series
from voxelhub.viewer.render.geometry import VolumeGeometry
from voxelhub.viewer.render.labels import SegFrame, label_volume
from voxelhub.viewer.volumes import SeriesInfo, first_value

# A colour for segments whose SEG recommends none.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


@dataclass(frozen=True)
class Segment:
    number: int
    label: str
    color: tuple[int, int, int]


def segments(first: dict[str, Any]) -> list[Segment]:
    """The segments a SEG describes (from its DICOM JSON)."""
    found = []
    for item in first.get("00620002", {}).get("Value", []):
        number = int(first_value(item, "00620004") or 0)
        label = str(first_value(item, "00620005") or f"Segment {number}")
        lab = item.get("0062000D", {}).get("Value")
        color = lab_to_rgb(lab) if lab and len(lab) == 3 else _PALETTE[(number - 1) % len(_PALETTE)]
        found.append(Segment(number, label, color))
    return found


def lab_to_rgb(scaled: list[int]) -> tuple[int, int, int]:
    """A DICOM CIELab colour (PS3.3 C.10.7.1.1, scaled to 0..65535) as sRGB 0..255."""
    lightness = scaled[0] * 100.0 / 65535.0
    a, b = scaled[1] * 255.0 / 65535.0 - 128.0, scaled[2] * 255.0 / 65535.0 - 128.0
    fy = (lightness + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def inverse(t: float) -> float:
        return t**3 if t > 6.0 / 29.0 else 3 * (6.0 / 29.0) ** 2 * (t - 4.0 / 29.0)

    x, y, z = 0.95047 * inverse(fx), inverse(fy), 1.08883 * inverse(fz)
    linear = (
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    )
    rgb = [
        12.92 * c if c <= 0.0031308 else 1.055 * max(c, 0.0) ** (1 / 2.4) - 0.055 for c in linear
    ]
    r, g, bl = (round(min(max(c, 0.0), 1.0) * 255) for c in rgb)
    return r, g, bl


def seg_labels(
    db: Session, store: ObjectStore, seg: Series, source: SeriesInfo, geometry: VolumeGeometry
) -> npt.NDArray[np.uint8]:
    """The label volume of the SEG series `seg` on the grid of its source series."""
    slice_of_sop = {image.sop_instance_uid: k for k, image in enumerate(source.images)}
    frames: list[SegFrame] = []
    for instance in instances_of(db, seg.id):
        pixel = pixel_of(instance)
        if pixel is None:
            continue
        header, stored = read_instance(store, instance)
        part10 = join_instance(
            header,
            stored,
            instance.frames_transfer_syntax_uid,
            target_transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN,
            pixel=pixel,
        )
        frames.extend(_frames(dcmread(DicomBytesIO(part10))))
    return label_volume(geometry, frames, slice_of_sop)


def _frames(ds: Dataset) -> list[SegFrame]:
    masks = np.asarray(ds.pixel_array)
    if masks.ndim == 2:
        masks = masks[np.newaxis]
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    out = []
    for number, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence", [])):
        segment = int(
            _item(group, shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber") or 0
        )
        position = _item(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        out.append(
            SegFrame(
                segment=segment,
                mask=masks[number] > 0,
                position=tuple(float(v) for v in position) if position else None,  # type: ignore[arg-type]
                referenced_sop_instance_uid=_source_uid(group),
            )
        )
    return out


def _item(group: Dataset, shared: Dataset, sequence: str, keyword: str) -> Any:
    for where in (group, shared):
        items = where.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def _source_uid(group: Dataset) -> str | None:
    for derivation in group.get("DerivationImageSequence", []):
        for source in derivation.get("SourceImageSequence", []):
            uid = source.get("ReferencedSOPInstanceUID")
            if uid:
                return str(uid)
    return None
