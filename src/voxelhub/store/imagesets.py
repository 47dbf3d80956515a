"""Reading image sets: the series metadata document, instance headers and frames."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.core.db import after_commit
from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.model import PixelDescription
from voxelhub.store.errors import InvalidQuery
from voxelhub.store.ingest import IMAGESET_PREFIX
from voxelhub.store.models import Instance, Series

GZIP_LEVEL = 6


def instances_of(db: Session, series_id: uuid.UUID) -> list[Instance]:
    return list(
        db.scalars(
            select(Instance)
            .where(Instance.series_id == series_id)
            .order_by(Instance.instance_number.nulls_last(), Instance.sop_instance_uid)
        )
    )


def series_metadata_gz(db: Session, store: ObjectStore, series: Series) -> bytes:
    """The series' gzipped DICOM JSON document, rebuilt only when the series changed."""
    if series.metadata_key is not None and series.metadata_version == series.version:
        return store.get(series.metadata_key)
    locked = db.scalar(select(Series).where(Series.id == series.id).with_for_update())
    assert locked is not None
    if locked.metadata_key is not None and locked.metadata_version == locked.version:
        return store.get(locked.metadata_key)
    rows = db.execute(
        select(Instance.dataset_json)
        .where(Instance.series_id == locked.id)
        .order_by(Instance.instance_number.nulls_last(), Instance.sop_instance_uid)
    ).scalars()
    body = gzip.compress(
        json.dumps(list(rows), separators=(",", ":")).encode(), compresslevel=GZIP_LEVEL
    )
    key = f"{IMAGESET_PREFIX}/{locked.id}/metadata.{locked.version}.json.gz"
    store.put(key, body, content_type="application/dicom+json")
    stale = locked.metadata_key
    locked.metadata_key, locked.metadata_version = key, locked.version
    db.flush()
    if stale and stale != key:
        after_commit(db, lambda: store.delete(stale))
    return body


def series_metadata(db: Session, store: ObjectStore, series: Series) -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(
        gzip.decompress(series_metadata_gz(db, store, series))
    )
    return loaded


class StoredFrames(Protocol):
    """Where an instance's frames are and how they are encoded: an `Instance` row, or just
    the columns a frame read needs (`dicomweb.frames.FrameSource`)."""

    @property
    def sop_instance_uid(self) -> str: ...
    @property
    def object_key(self) -> str: ...
    @property
    def frame_offsets(self) -> list[int]: ...
    @property
    def frames_transfer_syntax_uid(self) -> str: ...
    @property
    def pixel(self) -> dict[str, Any] | None: ...


def pixel_of(instance: StoredFrames) -> PixelDescription | None:
    return PixelDescription(**instance.pixel) if instance.pixel else None


def read_header(store: ObjectStore, instance: Instance) -> bytes:
    return store.get_range(instance.object_key, 0, instance.header_length)


def read_frames(
    store: ObjectStore, instance: StoredFrames, numbers: Sequence[int] | None = None
) -> list[bytes]:
    """Frames as stored (1-based numbers; all frames when `numbers` is None)."""
    offsets = instance.frame_offsets
    count = max(len(offsets) - 1, 0)
    wanted = list(numbers) if numbers is not None else list(range(1, count + 1))
    for number in wanted:
        if not 1 <= number <= count:
            raise InvalidQuery(
                f"frame {number} does not exist: instance {instance.sop_instance_uid} has "
                f"{count} frame(s), numbered from 1"
            )
    if not wanted:
        return []
    if numbers is None or len(wanted) > 4:
        blob = store.get_range(instance.object_key, offsets[0], offsets[-1])
        base = offsets[0]
        return [blob[offsets[n - 1] - base : offsets[n] - base] for n in wanted]
    return [store.get_range(instance.object_key, offsets[n - 1], offsets[n]) for n in wanted]


def read_instance(store: ObjectStore, instance: Instance) -> tuple[bytes, list[bytes]]:
    """The header and every frame, in one read of the instance object."""
    blob = store.get(instance.object_key)
    offsets = instance.frame_offsets
    frames = [blob[offsets[i] : offsets[i + 1]] for i in range(max(len(offsets) - 1, 0))]
    return blob[: instance.header_length], frames


def iter_series_objects(db: Session, series_ids: Sequence[uuid.UUID]) -> Iterator[Instance]:
    for series_id in series_ids:
        yield from instances_of(db, series_id)
