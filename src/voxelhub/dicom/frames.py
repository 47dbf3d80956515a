"""Pixel layout of an instance and its pixel data cut into frames (native or encapsulated).

Native frames are little endian bytes exactly as DICOM lays them out. Bit-packed
(BitsAllocated 1) frames need not start on a byte boundary in the pixel data; each
frame is taken out on its own and starts at bit 0 of its first byte (unused bits of its
last byte zero), and `join_native` packs them back bit after bit, so the joined pixel
data is bit-identical to the original (up to the padding bits after the last pixel).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from voxelhub.dicom.attributes import Attributes
from voxelhub.dicom.byteorder import pixel_word_bytes, swap_words
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import PixelDescription

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Tags that describe the encapsulation of the pixel data; they belong to the frames.
ENCAPSULATION_KEYWORDS = ("ExtendedOffsetTable", "ExtendedOffsetTableLengths")


def pixel_element_keyword(ds: Attributes) -> str | None:
    """Which pixel data element `ds` holds (integer, float or double), or None."""
    return next((keyword for keyword in PIXEL_KEYWORDS if keyword in ds), None)


def pixel_description(ds: Attributes) -> PixelDescription | None:
    """The pixel layout of a validated dataset, or None when it holds no pixel data.

    >>> from voxelhub.dicom.synthetic import ct_phantom
    >>> pixel_description(ct_phantom(slices=1, size=8)[0]).frame_bytes
    128
    """
    keyword = pixel_element_keyword(ds)
    if keyword is None:
        return None
    bits = int(ds.BitsAllocated)
    samples = int(ds.SamplesPerPixel)
    return PixelDescription(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=samples,
        bits_allocated=bits,
        bits_stored=int(ds.get("BitsStored") or bits),
        pixel_representation=int(ds.get("PixelRepresentation") or 0),
        photometric_interpretation=str(ds.get("PhotometricInterpretation", "")).strip(),
        planar_configuration=int(ds.get("PlanarConfiguration") or 0) if samples > 1 else 0,
        number_of_frames=int(ds.get("NumberOfFrames") or 1),
        pixel_keyword=keyword,
    )


def native_pixel_bytes(ds: Dataset, keyword: str) -> bytes:
    """The native pixel data of `ds` as little endian bytes (big endian input swapped)."""
    elem = ds[keyword]
    data = bytes(elem.value)
    if ds.original_encoding[1] is False:
        data = swap_words(data, pixel_word_bytes(int(ds.BitsAllocated), elem.VR))
    return data


def native_frames(ds: Dataset) -> list[bytes]:
    """The frames of the native pixel data of a validated dataset (little endian)."""
    pixel = pixel_description(ds)
    if pixel is None:
        return []
    return [
        bytes(frame) for frame in split_native(native_pixel_bytes(ds, pixel.pixel_keyword), pixel)
    ]


def native_length(pixel: PixelDescription) -> int:
    """Bytes the frames of native pixel data take together (before any padding).

    >>> from voxelhub.dicom.model import PixelDescription
    >>> native_length(PixelDescription(64, 64, 1, 16, 12, 0, "MONOCHROME2"))
    8192
    """
    if pixel.bits_allocated == 1:
        return (_frame_bits(pixel) * pixel.number_of_frames + 7) // 8
    return pixel.frame_bytes * pixel.number_of_frames


def trailing_bytes(data: bytes | memoryview, pixel: PixelDescription) -> bytes:
    """What native pixel data holds after its frames, beyond the one byte that makes an
    odd length even (that byte is written again as zero); empty when nothing more.

    Some modalities pad the value (pydicom's MR_small_padded.dcm has 128 bytes more).
    The bytes are kept so that the value can be rebuilt bit for bit.
    """
    length = native_length(pixel)
    if len(data) <= length + length % 2:
        return b""
    return bytes(data[length:])


def split_native(data: bytes | memoryview, pixel: PixelDescription) -> list[bytes | memoryview]:
    """Native pixel data cut into `pixel.number_of_frames` frames (padding dropped).

    Byte-aligned frames are slices of `data`: views of a view, never copies of it.
    """
    size, count = pixel.frame_bytes, pixel.number_of_frames
    bits = _frame_bits(pixel)
    if pixel.bits_allocated != 1 or bits % 8 == 0:
        return [data[index * size : (index + 1) * size] for index in range(count)]
    unpacked = np.unpackbits(
        np.frombuffer(data, dtype=np.uint8), bitorder="little", count=bits * count
    )
    return [
        np.packbits(unpacked[index * bits : (index + 1) * bits], bitorder="little").tobytes()
        for index in range(count)
    ]


def join_native(frames: list[bytes], pixel: PixelDescription) -> bytes:
    """Frames made by `split_native` joined into one native pixel data value (unpadded)."""
    bits = _frame_bits(pixel)
    if pixel.bits_allocated != 1 or bits % 8 == 0:
        return b"".join(frames)
    unpacked = [
        np.unpackbits(np.frombuffer(frame, dtype=np.uint8), bitorder="little", count=bits)
        for frame in frames
    ]
    return np.packbits(np.concatenate(unpacked), bitorder="little").tobytes()


def encapsulated_frames(ds: Dataset) -> list[bytes]:
    """The compressed frames of encapsulated pixel data, each untouched.

    Frame boundaries come from the Extended Offset Table when present, else the
    Basic Offset Table, else one fragment per frame (or all fragments for one frame).
    """
    pixel = pixel_description(ds)
    if pixel is None:
        return []
    offsets = None
    if all(keyword in ds for keyword in ENCAPSULATION_KEYWORDS):
        offsets = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
    try:
        frames = list(
            generate_frames(
                ds[pixel.pixel_keyword].value,
                number_of_frames=pixel.number_of_frames,
                extended_offsets=offsets,
            )
        )
    except (ValueError, EOFError, OSError) as err:
        raise DicomError(
            f"The encapsulated pixel data cannot be split into frames ({err}).",
            code="pixel_data_mismatch",
            attribute=pixel.pixel_keyword,
        ) from err
    if len(frames) != pixel.number_of_frames:
        raise DicomError(
            f"The encapsulated pixel data holds {len(frames)} frames but NumberOfFrames "
            f"is {pixel.number_of_frames}.",
            code="pixel_data_mismatch",
            attribute="NumberOfFrames",
        )
    return frames


def _frame_bits(pixel: PixelDescription) -> int:
    return pixel.rows * pixel.columns * pixel.samples_per_pixel * pixel.bits_allocated
