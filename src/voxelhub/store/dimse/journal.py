"""The C-STORE journal: received instances made durable before they are indexed.

An association appends each instance it accepts to its own segment file and fdatasyncs it
before answering, so the answer never waits for encoding or the index commit. A segment
is deleted once every instance in it is committed; segments left by a crash are read back
(`leftovers`) and indexed again when the service starts, which stores each instance once
(ingest is idempotent on SOPInstanceUID).

A record is a header (magic, the lengths of its two parts, CRC-32 of both), a short
description of where the instance came from, and the instance's bytes. A record cut short
by a crash was never acknowledged: reading stops there.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> segment = Segment.create(folder)
>>> segment.append(b"STORESCU", b"DICM...")
>>> list(read_segment(segment.path))
[(b'STORESCU', b'DICM...')]
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

from voxelhub.core.objects import localfiles

logger = logging.getLogger(__name__)

_MAGIC = b"VXJ1"
_HEADER = struct.Struct("<4sIQI")
SUFFIX = ".journal"
CANCEL = b"cancel"  # the origin of a record that withdraws the record before it
# A long association starts a new segment past this size, so committed ones can go.
SEGMENT_BYTES = 256 * 1024 * 1024


class Segment:
    """One append-only journal file; removed when sealed and all its records are indexed."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        self._size = 0
        self._outstanding = 0
        self._sealed = fd is None
        self._lock = threading.Lock()

    @classmethod
    def create(cls, folder: Path) -> Segment:
        """A new, empty segment in `folder`, its name durable in the folder."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uuid.uuid4().hex}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        localfiles.fsync_directory(folder)
        return cls(path, fd)

    @classmethod
    def leftover(cls, path: Path, records: int) -> Segment:
        """A segment found on start, already sealed, with `records` still to index."""
        segment = cls(path, None)
        segment._outstanding = records
        return segment

    @property
    def full(self) -> bool:
        return self._size >= SEGMENT_BYTES

    def append(self, origin: bytes, payload: bytes) -> None:
        """Write one record and make it durable; then it may be acknowledged."""
        with self._lock:
            if self._fd is None:
                raise RuntimeError(f"journal segment {self.path.name} is sealed")
            crc = zlib.crc32(payload, zlib.crc32(origin))
            header = _HEADER.pack(_MAGIC, len(origin), len(payload), crc)
            written = os.writev(self._fd, [header, origin, payload])
            os.fdatasync(self._fd)
            self._size += written
            self._outstanding += 1

    def cancel_last(self) -> None:
        """The record just appended is not to be indexed (it was refused after all).

        Not synced: should a crash lose this note, the record is checked again on start
        and refused then.
        """
        with self._lock:
            if self._fd is not None:
                header = _HEADER.pack(_MAGIC, len(CANCEL), 0, zlib.crc32(b"", zlib.crc32(CANCEL)))
                self._size += os.writev(self._fd, [header, CANCEL])
        self.done()

    def done(self) -> None:
        """One record of this segment is indexed (or will never be)."""
        with self._lock:
            self._outstanding -= 1
            remove = self._sealed and self._outstanding <= 0
        if remove:
            self._remove()

    def seal(self) -> None:
        """No more records: the file goes once its outstanding records are indexed."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._sealed = True
            remove = self._outstanding <= 0
        if remove:
            self._remove()

    def _remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            logger.warning("journal segment %s could not be removed", self.path, exc_info=True)


def read_segment(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """The complete (origin, payload) records of a segment, in order, up to the first torn
    or damaged one."""
    data = path.read_bytes()
    position = 0
    while position + _HEADER.size <= len(data):
        magic, origin_length, length, crc = _HEADER.unpack_from(data, position)
        start = position + _HEADER.size
        origin = data[start : start + origin_length]
        payload = data[start + origin_length : start + origin_length + length]
        intact = len(origin) == origin_length and len(payload) == length
        if magic != _MAGIC or not intact or zlib.crc32(payload, zlib.crc32(origin)) != crc:
            logger.warning("journal segment %s ends in a damaged record at byte %d; the rest "
                           "was never acknowledged", path, position)  # fmt: skip
            return
        yield origin, payload
        position = start + origin_length + length


def pending_records(path: Path) -> list[tuple[bytes, bytes]]:
    """The records of a segment still to index: each but those cancelled after it."""
    records: list[tuple[bytes, bytes]] = []
    for origin, payload in read_segment(path):
        if origin == CANCEL and not payload:
            if records:
                records.pop()
            continue
        records.append((origin, payload))
    return records


def leftovers(folder: Path) -> list[Path]:
    """Segments a previous run left behind, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
