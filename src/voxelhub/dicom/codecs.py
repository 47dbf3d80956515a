"""Frame codecs: HTJ2K lossless for native frames, and decoding any stored syntax to native.

Native frame bytes are laid out exactly as DICOM lays them out: little endian, samples
interleaved or planar per PlanarConfiguration, signed per PixelRepresentation.

Decoding a compressed frame can change its photometric interpretation: JPEG, JPEG-LS,
JPEG 2000 and RLE colour frames in a YBR colour space are returned as RGB, samples
interleaved, as pydicom's `pixel_array` returns them (native YBR_FULL_422 would need the
chroma subsampled again, and lossy JPEG frames are YBR_FULL_422 only inside the codec).
`decoded_description` says which layout `decode_frame` returns; a native file built
from decoded frames must carry that description.

>>> from voxelhub.dicom.model import PixelDescription
>>> ct = PixelDescription(512, 512, 1, 16, 12, 0, "MONOCHROME2")
>>> htj2k_encodable(ct)
True
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
from pydicom import uid
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import PixelDescription
from voxelhub.dicom.syntax import ENCAPSULATED_UNCOMPRESSED, HTJ2K_SYNTAXES, is_native

_HTJ2K_PHOTOMETRICS = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})
# Colour spaces that a codec (or pydicom's as_rgb) turns into RGB when decoding.
_TO_RGB = frozenset(
    {"YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}
)
# HTJ2K applies the inverse colour transform itself; other YBR stay as stored.
_HTJ2K_TO_RGB = frozenset({"YBR_ICT", "YBR_RCT"})


def htj2k_encodable(pixel: PixelDescription) -> bool:
    """Whether HTJ2K can hold these frames losslessly, bit for bit.

    8- and 16-bit integer samples, one or three per pixel, not subsampled. 1-bit, 32-bit
    and floating point frames, and native YBR_FULL_422, stay native.
    """
    return (
        pixel.pixel_keyword == "PixelData"
        and pixel.bits_allocated in (8, 16)
        and pixel.samples_per_pixel in (1, 3)
        and pixel.photometric_interpretation in _HTJ2K_PHOTOMETRICS
    )


def fits_bits_stored(frame: bytes | memoryview, pixel: PixelDescription) -> bool:
    """Whether every sample of a native frame is a value of BitsStored bits.

    Bits above BitsStored (old overlays, unextended signs) survive HTJ2K, but a J2K
    decoder would read them as part of the value where a native reader masks them, so
    such frames are better kept native.
    """
    stored = pixel.bits_stored
    if stored >= pixel.bits_allocated:
        return True
    samples = np.frombuffer(frame, dtype=numpy_dtype(pixel), count=len(frame) // _itemsize(pixel))
    if samples.size == 0:
        return True
    if pixel.pixel_representation == 1:
        low, high = -(1 << (stored - 1)), (1 << (stored - 1)) - 1
    else:
        low, high = 0, (1 << stored) - 1
    return bool(samples.min() >= low and samples.max() <= high)


_htj2k_warm = threading.Event()
_htj2k_warming = threading.Lock()


def _warm_up_htj2k() -> None:
    """Encode and decode a tiny image once per process, alone, before any other HTJ2K work.

    The HTJ2K codec (OpenJPH, inside imagecodecs) fills its block coder's tables on first
    use without a lock. Threads that encode at once in a fresh process can fill them while
    another already codes with them, and that codestream comes out corrupt: about one
    process in 70 with 4 threads encoding their first frames (a stored frame that no longer
    decodes, or a re-sent instance judged different from itself). Done once, up front, no
    race is left.
    """
    if _htj2k_warm.is_set():
        return
    with _htj2k_warming:
        if _htj2k_warm.is_set():
            return
        for dtype in (np.uint8, np.uint16):
            sample = np.arange(64, dtype=dtype).reshape(8, 8)
            encoded = imagecodecs.htj2k_encode(sample, rgb=False, planar=False, reversible=True)
            imagecodecs.htj2k_decode(encoded)
        _htj2k_warm.set()


def encode_htj2k(frame: bytes | memoryview, pixel: PixelDescription) -> bytes:
    """One native frame as a lossless HTJ2K codestream (no colour transform).

    The full BitsAllocated precision is coded, so bits above BitsStored survive too.
    """
    if not htj2k_encodable(pixel):
        raise DicomError(
            f"HTJ2K cannot hold {pixel.bits_allocated}-bit {pixel.photometric_interpretation} "
            "frames losslessly; keep them native.",
            code="unsupported_transfer_syntax",
        )
    planar = pixel.samples_per_pixel > 1 and pixel.planar_configuration == 1
    array = _frame_array(frame, pixel, planar=planar)
    _warm_up_htj2k()
    return bytes(imagecodecs.htj2k_encode(array, rgb=False, planar=planar, reversible=True))


def decode_htj2k(data: bytes, pixel: PixelDescription) -> bytes:
    """An HTJ2K codestream as native frame bytes laid out as `pixel` says."""
    planar = pixel.samples_per_pixel > 1 and pixel.planar_configuration == 1
    _warm_up_htj2k()
    try:
        array = imagecodecs.htj2k_decode(data, planar=planar)
    except Exception as err:  # imagecodecs raises its own error types
        raise _undecodable("HTJ2K", err) from err
    return _native_bytes(array, pixel)


def decoded_description(pixel: PixelDescription, transfer_syntax: str) -> PixelDescription:
    """The layout `decode_frame` returns for frames of `pixel` stored in `transfer_syntax`."""
    if is_native(transfer_syntax) or transfer_syntax == ENCAPSULATED_UNCOMPRESSED:
        return pixel
    photometric = pixel.photometric_interpretation
    if transfer_syntax in HTJ2K_SYNTAXES:
        if photometric in _HTJ2K_TO_RGB:
            return replace(pixel, photometric_interpretation="RGB")
        return pixel
    if pixel.samples_per_pixel > 1:
        rgb = "RGB" if photometric in _TO_RGB else photometric
        return replace(pixel, photometric_interpretation=rgb, planar_configuration=0)
    return pixel


def decode_frame(frame: bytes, transfer_syntax: str, pixel: PixelDescription) -> bytes:
    """One frame stored in `transfer_syntax` as native bytes (see `decoded_description`)."""
    if is_native(transfer_syntax):
        return frame
    if transfer_syntax == ENCAPSULATED_UNCOMPRESSED:
        return frame[: pixel.frame_bytes]
    target = decoded_description(pixel, transfer_syntax)
    if transfer_syntax in HTJ2K_SYNTAXES:
        return decode_htj2k(frame, target)
    return _decode_with_pydicom(frame, transfer_syntax, pixel, target)


class _QuietWhileDecoding(logging.Filter):
    """Drops what pydicom's decoders log (each failed plugin's traceback, at ERROR) while a
    frame is decoded here: the failure is ours to handle, and is raised as a DicomError
    that says what went wrong, or met by the 12-bit JPEG fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "decoding", False)


_quiet = _QuietWhileDecoding()
logging.getLogger("pydicom.pixels.decoders.base").addFilter(_quiet)


def _decode_with_pydicom(
    frame: bytes, transfer_syntax: str, pixel: PixelDescription, target: PixelDescription
) -> bytes:
    _quiet.active.decoding = True
    try:
        return _decode_with_pydicom_plugins(frame, transfer_syntax, pixel, target)
    finally:
        _quiet.active.decoding = False


def _decode_with_pydicom_plugins(
    frame: bytes, transfer_syntax: str, pixel: PixelDescription, target: PixelDescription
) -> bytes:
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as err:
        raise _unsupported(transfer_syntax) from err
    if not decoder.is_available:
        raise _unsupported(transfer_syntax)
    try:
        array, _ = decoder.as_array(encapsulate([frame]), index=0, **_decode_options(pixel))
    except Exception as err:  # the decoder plugins raise their own error types
        if not _twelve_bit_jpeg(transfer_syntax, pixel):
            raise _undecodable(transfer_syntax, err) from err
        # pydicom's plugins read no 12-bit JPEG (Pillow) or refuse some that old equipment
        # wrote (libjpeg); libjpeg-turbo, built with 12-bit support in imagecodecs, reads them.
        try:
            array = imagecodecs.jpeg8_decode(frame)
        except Exception as second:
            raise _undecodable(transfer_syntax, second) from err
    return _native_bytes(array, target)


def _twelve_bit_jpeg(transfer_syntax: str, pixel: PixelDescription) -> bool:
    """Unsigned greyscale JPEG Extended (Process 2 & 4) with more than 8 bits a sample."""
    return (
        transfer_syntax == uid.JPEGExtended12Bit
        and pixel.samples_per_pixel == 1
        and pixel.pixel_representation == 0
        and 8 < pixel.bits_stored <= 12
    )


def _decode_options(pixel: PixelDescription) -> Any:
    # pydicom types **kwargs as its DecodeOptions TypedDict without Unpack.
    return {
        "as_rgb": True,
        "rows": pixel.rows,
        "columns": pixel.columns,
        "samples_per_pixel": pixel.samples_per_pixel,
        "bits_allocated": pixel.bits_allocated,
        "bits_stored": pixel.bits_stored,
        "pixel_representation": pixel.pixel_representation,
        "photometric_interpretation": pixel.photometric_interpretation,
        "planar_configuration": pixel.planar_configuration,
        "number_of_frames": 1,
    }


def numpy_dtype(pixel: PixelDescription) -> np.dtype[np.generic]:
    """The little endian numpy type of one sample of `pixel`."""
    if pixel.pixel_keyword == "FloatPixelData":
        return np.dtype("<f4")
    if pixel.pixel_keyword == "DoubleFloatPixelData":
        return np.dtype("<f8")
    if pixel.bits_allocated == 1:
        return np.dtype("u1")
    kind = "i" if pixel.pixel_representation == 1 else "u"
    return np.dtype(f"<{kind}{pixel.bits_allocated // 8}")


def _itemsize(pixel: PixelDescription) -> int:
    return numpy_dtype(pixel).itemsize


def _frame_array(
    frame: bytes | memoryview, pixel: PixelDescription, *, planar: bool
) -> npt.NDArray[np.generic]:
    rows, columns, samples = pixel.rows, pixel.columns, pixel.samples_per_pixel
    count = rows * columns * samples
    if len(frame) < count * numpy_dtype(pixel).itemsize:
        raise DicomError(
            f"A frame has {len(frame)} bytes; {rows} x {columns} x {samples} samples of "
            f"{pixel.bits_allocated} bits need {count * numpy_dtype(pixel).itemsize}.",
            code="pixel_data_mismatch",
            attribute="PixelData",
        )
    flat = np.frombuffer(frame, dtype=numpy_dtype(pixel), count=count)
    if samples == 1:
        return flat.reshape(rows, columns)
    if planar:
        return flat.reshape(samples, rows, columns)
    return flat.reshape(rows, columns, samples)


def _native_bytes(array: npt.NDArray[np.generic], pixel: PixelDescription) -> bytes:
    """Decoded samples in the dtype and size `pixel` describes, as bytes.

    A codec may return a narrower or differently signed integer type than BitsAllocated
    and PixelRepresentation say (e.g. 8-bit precision in a 16-bit container); the
    values are widened, and a sign difference keeps the bits.
    """
    out = np.ascontiguousarray(array).astype(numpy_dtype(pixel), copy=False)
    expected = pixel.rows * pixel.columns * pixel.samples_per_pixel
    if out.size != expected:
        raise DicomError(
            f"A decoded frame has {out.size} samples; {pixel.rows} x {pixel.columns} x "
            f"{pixel.samples_per_pixel} were expected.",
            code="pixel_data_mismatch",
            attribute="PixelData",
        )
    return out.tobytes()


def _unsupported(transfer_syntax: str) -> DicomError:
    return DicomError(
        f"No installed decoder can decode transfer syntax {transfer_syntax}; ask for the "
        "stored transfer syntax instead.",
        code="unsupported_transfer_syntax",
    )


def _undecodable(what: str, err: Exception) -> DicomError:
    return DicomError(
        f"A frame could not be decoded as {what} ({err}); the pixel data is corrupt.",
        code="undecodable",
        attribute="PixelData",
    )
