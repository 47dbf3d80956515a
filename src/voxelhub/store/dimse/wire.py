"""The few DICOM upper-layer byte layouts the C-STORE receive path reads and writes itself.

A P-DATA-TF PDU (PS3.8 9.3.5) carries presentation data values: a 4-byte big-endian item
length, the presentation context ID, a message control header (bit 0: command, bit 1: last
fragment) and the fragment. Command sets are always Implicit VR Little Endian (PS3.7 6.3.1).

>>> command = encode_command({0x0100: (0x0001).to_bytes(2, "little")})
>>> pdu = p_data_tf(3, command, is_command=True)
>>> [(pdv.context_id, pdv.is_command, pdv.is_last) for pdv in pdvs(pdu[6:])]
[(3, True, True)]
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from voxelhub.store.dimse.errors import DimseProtocolError

P_DATA_TF = 0x04
PDU_HEADER = struct.Struct(">BBL")
_ITEM_HEADER = struct.Struct(">LBB")  # item length, context ID, message control header
_ELEMENT = struct.Struct("<HHL")  # implicit VR LE: group, element, length
_COMMAND_BIT = 0x01
_LAST_BIT = 0x02

# Command set elements (group 0000) by element number.
AFFECTED_SOP_CLASS_UID = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
COMMAND_DATA_SET_TYPE = 0x0800
STATUS = 0x0900
ERROR_COMMENT = 0x0902
AFFECTED_SOP_INSTANCE_UID = 0x1000

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101

_PREAMBLE = bytes(128) + b"DICM"


@dataclass(frozen=True)
class Pdv:
    """One presentation data value of a P-DATA-TF PDU."""

    context_id: int
    is_command: bool
    is_last: bool
    fragment: memoryview


@dataclass(frozen=True)
class StoreRequest:
    """The fields of a C-STORE-RQ command set that the SCP answers with."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


def pdvs(body: memoryview | bytes) -> Iterator[Pdv]:
    """The presentation data values of a P-DATA-TF PDU's body (after its 6-byte header)."""
    view = memoryview(body)
    position = 0
    while position < len(view):
        if position + _ITEM_HEADER.size > len(view):
            raise DimseProtocolError("a P-DATA-TF PDU ends inside an item header")
        length, context_id, control = _ITEM_HEADER.unpack_from(view, position)
        end = position + 4 + length
        if length < 2 or end > len(view):
            raise DimseProtocolError(f"a P-DATA-TF item claims {length} bytes it does not hold")
        fragment = view[position + _ITEM_HEADER.size : end]
        yield Pdv(context_id, bool(control & _COMMAND_BIT), bool(control & _LAST_BIT), fragment)
        position = end


def decode_command(data: memoryview | bytes) -> dict[int, bytes]:
    """The elements of a group-0000 command set, by element number, as raw values."""
    view = memoryview(data)
    elements: dict[int, bytes] = {}
    position = 0
    while position + _ELEMENT.size <= len(view):
        group, element, length = _ELEMENT.unpack_from(view, position)
        start = position + _ELEMENT.size
        if group != 0 or start + length > len(view):
            raise DimseProtocolError("the command set is not a valid group-0000 dataset")
        elements[element] = bytes(view[start : start + length])
        position = start + length
    if position != len(view):
        raise DimseProtocolError("the command set ends inside an element header")
    return elements


def store_request(command: dict[int, bytes]) -> StoreRequest | None:
    """The C-STORE-RQ a decoded command set holds; None for any other command (or one
    without a dataset, which is left to the general DIMSE decoder to refuse)."""
    if _us(command, COMMAND_FIELD) != C_STORE_RQ or _us(command, COMMAND_DATA_SET_TYPE) in (
        None,
        NO_DATA_SET,
    ):
        return None
    message_id = _us(command, MESSAGE_ID)
    sop_class = command.get(AFFECTED_SOP_CLASS_UID)
    sop_instance = command.get(AFFECTED_SOP_INSTANCE_UID)
    if message_id is None or sop_class is None or sop_instance is None:
        return None
    return StoreRequest(message_id, _uid(sop_class), _uid(sop_instance))


def store_response(
    request: StoreRequest, status: int, *, error_comment: str | None = None
) -> bytes:
    """The encoded C-STORE-RSP command set answering `request`."""
    elements = {
        AFFECTED_SOP_CLASS_UID: _pad_uid(request.sop_class_uid),
        COMMAND_FIELD: struct.pack("<H", C_STORE_RSP),
        MESSAGE_ID_BEING_RESPONDED_TO: struct.pack("<H", request.message_id),
        COMMAND_DATA_SET_TYPE: struct.pack("<H", NO_DATA_SET),
        STATUS: struct.pack("<H", status),
        AFFECTED_SOP_INSTANCE_UID: _pad_uid(request.sop_instance_uid),
    }
    if error_comment:
        text = error_comment.encode("ascii", "replace")
        elements[ERROR_COMMENT] = text + b" " * (len(text) % 2)
    return encode_command(elements)


def encode_command(elements: dict[int, bytes]) -> bytes:
    """A group-0000 command set, its group length first, the rest in element order."""
    body = b"".join(
        _ELEMENT.pack(0, element, len(value)) + value for element, value in sorted(elements.items())
    )
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def p_data_tf(context_id: int, data: bytes, *, is_command: bool, max_pdu_length: int = 0) -> bytes:
    """P-DATA-TF PDUs carrying `data`, in fragments that fit the peer's maximum PDU length
    (0: unlimited)."""
    room = max_pdu_length - _ITEM_HEADER.size if max_pdu_length else len(data)
    if room <= 0:
        raise DimseProtocolError(f"the peer's maximum PDU length {max_pdu_length} holds no data")
    pieces = [data[i : i + room] for i in range(0, len(data), room)] or [b""]
    control = _COMMAND_BIT if is_command else 0
    pdus = []
    for index, piece in enumerate(pieces):
        flags = control | (_LAST_BIT if index == len(pieces) - 1 else 0)
        item = _ITEM_HEADER.pack(len(piece) + 2, context_id, flags) + piece
        pdus.append(PDU_HEADER.pack(P_DATA_TF, 0, len(item)) + item)
    return b"".join(pdus)


def part10_prefix(
    request: StoreRequest,
    transfer_syntax_uid: str,
    *,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """The preamble, "DICM" and file meta (Explicit VR Little Endian) of a received instance,
    naming the receiving implementation as the association did."""
    version = implementation_version_name.encode("ascii")
    elements = [
        _explicit(0x0001, b"OB", b"\x00\x01"),
        _explicit(0x0002, b"UI", _pad_uid(request.sop_class_uid)),
        _explicit(0x0003, b"UI", _pad_uid(request.sop_instance_uid)),
        _explicit(0x0010, b"UI", _pad_uid(transfer_syntax_uid)),
        _explicit(0x0012, b"UI", _pad_uid(implementation_class_uid)),
        _explicit(0x0013, b"SH", version + b" " * (len(version) % 2)),
    ]
    body = b"".join(elements)
    return _PREAMBLE + _explicit(0x0000, b"UL", struct.pack("<L", len(body))) + body


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # a VR with a 4-byte length
        return struct.pack("<HH2s2xL", 2, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def _us(command: dict[int, bytes], element: int) -> int | None:
    value = command.get(element)
    return int.from_bytes(value[:2], "little") if value is not None and len(value) >= 2 else None


def _uid(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace")


def _pad_uid(uid: str) -> bytes:
    data = uid.encode("ascii")
    return data + b"\x00" * (len(data) % 2)
