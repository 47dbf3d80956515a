"""Taking a DICOM file apart for the image store: keys, header, frames and DICOM JSON.

>>> from voxelhub.dicom.header import write_part10
>>> from voxelhub.dicom.synthetic import ct_phantom
>>> split = split_instance(write_part10(ct_phantom(slices=1, size=32)[0]))
>>> split.frames_transfer_syntax, len(split.frames), split.pixel.rows
('1.2.840.10008.1.2.4.201', 1, 32)
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset

from voxelhub.dicom.byteorder import swap_binary_values
from voxelhub.dicom.codecs import encode_htj2k, fits_bits_stored, htj2k_encodable
from voxelhub.dicom.dicomjson import dataset_json
from voxelhub.dicom.frames import (
    PIXEL_KEYWORDS,
    encapsulated_frames,
    native_frames,
    pixel_description,
)
from voxelhub.dicom.header import header_of_file
from voxelhub.dicom.keys import instance_keys
from voxelhub.dicom.model import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    PixelDescription,
    SplitInstance,
)
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.syntax import is_native
from voxelhub.dicom.validate import validate


def split_instance(
    data: bytes,
    *,
    encode: bool = True,
    bulkdata_uri: Callable[[str], str] | None = None,
) -> SplitInstance:
    """`data` (a Part-10 file or bare dataset) read, validated and taken apart.

    Native frames become HTJ2K lossless when HTJ2K holds them bit for bit (and
    `encode`), else stay native little endian (big endian and deflated input
    included); frames that arrived compressed are kept untouched in their syntax.
    An instance without pixel data has no frames and keeps its own syntax.
    """
    ds = read_dataset(data)
    validate(ds)
    original = str(ds.file_meta.TransferSyntaxUID)
    pixel = pixel_description(ds)
    frames, frames_syntax = _frames(ds, pixel, original, encode=encode)
    header = header_of_file(data, ds)
    if ds.original_encoding[1] is False:
        # DICOM JSON binary values are little endian; the header above kept big endian.
        swap_binary_values(ds, skip=frozenset(PIXEL_KEYWORDS))
    return SplitInstance(
        keys=instance_keys(ds),
        header=header,
        frames=tuple(frames),
        frames_transfer_syntax=frames_syntax,
        original_transfer_syntax=original,
        pixel=pixel,
        dataset_json=dataset_json(ds, bulkdata_uri=bulkdata_uri, transfer_syntax_uid=original),
    )


def _frames(
    ds: Dataset, pixel: PixelDescription | None, original: str, *, encode: bool
) -> tuple[list[bytes], str]:
    if pixel is None:
        return [], original
    if not is_native(original):
        return encapsulated_frames(ds), original
    frames = native_frames(ds)
    if encode and htj2k_encodable(pixel) and all(fits_bits_stored(f, pixel) for f in frames):
        return [encode_htj2k(frame, pixel) for frame in frames], HTJ2K_LOSSLESS
    return frames, EXPLICIT_VR_LITTLE_ENDIAN
