"""Putting a stored instance back together as a Part-10 file, or one frame, in a target syntax.

Two targets are always possible: the stored frames' own syntax (frames untouched, or a
syntax their codestreams are also valid in), and a native syntax (every frame decoded).
Anything else is refused with code "unsupported_transfer_syntax"; nothing is transcoded
between two compressed syntaxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import UID

from voxelhub.dicom.byteorder import pixel_word_bytes, swap_binary_values, swap_words
from voxelhub.dicom.codecs import decode_frame, decoded_description
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.frames import join_native
from voxelhub.dicom.header import pop_trailing, read_header, write_part10
from voxelhub.dicom.model import PixelDescription
from voxelhub.dicom.syntax import HTJ2K_SYNTAXES, can_serve_as, check_known, is_native

_MAX_BASIC_OFFSET = 2**32 - 1
_FLOAT_VRS = {"FloatPixelData": "OF", "DoubleFloatPixelData": "OD"}


def join_instance(
    header: bytes,
    frames: Sequence[bytes],
    frames_transfer_syntax: str,
    *,
    target_transfer_syntax: str,
    pixel: PixelDescription | None,
) -> bytes:
    """A Part-10 file of `header` and `frames` in `target_transfer_syntax`.

    What native pixel data held after its frames (kept in the header) follows them again
    in a native target; an encapsulated target has no place for it.
    """
    target = check_known(target_transfer_syntax)
    ds = read_header(header)
    source_syntax = str(ds.file_meta.TransferSyntaxUID)
    trailing = pop_trailing(ds, pixel.pixel_keyword) if pixel is not None else b""
    _change_encoding(ds, target)
    if pixel is None or not frames:
        return write_part10(ds)
    if len(frames) != pixel.number_of_frames:
        raise DicomError(
            f"{len(frames)} frames were given for an instance of {pixel.number_of_frames}.",
            code="pixel_data_mismatch",
            attribute="NumberOfFrames",
        )
    if is_native(target):
        _add_native_pixels(ds, frames, frames_transfer_syntax, pixel=pixel, trailing=trailing)
    elif can_serve_as(frames_transfer_syntax, target):
        _add_encapsulated_pixels(ds, frames, pixel)
        if is_native(source_syntax) and frames_transfer_syntax in HTJ2K_SYNTAXES:
            _describe_htj2k_of_native(ds, pixel)
    else:
        raise _unsupported(frames_transfer_syntax, target)
    return write_part10(ds)


def frame_for_transfer_syntax(
    frame: bytes, stored_transfer_syntax: str, target_transfer_syntax: str, pixel: PixelDescription
) -> bytes:
    """One stored frame as the WADO-RS /frames route returns it in the target syntax.

    Native targets get the bytes `codecs.decoded_description` describes.
    """
    target = check_known(target_transfer_syntax)
    if can_serve_as(stored_transfer_syntax, target):
        return frame
    if is_native(target) and target.is_little_endian:
        return decode_frame(frame, stored_transfer_syntax, pixel)
    raise _unsupported(stored_transfer_syntax, target)


def _change_encoding(ds: Dataset, target: UID) -> None:
    """Set the target syntax; pydicom re-encodes all but binary values, swapped here."""
    little = ds.original_encoding[1]
    ds.file_meta.TransferSyntaxUID = target
    if little is not None and little != target.is_little_endian:
        swap_binary_values(ds)


def _add_native_pixels(
    ds: Dataset,
    frames: Sequence[bytes],
    stored: str,
    *,
    pixel: PixelDescription,
    trailing: bytes = b"",
) -> None:
    out = decoded_description(pixel, stored)
    data = join_native([decode_frame(frame, stored, pixel) for frame in frames], out) + trailing
    if len(data) % 2:
        data += b"\0"
    vr = _FLOAT_VRS.get(pixel.pixel_keyword) or ("OB" if pixel.bits_allocated <= 8 else "OW")
    if not ds.file_meta.TransferSyntaxUID.is_little_endian:
        data = swap_words(data, pixel_word_bytes(pixel.bits_allocated, vr))
    _describe(ds, pixel, out)
    ds.add_new(pixel.pixel_keyword, vr, data)


def _add_encapsulated_pixels(ds: Dataset, frames: Sequence[bytes], pixel: PixelDescription) -> None:
    items = list(frames)
    if sum(len(frame) + 8 for frame in items) <= _MAX_BASIC_OFFSET:
        value = encapsulate(items, has_bot=True)
    else:  # a Basic Offset Table cannot point past 4 GiB (PS3.5 A.4)
        value, offsets, lengths = encapsulate_extended(items)
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    ds.add_new(pixel.pixel_keyword, "OB", value)
    ds[pixel.pixel_keyword].is_undefined_length = True


def _describe(ds: Dataset, pixel: PixelDescription, out: PixelDescription) -> None:
    """Update the Image Pixel attributes a decoder changed (YBR → RGB, planar → interleaved)."""
    if out.photometric_interpretation != pixel.photometric_interpretation:
        ds.PhotometricInterpretation = out.photometric_interpretation
    if out.samples_per_pixel > 1 and (
        "PlanarConfiguration" in ds or out.planar_configuration != pixel.planar_configuration
    ):
        ds.PlanarConfiguration = out.planar_configuration


def _describe_htj2k_of_native(ds: Dataset, pixel: PixelDescription) -> None:
    """HTJ2K frames made from planar native frames decode interleaved (PS3.5 8.2.4)."""
    if pixel.samples_per_pixel > 1 and pixel.planar_configuration == 1:
        _describe(ds, pixel, replace(pixel, planar_configuration=0))


def _unsupported(stored: str, target: str) -> DicomError:
    return DicomError(
        f"Frames stored as {stored} can be returned as that syntax or decoded to a native "
        f"one (e.g. 1.2.840.10008.1.2.1), not as {target}.",
        code="unsupported_transfer_syntax",
        attribute="TransferSyntaxUID",
    )
