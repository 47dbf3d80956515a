"""Part-10 bytes of a dataset without its pixel data (the stored header), and back.

Elements pydicom has not parsed are written byte for byte when the encoding stays the
same, so private tags, sequences and odd values survive untouched.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.frames import ENCAPSULATION_KEYWORDS, PIXEL_KEYWORDS

_PIXEL_ELEMENTS = (*PIXEL_KEYWORDS, *ENCAPSULATION_KEYWORDS)
_PIXEL_DATA_TAG = 0x7FE00010
_PART10_PREFIX = 132  # the preamble and "DICM"
_REQUIRED_META = (
    "FileMetaInformationGroupLength",
    "FileMetaInformationVersion",
    "MediaStorageSOPClassUID",
    "MediaStorageSOPInstanceUID",
    "TransferSyntaxUID",
    "ImplementationClassUID",
)


def header_bytes(ds: Dataset, *, trailing: bytes = b"") -> bytes:
    """`ds` as a Part-10 file in its own transfer syntax, without any pixel data element.

    With `trailing` (what native pixel data holds after its frames), the pixel data element
    stays in the header with that as its value, for `join` to append to the frames.
    """
    removed = {keyword: ds.pop(keyword) for keyword in _PIXEL_ELEMENTS if keyword in ds}
    pixel = next((keyword for keyword in PIXEL_KEYWORDS if keyword in removed), None)
    try:
        if trailing and pixel is not None:
            # Unread implicit VR elements have no VR yet; implicit VR writes none anyway.
            ds.add_new(pixel, removed[pixel].VR or "OB", trailing)
        return write_part10(ds)
    finally:
        if trailing and pixel is not None:
            del ds[pixel]
        for keyword, elem in removed.items():
            ds[keyword] = elem


def header_of_file(data: bytes, ds: Dataset, *, trailing: bytes = b"") -> bytes:
    """`header_bytes(ds, trailing=trailing)` for `ds` read from the Part-10 file `data`,
    without rewriting it where it can.

    When the file has complete file meta, a native Pixel Data element as its last element,
    and its dataset is encoded as its syntax says, the header is the file up to that
    element: the bytes `header_bytes` would write. Otherwise (or with `trailing`, rare)
    the dataset is written anew.
    """
    start = None if trailing else _pixel_data_start(data, ds)
    return data[:start] if start is not None else header_bytes(ds, trailing=trailing)


def pop_trailing(ds: Dataset, keyword: str) -> bytes:
    """The bytes after the frames a stored header keeps (see `header_bytes`), removed from
    `ds`; empty when it keeps none."""
    if keyword not in ds or ds[keyword].is_undefined_length:
        return b""
    return bytes(ds.pop(keyword).value or b"")


def _plain_file(data: bytes, ds: Dataset) -> bool:
    """A Part-10 file with complete meta, native little endian, encoded as declared."""
    if data[_PART10_PREFIX - 4 : _PART10_PREFIX] != b"DICM" or not ds.keys():
        return False
    meta = ds.file_meta
    if any(keyword not in meta for keyword in _REQUIRED_META):
        return False
    implicit, little = ds.original_encoding
    syntax = meta.TransferSyntaxUID
    return bool(
        little
        and syntax.is_little_endian
        and syntax.is_implicit_VR == implicit
        and not syntax.is_compressed
        and not syntax.is_deflated
    )


def _pixel_data_start(data: bytes, ds: Dataset) -> int | None:
    if not _plain_file(data, ds) or max(ds.keys()) != _PIXEL_DATA_TAG:
        return None
    elem = ds.get_item(_PIXEL_DATA_TAG)
    # Raw while unread; once converted (validation reads it) its position is file_tell.
    if isinstance(elem, RawDataElement):
        tell, length, undefined = elem.value_tell, elem.length, elem.length == 0xFFFFFFFF
    else:
        tell, undefined = elem.file_tell, elem.is_undefined_length
        length = len(elem.value) if isinstance(elem.value, bytes) else -1
    if tell is None or undefined or length < 0 or tell + length != len(data):
        return None
    # Explicit VR: tag, VR, two reserved bytes and a 4-byte length; implicit: tag, length.
    start = int(tell) - (8 if ds.original_encoding[0] else 12)
    return start if data[start : start + 4] == b"\xe0\x7f\x10\x00" else None


def write_part10(ds: Dataset) -> bytes:
    """`ds` as a Part-10 file in the transfer syntax of its file meta.

    The media storage UIDs are filled in from the dataset when a bare dataset has none.
    """
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buffer = BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True)
    except Exception as err:  # pydicom raises value, type and struct errors alike
        raise DicomError(
            f"The dataset cannot be written as a DICOM file ({err}).",
            code="invalid",
        ) from err
    return buffer.getvalue()


def read_header(header: bytes) -> Dataset:
    """The dataset of a stored header (written by `header_bytes`)."""
    try:
        return dcmread(BytesIO(header))
    except Exception as err:  # a stored header that does not parse is corrupt
        raise DicomError(
            f"The stored header is not a readable DICOM file ({err}).", code="unreadable"
        ) from err
