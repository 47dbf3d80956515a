"""Checks that a dataset is a storable instance: its UIDs, and for images a sane pixel layout.

>>> from voxelhub.dicom.synthetic import ct_phantom
>>> validate(ct_phantom(slices=1, size=8)[0]) is None
True
"""

from __future__ import annotations

import re

from voxelhub.dicom.attributes import Attributes
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.frames import pixel_element_keyword
from voxelhub.dicom.syntax import is_native

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_MAX = 64
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_MAX_DIMENSION = 65535
_MAX_PIXEL_BYTES = 4 * 1024**3
_IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")


def validate(ds: Attributes) -> None:
    """Raise DicomError naming the first attribute that makes `ds` unusable."""
    for uid_keyword in _REQUIRED_UIDS:
        check_uid(ds, uid_keyword)
    keyword = pixel_element_keyword(ds)
    if keyword is None and "Rows" not in ds:
        return  # SR, RT Plan, PDF, waveforms: no pixels to check
    if keyword is None:
        raise DicomError(
            "The image has Rows but no Pixel Data (7FE0,0010); the file may be truncated. "
            "Send the complete image.",
            code="missing_attribute",
            attribute="PixelData",
        )
    _check_image(ds, keyword)


def is_uid(text: str) -> bool:
    """Whether `text` is a valid UID: digits separated by single dots, at most 64 characters."""
    return len(text) <= _UID_MAX and _UID.fullmatch(text) is not None


def check_uid(ds: Attributes, keyword: str) -> None:
    """Raise DicomError unless `keyword` holds one valid UID (digits and dots, ≤ 64)."""
    value = ds.get(keyword)
    if value is None or str(value).strip("\0 ") == "":
        raise DicomError(
            f"{keyword} is missing or empty; every instance needs one.",
            code="missing_attribute",
            attribute=keyword,
        )
    text = str(value).strip("\0 ")
    if not is_uid(text):
        raise DicomError(
            f"{keyword} '{text[:80]}' is not a valid UID: a UID is digits separated by "
            f"single dots, at most {_UID_MAX} characters.",
            code="invalid_attribute",
            attribute=keyword,
        )


def positive_int(ds: Attributes, keyword: str, *, default: int | None = None) -> int:
    """The attribute as a positive int, or DicomError naming it (missing, invalid)."""
    value = ds.get(keyword)
    if value is None or value == "":
        if default is not None:
            return default
        raise DicomError(
            f"{keyword} is missing; an image needs it to describe its pixel data.",
            code="missing_attribute",
            attribute=keyword,
        )
    try:
        number = int(value)
    except (TypeError, ValueError) as err:
        raise DicomError(
            f"{keyword} '{value}' is not a whole number.",
            code="invalid_attribute",
            attribute=keyword,
        ) from err
    if number < 1:
        raise DicomError(
            f"{keyword} is {number}; it must be at least 1.",
            code="invalid_attribute",
            attribute=keyword,
        )
    return number


def _check_image(ds: Attributes, keyword: str) -> None:
    rows, columns, bits, samples = (positive_int(ds, name) for name in _IMAGE_ATTRIBUTES)
    frames = positive_int(ds, "NumberOfFrames", default=1)
    for name, size in (("Rows", rows), ("Columns", columns), ("NumberOfFrames", frames)):
        if size > _MAX_DIMENSION:
            raise _too_large(name, f"{name} is {size}, above the limit of {_MAX_DIMENSION}")
    expected_bits = rows * columns * frames * samples * bits
    if expected_bits > _MAX_PIXEL_BYTES * 8:
        raise _too_large(
            "PixelData",
            f"PixelData would need {expected_bits // 8} bytes (Rows {rows} x Columns "
            f"{columns} x NumberOfFrames {frames} x SamplesPerPixel {samples} x "
            f"BitsAllocated {bits} / 8), above the limit of 4 GiB",
        )
    _check_layout(ds, bits=bits, samples=samples)
    if is_native(str(ds.file_meta.TransferSyntaxUID)):
        _check_native_length(ds, keyword, expected_bits)
    elif not ds[keyword].is_undefined_length:
        raise DicomError(
            f"{keyword} is not encapsulated although the transfer syntax "
            f"{ds.file_meta.TransferSyntaxUID} requires it.",
            code="pixel_data_mismatch",
            attribute=keyword,
        )


def _check_layout(ds: Attributes, *, bits: int, samples: int) -> None:
    if bits != 1 and (bits % 8 or bits > 64):
        raise DicomError(
            f"BitsAllocated is {bits}; it must be 1 or a multiple of 8 up to 64.",
            code="invalid_attribute",
            attribute="BitsAllocated",
        )
    if samples > 4:
        raise DicomError(
            f"SamplesPerPixel is {samples}; it must be 1, 3 (colour) or 4 (retired).",
            code="invalid_attribute",
            attribute="SamplesPerPixel",
        )
    stored = positive_int(ds, "BitsStored", default=bits)
    if stored > bits:
        raise DicomError(
            f"BitsStored ({stored}) is larger than BitsAllocated ({bits}).",
            code="invalid_attribute",
            attribute="BitsStored",
        )
    if ds.get("PixelRepresentation", 0) not in (0, 1):
        raise DicomError(
            f"PixelRepresentation is {ds.PixelRepresentation}; it must be 0 or 1.",
            code="invalid_attribute",
            attribute="PixelRepresentation",
        )
    if samples > 1 and ds.get("PlanarConfiguration", 0) not in (0, 1):
        raise DicomError(
            f"PlanarConfiguration is {ds.PlanarConfiguration}; it must be 0 or 1.",
            code="invalid_attribute",
            attribute="PlanarConfiguration",
        )


def _check_native_length(ds: Attributes, keyword: str, expected_bits: int) -> None:
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        expected_bits = expected_bits * 2 // 3
    expected = (expected_bits + 7) // 8
    elem = ds[keyword]
    if elem.is_undefined_length:
        raise DicomError(
            f"{keyword} is encapsulated although the transfer syntax "
            f"{ds.file_meta.TransferSyntaxUID} is native.",
            code="pixel_data_mismatch",
            attribute=keyword,
        )
    actual = len(elem.value or b"")
    # Longer is padding after the frames: kept and given back, as pydicom and PACS read it.
    if actual < expected:
        raise DicomError(
            f"{keyword} has {actual} bytes but Rows x Columns x SamplesPerPixel x "
            f"BitsAllocated/8 x NumberOfFrames needs {expected}; the attributes or the "
            "pixel data are wrong.",
            code="pixel_data_mismatch",
            attribute=keyword,
        )


def _too_large(attribute: str, detail: str) -> DicomError:
    return DicomError(
        f"The image is too large: {detail}. Split it or send it to a store that accepts it.",
        code="too_large",
        attribute=attribute,
    )
