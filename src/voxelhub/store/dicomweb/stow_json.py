"""STOW-RS of metadata and bulk data: DICOM JSON objects and the parts their BulkDataURIs name.

A request of `multipart/related; type="application/dicom+json"` (PS3.18 §10.5.1) holds one
part with an array of DICOM JSON objects (or, of `type="application/dicom+xml"`, one part
per object in the Native DICOM Model, `dicom/dicomxml.py`) and one part per bulk data value,
each with a
Content-Location equal to the BulkDataURI that refers to it. Uncompressed values are
`application/octet-stream`, little endian; compressed pixel data comes as parts of its
image media type (with `transfer-syntax=` where the type alone is ambiguous), one frame a
part, in frame order, each with the pixel data's BulkDataURI as its Content-Location: as
WADO-RS returns such pixel data. Each object becomes a Part-10 file here and is then
stored exactly as a Part-10 part of an `application/dicom` request is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from voxelhub.dicom import dicomxml
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.store.dicomweb.multipart import Part, parse_media_type

JSON_TYPE = "application/dicom+json"
XML_TYPE = dicomxml.MEDIA_TYPE
_OCTETS = "application/octet-stream"
_PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009")
# The transfer syntax of compressed pixel data sent as one image part, by media type, when
# the part's Content-Type names none (PS3.18 Table 8.7.3-2: each type's default).
_SYNTAX_OF_MEDIA = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",  # the retired name
}


@dataclass(frozen=True)
class Built:
    """One object of the request: its Part-10 bytes, or why it could not be made."""

    body: bytes | None
    sop_class: str = ""
    sop_instance: str = ""
    problem: str = ""


class _Refused(Exception):
    """Why one object cannot be stored (`str` says it)."""


def is_metadata(part: Part) -> bool:
    return _is_xml(part) or parse_media_type(part.content_type or "").type in (
        JSON_TYPE,
        "application/json",
    )


def _is_xml(part: Part) -> bool:
    return parse_media_type(part.content_type or "").type in (XML_TYPE, "application/xml")


def build(metadata: list[Part], bulk: list[Part]) -> Iterator[Built]:
    """Each DICOM JSON (or XML) object of the `metadata` parts as a Part-10 file, its bulk
    data taken from the `bulk` parts by Content-Location."""
    by_location: dict[str, list[Part]] = {}
    for part in bulk:
        if location := _location(part):
            by_location.setdefault(location, []).append(part)
    for part in metadata:
        if _is_xml(part):
            try:
                yield _one(dicomxml.from_xml(part.body), by_location)
            except dicomxml.XmlError as err:
                problem = f"the DICOM XML part is not the Native DICOM Model: {err}"
                yield Built(None, problem=problem)
            continue
        try:
            objects = json.loads(part.body)
        except (UnicodeDecodeError, ValueError) as err:
            yield Built(None, problem=f"the DICOM JSON part is not valid JSON: {err}")
            continue
        if isinstance(objects, dict):
            objects = [objects]
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            yield Built(None, problem="the DICOM JSON part must hold an array of objects")
            continue
        for obj in objects:
            yield _one(obj, by_location)


def unreferenced(metadata: list[Part], bulk: list[Part]) -> list[str]:
    """Content-Locations of bulk parts that no object refers to (reported, not stored)."""
    text = b"".join(part.body for part in metadata)
    return [
        loc
        for part in bulk
        if (loc := _location(part))
        and loc.encode() not in text
        and loc.replace("&", "&amp;").encode() not in text  # as an XML attribute
    ]


def _location(part: Part) -> str:
    return part.headers.get("content-location", "").strip()


def _first(obj: dict[str, Any], tag: str) -> str:
    value = obj.get(tag, {}).get("Value") or [""]
    return str(value[0]) if value[0] is not None else ""


def _one(obj: dict[str, Any], parts: dict[str, list[Part]]) -> Built:
    sop_class, sop_instance = _first(obj, "00080016"), _first(obj, "00080018")
    try:
        for value, name in ((sop_class, "SOPClassUID (0008,0016)"),
                            (sop_instance, "SOPInstanceUID (0008,0018)")):  # fmt: skip
            if not value:
                raise _Refused(f"the object has no {name}: every instance needs one")
        obj = {tag: value for tag, value in obj.items() if not tag.upper().startswith("0002")}
        return Built(_part10(obj, parts), sop_class, sop_instance)
    except _Refused as refused:
        return Built(None, sop_class, sop_instance, str(refused))


def _number_of_frames(obj: dict[str, Any]) -> int:
    value = _first(obj, "00280008").strip() or "1"
    try:
        frames = int(value)
    except ValueError:
        raise _Refused(f"NumberOfFrames (0028,0008) {value!r} is not a number") from None
    if frames < 1:
        raise _Refused(f"NumberOfFrames (0028,0008) is {frames}; it must be at least 1")
    return frames


def _pixel_syntax(obj: dict[str, Any], uri: str, parts: list[Part]) -> str:
    """The transfer syntax that the pixel data parts (if any) are in: as sent, one frame a
    part when compressed."""
    if not parts:
        return EXPLICIT_VR_LITTLE_ENDIAN
    media = parse_media_type(parts[0].content_type or _OCTETS)
    types = {(part.content_type or _OCTETS).replace(" ", "").lower() for part in parts}
    if len(types) > 1:
        raise _Refused(
            f"the pixel data parts of {uri} are of different types ({', '.join(sorted(types))})"
            ": send every frame with the same Content-Type"
        )
    if media.type == _OCTETS:
        if len(parts) > 1:
            raise _Refused(
                f"{len(parts)} parts have the Content-Location {uri}: uncompressed pixel "
                "data is one application/octet-stream part holding every frame"
            )
        return EXPLICIT_VR_LITTLE_ENDIAN
    chosen = media.params.get("transfer-syntax") or _SYNTAX_OF_MEDIA.get(media.type)
    if chosen is None:
        raise _Refused(
            f"pixel data of type {media.type!r} cannot be stored; send it as "
            "application/octet-stream or an image type with its transfer-syntax"
        )
    frames = _number_of_frames(obj)
    if len(parts) != frames:
        raise _Refused(
            f"the object has {frames} frame(s) (NumberOfFrames) but {len(parts)} compressed "
            f"pixel data part(s) have the Content-Location {uri}: send one part a frame, in "
            "frame order"
        )
    return chosen


def _part10(obj: dict[str, Any], parts: dict[str, list[Part]]) -> bytes:
    pixel_uri = next(
        (obj[t]["BulkDataURI"] for t in _PIXEL_TAGS if "BulkDataURI" in obj.get(t, {})), None
    )
    syntax = (
        _pixel_syntax(obj, pixel_uri, parts.get(pixel_uri, []))
        if pixel_uri
        else EXPLICIT_VR_LITTLE_ENDIAN
    )

    def bulk(tag: str, vr: str, uri: str) -> bytes:
        found = parts.get(uri)
        if not found:
            raise _Refused(
                f"the bulk data {uri} is not in the request (no part has that Content-Location)"
            )
        if uri == pixel_uri and syntax != EXPLICIT_VR_LITTLE_ENDIAN:
            return encapsulate([part.body for part in found])
        if len(found) > 1:
            raise _Refused(
                f"{len(found)} parts have the Content-Location {uri}; a bulk data value "
                "other than compressed pixel data is one part"
            )
        return bytes(found[0].body)

    try:
        ds = Dataset.from_json(obj, bulk_data_uri_handler=bulk)
    except _Refused:
        raise
    except Exception as err:  # pydicom raises many kinds on malformed JSON values
        raise _Refused(f"the DICOM JSON object is invalid: {err}") from None
    if syntax != EXPLICIT_VR_LITTLE_ENDIAN and "PixelData" in ds:
        ds["PixelData"].VR = "OB"  # encapsulated frames
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta
    try:
        return write_part10(ds)
    except DicomError as err:
        raise _Refused(err.message) from None
