"""Reading a plain Part-10 file without parsing it as a whole with pydicom.

Ingest spends most of its time outside the codec converting the same header elements
again and again: the instances of a series share their patient, study, series and
equipment attributes byte for byte. Here the file is walked element by element with
`struct`; each element is converted by pydicom once and kept, keyed by its bytes (and
the character set that decodes them), so the next instance of the series only converts
what differs (UIDs, positions, numbers). The pixel data is never copied.

`read_plain` handles explicit VR little endian files with complete file meta, elements
in ascending order, no UN element, no binary value large enough to be bulk data, and a
native Pixel Data element that ends the file. For anything else it returns None and the
caller reads the file the general way; where it answers, the dataset, DICOM JSON and
header equal that way's (see the tests).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import ValuesView
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import keyword_dict
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from voxelhub.dicom.dicomjson import BULK_DATA_THRESHOLD, element_json, plain_uids
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN

_PREFIX = 132  # preamble and "DICM"
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT"})
# VRs pydicom converts from their own bytes alone. UN is left out: pydicom may give it the
# dictionary's VR, which can be ambiguous and then depends on other elements.
_VRS = _LONG_VRS | frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
     b"PN", b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI", b"UL", b"US", b"UV"}
)  # fmt: skip
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_PIXEL_GROUP = 0x7FE00000
_CHARACTER_SET = 0x00080005
_TRANSFER_SYNTAX = 0x00020010
# Complete file meta: what `dcmwrite(enforce_file_format=True)` would otherwise add.
_REQUIRED_META = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012})
_DEFAULT_ENCODINGS = ["iso8859"]
_TAG = struct.Struct("<HH")
_HEAD = struct.Struct("<HH2sH")  # tag, VR and the length of a short VR's value
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
# Converted elements kept, the bytes of their values, and the largest value kept (larger
# ones are converted each time). A full cache starts again empty.
_CACHE_ENTRIES = 20_000
_CACHE_BYTES = 16 * 1024 * 1024
_CACHE_VALUE_BYTES = 8 * 1024

_Converted = tuple[DataElement, dict[str, Any]]
_Key = tuple[bytes, int, bytes, bytes]  # character set, tag, VR, value


class _ElementCache:
    """Converted elements by their bytes, shared by the threads that read files."""

    def __init__(self) -> None:
        self._entries: dict[_Key, _Converted] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: _Key) -> _Converted | None:
        return self._entries.get(key)

    def keep(self, key: _Key, converted: _Converted) -> None:
        if len(key[3]) > _CACHE_VALUE_BYTES:
            return
        with self._lock:
            if len(self._entries) >= _CACHE_ENTRIES or self._bytes >= _CACHE_BYTES:
                self._entries.clear()
                self._bytes = 0
            self._entries[key] = converted
            self._bytes += len(key[3])


_cache = _ElementCache()


class _Unsure(Exception):
    """The bytes are not what this path handles."""


class _BulkData(Exception):
    """An element other than the pixel data is large enough to be bulk data."""


class PlainAttributes:
    """The top-level elements of a plain file by keyword, answering as its `Dataset` would.

    Values are looked up by tag in a dict, without `Dataset.__getattr__`. Pixel Data is
    converted (its value stays a view of the file) when first asked for, as `Dataset` does.
    Treat it as read-only: its elements are shared with other files read.
    """

    __slots__ = ("_elements", "_encodings", "file_meta")

    def __init__(
        self,
        elements: dict[int, DataElement | RawDataElement],
        encodings: list[str],
        file_meta: PlainAttributes | None = None,
    ) -> None:
        self._elements = elements
        self._encodings = encodings
        if file_meta is not None:
            self.file_meta = file_meta

    def _element(self, keyword: str) -> DataElement | None:
        tag = keyword_dict.get(keyword)
        if tag is None:
            return None
        elem = self._elements.get(tag)
        if isinstance(elem, RawDataElement):
            elem = convert_raw_data_element(elem, encoding=self._encodings)
            self._elements[tag] = elem
        return elem

    def get(self, keyword: str, default: Any = None, /) -> Any:
        elem = self._element(keyword)
        return default if elem is None else elem.value

    def __contains__(self, keyword: str, /) -> bool:
        return keyword_dict.get(keyword) in self._elements

    def __getitem__(self, keyword: str, /) -> DataElement:
        elem = self._element(keyword)
        if elem is None:
            raise KeyError(keyword)
        return elem

    def __getattr__(self, keyword: str, /) -> Any:
        # Slots not set (`file_meta`, or all of them in a copy) end here too.
        elem = None if keyword.startswith("_") else self._element(keyword)
        if elem is None:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{keyword}'")
        return elem.value

    def values(self) -> ValuesView[DataElement | RawDataElement]:
        """The elements in file order."""
        return self._elements.values()


_meta_of: dict[str, PlainAttributes] = {}


def _file_meta(syntax: str) -> PlainAttributes:
    """File meta holding the Transfer Syntax UID, as `PlainAttributes` (shared, read-only)."""
    meta = _meta_of.get(syntax)
    if meta is None:
        elem = DataElement(BaseTag(_TRANSFER_SYNTAX), "UI", UID(syntax))
        meta = _meta_of.setdefault(syntax, PlainAttributes({_TRANSFER_SYNTAX: elem}, []))
    return meta


@dataclass(frozen=True)
class PlainFile:
    """A plain file read: its elements and DICOM JSON, its header, and its pixel data.

    `attributes` answers for every element and for the file meta's Transfer Syntax UID.
    `elements_json` is the DICOM JSON of every element but the file meta and the pixel
    data, in file order; its element values are shared with other files read, so treat
    them as read-only. `header` is the file up to the Pixel Data element, `pixel_data` a
    view of that element's value.
    """

    attributes: PlainAttributes
    elements_json: dict[str, Any]
    header: bytes
    pixel_vr: str
    pixel_data: memoryview
    transfer_syntax: str
    encodings: list[str]

    @cached_property
    def dataset(self) -> Dataset:
        """The file as a pydicom Dataset: every element (Pixel Data unconverted, as a view
        of the file) and file meta with the Transfer Syntax UID.

        Made when first asked for: splitting reads `attributes`, which costs far less.
        """
        elements: dict[BaseTag, Any] = {
            elem.tag: elem for elem in self.attributes.values() if elem.tag != _PIXEL_DATA
        }
        tag = BaseTag(_PIXEL_DATA)
        # pydicom takes any buffer as the value of an OB/OW element; a view avoids a copy.
        value: Any = self.pixel_data
        start = len(self.header) + 12
        elements[tag] = RawDataElement(
            tag, self.pixel_vr, len(self.pixel_data), value, start, False, True
        )
        ds = Dataset(elements)
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(self.transfer_syntax)
        ds.file_meta = meta
        ds.set_original_encoding(False, True, self.encodings)
        return ds


def read_plain(data: bytes | bytearray | memoryview) -> PlainFile | None:
    """`data` read element by element, or None when it is not a plain file (see above)."""
    view = memoryview(data)
    try:
        syntax, body = _meta(view)
        if syntax != EXPLICIT_VR_LITTLE_ENDIAN:
            return None
        places = _elements(view, body)
        return _assemble(view, places, syntax)
    except (_Unsure, _BulkData, struct.error, IndexError, LookupError, ValueError):
        return None


def _meta(view: memoryview) -> tuple[str, int]:
    """The Transfer Syntax UID and where the dataset begins, for complete file meta."""
    if len(view) < _PREFIX + 8 or bytes(view[_PREFIX - 4 : _PREFIX]) != b"DICM":
        raise _Unsure
    position, seen, syntax = _PREFIX, set(), ""
    while position + 8 <= len(view):
        group, element = _TAG.unpack_from(view, position)
        if group != 0x0002:
            break
        tag = (group << 16) | element
        vr = bytes(view[position + 4 : position + 6])
        if vr in _LONG_VRS:
            length = _U32.unpack_from(view, position + 8)[0]
            start = position + 12
        else:
            length = _U16.unpack_from(view, position + 6)[0]
            start = position + 8
        if length == _UNDEFINED or start + length > len(view):
            raise _Unsure
        if tag == _TRANSFER_SYNTAX:
            syntax = bytes(view[start : start + length]).decode("ascii").rstrip("\0 ")
        seen.add(tag)
        position = start + length
    if not seen >= _REQUIRED_META:
        raise _Unsure
    return syntax, position


def _elements(view: memoryview, position: int) -> list[tuple[int, bytes, int, int]]:
    """(tag, VR, value start, value end) of each top-level element, Pixel Data last."""
    places: list[tuple[int, bytes, int, int]] = []
    last = 0
    end = len(view)
    while position < end:
        group, element, vr, length = _HEAD.unpack_from(view, position)
        tag = (group << 16) | element
        if tag <= last or group == 0x0002 or vr not in _VRS:
            raise _Unsure
        if vr in _LONG_VRS:
            length = _U32.unpack_from(view, position + 8)[0]
            start = position + 12
        else:
            start = position + 8
        if length == _UNDEFINED:
            if vr != b"SQ":
                raise _Unsure  # encapsulated pixel data or an undefined length text
            stop = _skip_items(view, start)
            places.append((tag, vr, start, stop))
            position = stop + 8  # the sequence delimiter
        else:
            stop = start + length
            if stop > end:
                raise _Unsure
            places.append((tag, vr, start, stop))
            position = stop
        last = tag
    if not places or places[-1][0] != _PIXEL_DATA or places[-1][1] not in (b"OB", b"OW"):
        raise _Unsure
    # Tags ascend, so only the element before the pixel data can be in its group.
    if (len(places) > 1 and places[-2][0] >= _PIXEL_GROUP) or position != end:
        raise _Unsure
    return places


def _skip_items(view: memoryview, position: int) -> int:
    """Where the sequence delimiter of the items starting at `position` begins."""
    while True:
        group, element = _TAG.unpack_from(view, position)
        tag = (group << 16) | element
        length = _U32.unpack_from(view, position + 4)[0]
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Unsure
        position += 8
        if length != _UNDEFINED:
            position += length
            continue
        while True:
            group, element = _TAG.unpack_from(view, position)
            if (group << 16) | element == _ITEM_END:
                position += 8
                break
            position = _skip_element(view, position)


def _skip_element(view: memoryview, position: int) -> int:
    vr = bytes(view[position + 4 : position + 6])
    if vr in _LONG_VRS or vr == b"UN":
        length = _U32.unpack_from(view, position + 8)[0]
        position += 12
    else:
        length = _U16.unpack_from(view, position + 6)[0]
        position += 8
    if length != _UNDEFINED:
        return position + int(length)
    if vr != b"SQ":
        raise _Unsure
    return _skip_items(view, position) + 8


def _assemble(
    view: memoryview, places: list[tuple[int, bytes, int, int]], syntax: str
) -> PlainFile:
    charset = b""
    if places[0][0] == _CHARACTER_SET:
        _, _, start, stop = places[0]
        charset = bytes(view[start:stop])
    encodings = _encodings(charset)
    elements: dict[int, DataElement | RawDataElement] = {}
    elements_json: dict[str, Any] = {}
    for tag, vr, start, stop in places[:-1]:
        elem, as_json = _converted(charset, encodings, tag, vr, bytes(view[start:stop]))
        elements[tag] = elem
        elements_json[f"{tag:08X}"] = as_json
    tag, vr, start, stop = places[-1]
    pixel = view[start:stop]
    value: Any = pixel  # pydicom takes any buffer as the value of an OB/OW element
    pixel_vr = vr.decode()
    elements[tag] = RawDataElement(BaseTag(tag), pixel_vr, stop - start, value, start, False, True)
    attributes = PlainAttributes(elements, encodings, _file_meta(syntax))
    header = bytes(view[: start - 12])
    return PlainFile(attributes, elements_json, header, pixel_vr, pixel, syntax, encodings)


_encodings_of: dict[bytes, list[str]] = {}
_CHARSETS_KEPT = 64


def _encodings(charset: bytes) -> list[str]:
    """The Python codecs of a raw Specific Character Set value, as pydicom picks them."""
    known = _encodings_of.get(charset)
    if known is not None:
        return known
    if not charset.strip(b"\0 "):
        encodings = _DEFAULT_ENCODINGS
    else:
        raw = RawDataElement(BaseTag(_CHARACTER_SET), "CS", len(charset), charset, 0, False, True)
        encodings = convert_encodings(convert_raw_data_element(raw).value)
    if len(_encodings_of) >= _CHARSETS_KEPT:
        _encodings_of.clear()
    _encodings_of[charset] = encodings
    return encodings


def _refuse_bulk(elem: DataElement) -> str:
    raise _BulkData


def _converted(
    charset: bytes, encodings: list[str], tag: int, vr: bytes, value: bytes
) -> _Converted:
    key = (charset, tag, vr, value)
    found = _cache.get(key)
    if found is not None:
        return found
    # An undefined length sequence arrives as its items, without the delimiter.
    raw = RawDataElement(BaseTag(tag), vr.decode(), len(value), value, 0, False, True)
    elem = convert_raw_data_element(raw, encoding=encodings)
    as_json = plain_uids(element_json(elem, handler=_refuse_bulk, threshold=BULK_DATA_THRESHOLD))
    converted = (elem, as_json)
    _cache.keep(key, converted)
    return converted
