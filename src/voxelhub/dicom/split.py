"""Taking a DICOM file apart for the image store: keys, header, frames and DICOM JSON.

>>> from voxelhub.dicom.header import write_part10
>>> from voxelhub.dicom.synthetic import ct_phantom
>>> split = split_instance(write_part10(ct_phantom(slices=1, size=32)[0]))
>>> split.frames_transfer_syntax, len(split.frames), split.pixel.rows
('1.2.840.10008.1.2.4.201', 1, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydicom.dataset import Dataset

from voxelhub.dicom.byteorder import swap_binary_values
from voxelhub.dicom.codecs import encode_htj2k, fits_bits_stored, htj2k_encodable
from voxelhub.dicom.dicomjson import dataset_json
from voxelhub.dicom.fastsplit import PlainFile, read_plain
from voxelhub.dicom.frames import (
    PIXEL_KEYWORDS,
    encapsulated_frames,
    native_pixel_bytes,
    pixel_description,
    split_native,
    trailing_bytes,
)
from voxelhub.dicom.header import header_of_file
from voxelhub.dicom.keys import instance_keys
from voxelhub.dicom.model import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    InstanceKeys,
    PixelDescription,
    SplitInstance,
)
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.syntax import is_native
from voxelhub.dicom.validate import validate

BulkDataUri = Callable[[str], str]
_PIXEL_TAG = "7FE00010"
_TRANSFER_SYNTAX_TAG = "00020010"


def split_instance(
    data: bytes | bytearray | memoryview,
    *,
    encode: bool = True,
    bulkdata_uri: BulkDataUri | None = None,
    bulkdata_uri_for: Callable[[InstanceKeys], BulkDataUri] | None = None,
) -> SplitInstance:
    """`data` (a Part-10 file or bare dataset) read, validated and taken apart.

    Native frames become HTJ2K lossless when HTJ2K holds them bit for bit (and
    `encode`), else stay native little endian (big endian and deflated input
    included); frames that arrived compressed are kept untouched in their syntax.
    An instance without pixel data has no frames and keeps its own syntax.
    BulkDataURIs are made by `bulkdata_uri`, or by the maker `bulkdata_uri_for`
    returns for the instance's keys.
    """
    plain = read_plain(data)
    if plain is not None:
        split = _split_plain(plain, encode=encode, uri=bulkdata_uri, uri_for=bulkdata_uri_for)
        if split is not None:
            return split
    return split_general(
        data, encode=encode, bulkdata_uri=bulkdata_uri, bulkdata_uri_for=bulkdata_uri_for
    )


def split_general(
    data: bytes | bytearray | memoryview,
    *,
    encode: bool = True,
    bulkdata_uri: BulkDataUri | None = None,
    bulkdata_uri_for: Callable[[InstanceKeys], BulkDataUri] | None = None,
) -> SplitInstance:
    """`split_instance` the general way: pydicom reads the whole file, whatever it holds.

    Native pixel data longer than its frames keeps what follows them in the header
    (`header.header_bytes`), so that joining it natively gives back the same value.
    """
    data = bytes(data)
    ds = read_dataset(data)
    validate(ds)
    original = str(ds.file_meta.TransferSyntaxUID)
    pixel = pixel_description(ds)
    frames, frames_syntax, trailing = _frames(ds, pixel, original, encode=encode)
    header = header_of_file(data, ds, trailing=trailing)
    if ds.original_encoding[1] is False:
        # DICOM JSON binary values are little endian; the header above kept big endian.
        swap_binary_values(ds, skip=frozenset(PIXEL_KEYWORDS))
    keys = instance_keys(ds)
    uri = bulkdata_uri_for(keys) if bulkdata_uri_for is not None else bulkdata_uri
    return SplitInstance(
        keys=keys,
        header=header,
        frames=tuple(frames),
        frames_transfer_syntax=frames_syntax,
        original_transfer_syntax=original,
        pixel=pixel,
        dataset_json=dataset_json(ds, bulkdata_uri=uri, transfer_syntax_uid=original),
    )


def _split_plain(
    plain: PlainFile,
    *,
    encode: bool,
    uri: BulkDataUri | None,
    uri_for: Callable[[InstanceKeys], BulkDataUri] | None,
) -> SplitInstance | None:
    """The split of a plain file, or None when its pixel data is padded (rare: the
    general way keeps the padding in the header)."""
    attributes = plain.attributes
    validate(attributes)
    pixel = pixel_description(attributes)
    assert pixel is not None  # a plain file ends with its Pixel Data
    if trailing_bytes(plain.pixel_data, pixel):
        return None
    keys = instance_keys(attributes)
    if uri_for is not None:
        uri = uri_for(keys)
    as_json = {_TRANSFER_SYNTAX_TAG: {"vr": "UI", "Value": [plain.transfer_syntax]}}
    as_json.update(plain.elements_json)
    if uri is not None:
        as_json[_PIXEL_TAG] = {"vr": plain.pixel_vr, "BulkDataURI": uri(_PIXEL_TAG)}
    frames, frames_syntax = _native(split_native(plain.pixel_data, pixel), pixel, encode=encode)
    return SplitInstance(
        keys=keys,
        header=plain.header,
        frames=tuple(frames),
        frames_transfer_syntax=frames_syntax,
        original_transfer_syntax=plain.transfer_syntax,
        pixel=pixel,
        dataset_json=as_json,
    )


def _frames(
    ds: Dataset, pixel: PixelDescription | None, original: str, *, encode: bool
) -> tuple[list[bytes], str, bytes]:
    """The frames as stored, their syntax, and what native pixel data holds after them."""
    if pixel is None:
        return [], original, b""
    if not is_native(original):
        return encapsulated_frames(ds), original, b""
    data = native_pixel_bytes(ds, pixel.pixel_keyword)
    frames, syntax = _native(split_native(data, pixel), pixel, encode=encode)
    return frames, syntax, trailing_bytes(data, pixel)


def _native(
    frames: Sequence[bytes | memoryview], pixel: PixelDescription, *, encode: bool
) -> tuple[list[bytes], str]:
    if encode and htj2k_encodable(pixel) and all(fits_bits_stored(f, pixel) for f in frames):
        return [encode_htj2k(frame, pixel) for frame in frames], HTJ2K_LOSSLESS
    return [bytes(frame) for frame in frames], EXPLICIT_VR_LITTLE_ENDIAN
