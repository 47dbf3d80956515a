"""TIFF and BigTIFF (whole-slide images included), kept as TIFF.

The first image file directory gives the width and height. Every directory (the chain and
the SubIFDs of pyramids) is read, and the strips or tiles each names must lie inside the
file: a directory or pixel data beyond the end of the file means the file was cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from voxelhub.ingest.formats.base import Format, Recognition

NAME = "tiff"
_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_CLASSIC, _BIG = 42, 43
_WIDTH, _LENGTH, _SUB_IFDS = 256, 257, 330
_MAX_ENTRIES = 4096
_MAX_DIRECTORIES = 100_000
# (StripOffsets, StripByteCounts) and (TileOffsets, TileByteCounts).
_DATA_TAGS = ((273, 279), (324, 325))
# TIFF field types holding integers: SHORT, LONG, IFD, LONG8, IFD8.
_INT_SIZES = {3: 2, 4: 4, 13: 4, 16: 8, 18: 8}
_Order = Literal["little", "big"]
# An entry: its field type, value count and value field (the values or their offset).
_Entry = tuple[int, int, bytes]


def sniff(head: bytes) -> bool:
    return head[:4] in _MAGICS


@dataclass(frozen=True)
class _Tiff:
    """An open TIFF file and how its directories are laid out."""

    stream: BinaryIO
    order: _Order
    size: int
    count_size: int
    entry_size: int
    value_size: int

    def directory(self, offset: int) -> tuple[dict[int, _Entry], int] | None:
        """The directory at `offset` by tag, and the next one's offset; None when it does
        not fit in the file."""
        if not 8 <= offset <= self.size - self.count_size:
            return None
        self.stream.seek(offset)
        count = int.from_bytes(self.stream.read(self.count_size), self.order)
        end = offset + self.count_size + count * self.entry_size
        if count == 0 or count > _MAX_ENTRIES or end > self.size:
            return None
        table = self.stream.read(count * self.entry_size + self.value_size)
        entries: dict[int, _Entry] = {}
        for start in range(0, count * self.entry_size, self.entry_size):
            entry = table[start : start + self.entry_size]
            number = int.from_bytes(entry[4 : 4 + self.value_size], self.order)
            entries[int.from_bytes(entry[0:2], self.order)] = (
                int.from_bytes(entry[2:4], self.order),
                number,
                entry[4 + self.value_size : 4 + 2 * self.value_size],
            )
        following = table[count * self.entry_size :]
        # A last directory cut just before its (zero) next offset is still complete.
        if len(following) < self.value_size:
            return entries, 0
        return entries, int.from_bytes(following, self.order)

    def integers(self, entry: _Entry) -> list[int] | None:
        """The integer values of an entry; None when they are not integers or lie beyond
        the end of the file."""
        kind, number, field = entry
        width = _INT_SIZES.get(kind)
        if width is None:
            return None
        total = width * number
        if total <= len(field):
            data = field[:total]
        else:
            where = int.from_bytes(field, self.order)
            if where + total > self.size:
                return None
            self.stream.seek(where)
            data = self.stream.read(total)
        return [int.from_bytes(data[i : i + width], self.order) for i in range(0, total, width)]

    def data_fits(self, entries: dict[int, _Entry]) -> bool:
        """Whether the strips or tiles of a directory lie inside the file."""
        for offsets_tag, counts_tag in _DATA_TAGS:
            if offsets_tag not in entries or counts_tag not in entries:
                continue
            offsets = self.integers(entries[offsets_tag])
            counts = self.integers(entries[counts_tag])
            if offsets is None or counts is None:
                return False
            if any(o + n > self.size for o, n in zip(offsets, counts, strict=False)):
                return False
        return True


def _layout(head: bytes, order: _Order) -> tuple[int, int, int, int] | str:
    """(first IFD offset, entry count size, entry size, value size), or why it is not TIFF."""
    version = int.from_bytes(head[2:4], order)
    if version == _CLASSIC and len(head) >= 8:
        return int.from_bytes(head[4:8], order), 2, 12, 4
    if version == _BIG and len(head) >= 16 and int.from_bytes(head[4:6], order) == 8:
        return int.from_bytes(head[8:16], order), 8, 20, 8
    return "the TIFF header is malformed"


def _walk(tiff: _Tiff, first: int) -> dict[int, int] | str:
    """Width and length of the first directory, or why a directory or its data is cut."""
    found: dict[int, int] = {}
    pending, seen = [first], set[int]()
    while pending:
        offset = pending.pop()
        if offset in seen:  # pyramids chain their SubIFDs, which they also list
            continue
        if len(seen) >= _MAX_DIRECTORIES:
            return f"the file has more than {_MAX_DIRECTORIES} image directories (a corrupt TIFF?)"
        seen.add(offset)
        read = tiff.directory(offset)
        if read is None:
            return "an image directory is empty or cut off (a truncated TIFF); upload it again"
        entries, following = read
        if not found:
            for tag in (_WIDTH, _LENGTH):
                values = tiff.integers(entries[tag]) if tag in entries else None
                found[tag] = values[0] if values else 0
        if not tiff.data_fits(entries):
            return (
                "the pixel data runs past the end of the file (a truncated TIFF); upload it again"
            )
        subs = tiff.integers(entries[_SUB_IFDS]) if _SUB_IFDS in entries else []
        pending.extend(o for o in [following, *(subs or [])] if o)
    return found


def _dimensions(path: Path, head: bytes) -> dict[int, int] | str:
    order: _Order = "little" if head[:2] == b"II" else "big"
    layout = _layout(head, order)
    if isinstance(layout, str):
        return layout
    offset, count_size, entry_size, value_size = layout
    size = path.stat().st_size
    if not 8 <= offset < size:
        return "the first image directory lies beyond the end of the file (a truncated TIFF)"
    with path.open("rb") as stream:
        tiff = _Tiff(stream, order, size, count_size, entry_size, value_size)
        return _walk(tiff, offset)


def inspect(path: Path, head: bytes) -> Recognition:
    found = _dimensions(path, head)
    if isinstance(found, str):
        return Recognition.bad(NAME, found)
    if not found.get(_WIDTH) or not found.get(_LENGTH):
        return Recognition.bad(NAME, "the first image directory has no width or height")
    return Recognition.good(
        NAME, size=[found[_WIDTH], found[_LENGTH]], bigtiff=head[2:4] in (b"+\0", b"\0+")
    )


FORMAT = Format(NAME, sniff, inspect)
