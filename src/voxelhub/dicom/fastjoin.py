"""Joining a stored header and its encapsulated frames byte by byte, without pydicom.

Retrieving a series in its stored syntax is the hot path of a viewer or a pipeline that
reads whole series; `join_instance` parses and rewrites every header for it. When the
header's dataset is explicit VR little endian (as every encapsulated syntax is) and holds
no element after Pixel Data, the file is the header with its Transfer Syntax UID replaced
and the encapsulated Pixel Data appended: the same bytes `join_instance` writes.
`join_as_stored` returns None whenever that does not hold, and the caller joins the slow way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, PixelDescription
from voxelhub.dicom.syntax import is_native

_PREFIX = 132  # preamble and "DICM"
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_TRANSFER_SYNTAX = 0x00020010
_GROUP_LENGTH = 0x00020000
_MAX_OFFSET = 2**32 - 1
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _Unsure(Exception):
    """The bytes are not what the fast path handles."""


def join_as_stored(
    header: bytes, frames: Sequence[bytes], frames_transfer_syntax: str, pixel: PixelDescription
) -> bytes | None:
    """The Part-10 file of `header` and encapsulated `frames` in their own syntax, or None."""
    if not _joinable(header, frames, frames_transfer_syntax, pixel):
        return None
    try:
        meta, source_syntax, body_start = _meta(header, frames_transfer_syntax)
        if source_syntax not in (EXPLICIT_VR_LITTLE_ENDIAN, frames_transfer_syntax):
            return None
        last = _last_tag(header, body_start, len(header))
    except (_Unsure, struct.error, IndexError, UnicodeDecodeError):
        return None
    pixels = _encapsulated(frames)
    if pixels is None or (last is not None and last >= _PIXEL_DATA):
        return None
    return b"".join((header[:_PREFIX], meta, header[body_start:], pixels))


def _joinable(
    header: bytes, frames: Sequence[bytes], frames_transfer_syntax: str, pixel: PixelDescription
) -> bool:
    return bool(
        frames
        and not is_native(frames_transfer_syntax)
        and len(frames) == pixel.number_of_frames
        # HTJ2K frames of planar native frames decode interleaved: the description changes.
        and not (pixel.samples_per_pixel > 1 and pixel.planar_configuration == 1)
        and header[_PREFIX - 4 : _PREFIX] == b"DICM"
    )


def _meta(header: bytes, target: str) -> tuple[bytes, str, int]:
    """The file meta group with `target` as its syntax, the syntax it had, and its end."""
    position = _PREFIX
    elements: list[bytes] = []
    source = ""
    while position + 8 <= len(header):
        group, element = _TAG.unpack_from(header, position)
        if group != 0x0002:
            break
        tag = (group << 16) | element
        vr = header[position + 4 : position + 6]
        if vr in _LONG_VRS:
            length = _U32.unpack_from(header, position + 8)[0]
            start = position + 12
        else:
            length = _U16.unpack_from(header, position + 6)[0]
            start = position + 8
        if length == _UNDEFINED or start + length > len(header):
            raise _Unsure
        end = start + length
        if tag == _TRANSFER_SYNTAX:
            source = header[start:end].rstrip(b"\0 ").decode("ascii")
            value = target.encode("ascii")
            if len(value) % 2:
                value += b"\0"
            elements.append(header[position : position + 6] + _U16.pack(len(value)) + value)
        elif tag != _GROUP_LENGTH:
            elements.append(header[position:end])
        position = end
    if not source:
        raise _Unsure
    group = b"".join(elements)
    length_element = _TAG.pack(0x0002, 0x0000) + b"UL" + _U16.pack(4) + _U32.pack(len(group))
    return length_element + group, source, position


def _last_tag(data: bytes, position: int, end: int) -> int | None:
    """The tag of the last element of an explicit VR little endian dataset in data[position:end]."""
    last = None
    while position < end:
        position, tag = _skip_element(data, position)
        last = tag
    if position != end:
        raise _Unsure
    return last


def _skip_element(data: bytes, position: int) -> tuple[int, int]:
    group, element = _TAG.unpack_from(data, position)
    tag = (group << 16) | element
    vr = data[position + 4 : position + 6]
    if vr in _LONG_VRS:
        length = _U32.unpack_from(data, position + 8)[0]
        position += 12
    else:
        length = _U16.unpack_from(data, position + 6)[0]
        position += 8
    if length != _UNDEFINED:
        return position + length, tag
    if vr != b"SQ":
        raise _Unsure  # undefined length UN or encapsulated data in a header
    return _skip_items(data, position), tag


def _skip_items(data: bytes, position: int) -> int:
    """Past the items of an undefined length sequence and its delimiter."""
    while True:
        group, element = _TAG.unpack_from(data, position)
        tag = (group << 16) | element
        length = _U32.unpack_from(data, position + 4)[0]
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Unsure
        if length != _UNDEFINED:
            position += length
            continue
        while True:
            group, element = _TAG.unpack_from(data, position)
            if (group << 16) | element == _ITEM_END:
                position += 8
                break
            position = _skip_element(data, position)[0]


def _encapsulated(frames: Sequence[bytes]) -> bytes | None:
    """Pixel Data (undefined length OB) with a Basic Offset Table and one item per frame."""
    items: list[bytes] = []
    offsets: list[int] = []
    offset = 0
    for frame in frames:
        padded = len(frame) + len(frame) % 2
        offsets.append(offset)
        items.append(_TAG.pack(0xFFFE, 0xE000) + _U32.pack(padded))
        items.append(frame)
        if padded != len(frame):
            items.append(b"\0")
        offset += 8 + padded
    if offset > _MAX_OFFSET:
        return None  # needs an Extended Offset Table: the slow path writes one
    table = struct.pack(f"<{len(offsets)}I", *offsets)
    return b"".join(
        (
            _TAG.pack(0x7FE0, 0x0010) + b"OB\0\0" + _U32.pack(_UNDEFINED),
            _TAG.pack(0xFFFE, 0xE000) + _U32.pack(len(table)) + table,
            *items,
            _TAG.pack(0xFFFE, 0xE0DD) + _U32.pack(0),
        )
    )
