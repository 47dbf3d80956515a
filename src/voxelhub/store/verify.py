"""Checking stored frames: each one read back and decoded, as a viewer would.

A frame damaged after it was acknowledged (a disk fault, an object lost from the store, a
codec fault while it was encoded) is found here, by an administrator, rather than when a
radiologist opens the series. Read-only: nothing is changed or removed. Frames are decoded
to native samples and their size compared with what the instance's pixel description
says; values cannot be compared, since the original pixels are not kept beside them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.core.objects import ObjectNotFound, ObjectStore
from voxelhub.dicom.codecs import decode_frame, decoded_description
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import PixelDescription
from voxelhub.store.dicomweb.frames import FrameSource
from voxelhub.store.imagesets import read_frames
from voxelhub.store.models import Instance, Series, Study

logger = logging.getLogger(__name__)

# Instances read from the index per round trip.
_PAGE = 500
# Instances up to this size are read in one piece; larger ones (whole-slide images) a
# frame at a time, so memory stays bounded.
_READ_AT_ONCE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Damaged:
    """A frame (or, with `frame` None, a whole instance) that cannot be read back."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    frame: int | None
    reason: str


@dataclass
class VerifyResult:
    instances: int = 0
    frames: int = 0
    damaged: list[Damaged] = field(default_factory=list)


def verify_imagesets(
    db: Session, store: ObjectStore, *, archive_id: uuid.UUID | None = None
) -> VerifyResult:
    """Read and decode every stored frame (of one archive, or of all); report the damaged."""
    result = VerifyResult()
    for study_uid, series_uid, source in _instances(db, archive_id):
        result.instances += 1
        for number, reason in _check(store, source, result):
            result.damaged.append(
                Damaged(study_uid, series_uid, source.sop_instance_uid, number, reason)
            )
    logger.info("verified %d instances, %d frames: %d damaged",
                result.instances, result.frames, len(result.damaged))  # fmt: skip
    return result


def _instances(db: Session, archive_id: uuid.UUID | None) -> Iterator[tuple[str, str, FrameSource]]:
    query = (
        select(
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
            Instance.object_key,
            Instance.frame_offsets,
            Instance.frames_transfer_syntax_uid,
            Instance.pixel,
        )
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .order_by(Study.study_instance_uid, Series.series_instance_uid, Instance.sop_instance_uid)
        .execution_options(yield_per=_PAGE)
    )
    if archive_id is not None:
        query = query.where(Instance.archive_id == archive_id)
    for study_uid, series_uid, *columns in db.execute(query):
        yield study_uid, series_uid, FrameSource(*columns)


def _check(
    store: ObjectStore, source: FrameSource, result: VerifyResult
) -> Iterator[tuple[int | None, str]]:
    """(frame number or None, why) for each thing wrong with one instance's frames."""
    if not source.pixel or len(source.frame_offsets) < 2:
        return  # no pixel data: nothing to decode
    pixel = PixelDescription(**source.pixel)
    expected = decoded_description(pixel, source.frames_transfer_syntax_uid).frame_bytes
    try:
        for number, frame in _frames(store, source):
            result.frames += 1
            yield from _check_frame(frame, number, source, pixel, expected)
    except ObjectNotFound:
        yield None, f"its object {source.object_key} is missing from the store"


def _frames(store: ObjectStore, source: FrameSource) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each frame: read at once, or one by one for a large instance."""
    offsets = source.frame_offsets
    count = len(offsets) - 1
    if offsets[-1] - offsets[0] <= _READ_AT_ONCE_BYTES:
        yield from enumerate(read_frames(store, source), start=1)
        return
    for number in range(1, count + 1):
        yield number, read_frames(store, source, [number])[0]


def _check_frame(
    frame: bytes, number: int, source: FrameSource, pixel: PixelDescription, expected: int
) -> Iterator[tuple[int | None, str]]:
    offsets, syntax = source.frame_offsets, source.frames_transfer_syntax_uid
    stored = offsets[number] - offsets[number - 1]
    if len(frame) != stored:
        yield number, f"the object ends early: {len(frame)} of the frame's {stored} bytes"
        return
    try:
        native = decode_frame(frame, syntax, pixel)
    except Exception as err:  # whatever a codec raises, the frame is what is reported
        why = err.message if isinstance(err, DicomError) else f"{type(err).__name__}: {err}"
        yield number, f"it does not decode: {why}"
        return
    if len(native) != expected:
        yield number, f"it decodes to {len(native)} bytes, not the {expected} expected"
