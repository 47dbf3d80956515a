"""Frame codecs: HTJ2K lossless encoding of native frames and decoding stored frames to native."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import imagecodecs
import numpy as np
import pytest

from tests.dicom.helpers import sample_bytes
from voxelhub.dicom.codecs import (
    decode_frame,
    decode_htj2k,
    decoded_description,
    encode_htj2k,
    fits_bits_stored,
    htj2k_encodable,
)
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.frames import encapsulated_frames, native_frames, pixel_description
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, HTJ2K_LOSSLESS, PixelDescription
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.synthetic import ct_phantom

MONO16 = PixelDescription(32, 24, 1, 16, 16, 0, "MONOCHROME2")
MONO8 = replace(MONO16, bits_allocated=8, bits_stored=8)
RGB8 = replace(MONO8, samples_per_pixel=3, photometric_interpretation="RGB")

ENCODABLE = {
    "uint16": MONO16,
    "int16": replace(MONO16, pixel_representation=1),
    "uint8": MONO8,
    "int8": replace(MONO8, pixel_representation=1),
    "rgb8": RGB8,
    "rgb8 planar": replace(RGB8, planar_configuration=1),
    "rgb16": replace(MONO16, samples_per_pixel=3, photometric_interpretation="RGB"),
    "ybr_full": replace(RGB8, photometric_interpretation="YBR_FULL"),
    "1x1": replace(MONO16, rows=1, columns=1),
    "3x5": replace(MONO8, rows=3, columns=5),
}
NOT_ENCODABLE = {
    "1 bit": replace(MONO16, bits_allocated=1, bits_stored=1),
    "32 bit": replace(MONO16, bits_allocated=32, bits_stored=32),
    "float": replace(MONO16, bits_allocated=32, bits_stored=32, pixel_keyword="FloatPixelData"),
    "double": replace(
        MONO16, bits_allocated=64, bits_stored=64, pixel_keyword="DoubleFloatPixelData"
    ),
    "ybr_full_422": replace(RGB8, photometric_interpretation="YBR_FULL_422"),
    "4 samples": replace(MONO8, samples_per_pixel=4, photometric_interpretation="ARGB"),
}


@pytest.mark.parametrize("pixel", ENCODABLE.values(), ids=ENCODABLE.keys())
def test_htj2k_round_trip_is_bit_exact(pixel: PixelDescription) -> None:
    frame = np.random.default_rng(7).bytes(pixel.frame_bytes)
    assert htj2k_encodable(pixel)
    encoded = encode_htj2k(frame, pixel)
    assert encoded[:4] == b"\xff\x4f\xff\x51"  # a raw J2K codestream (SOC, SIZ), not JP2
    assert decode_htj2k(encoded, pixel) == frame
    assert decode_frame(encoded, HTJ2K_LOSSLESS, pixel) == frame


@pytest.mark.parametrize("pixel", NOT_ENCODABLE.values(), ids=NOT_ENCODABLE.keys())
def test_layouts_htj2k_cannot_hold_stay_native(pixel: PixelDescription) -> None:
    assert not htj2k_encodable(pixel)
    with pytest.raises(DicomError) as caught:
        encode_htj2k(bytes(pixel.frame_bytes), pixel)
    assert caught.value.code == "unsupported_transfer_syntax"


def test_synthetic_ct_frames_are_smaller_in_htj2k_and_exact() -> None:
    series = ct_phantom(slices=2, size=512)
    for ds in series:
        split = split_instance(write_part10(ds))
        assert split.frames_transfer_syntax == HTJ2K_LOSSLESS
        assert split.pixel is not None and split.pixel.rows == 512
        (frame,) = split.frames
        native = bytes(ds.PixelData)
        assert len(frame) < len(native) / 2
        assert decode_htj2k(frame, split.pixel) == native


def test_frames_with_bits_above_bits_stored_stay_native() -> None:
    pixel = replace(MONO16, bits_stored=12)
    clean = np.full(pixel.rows * pixel.columns, 4095, dtype="<u2").tobytes()
    dirty = np.full(pixel.rows * pixel.columns, 4096, dtype="<u2").tobytes()
    assert fits_bits_stored(clean, pixel)
    assert not fits_bits_stored(dirty, pixel)
    signed = replace(pixel, pixel_representation=1)
    assert fits_bits_stored(np.full(10, -2048, dtype="<i2").tobytes(), signed)
    assert not fits_bits_stored(np.full(10, 2048, dtype="<i2").tobytes(), signed)
    split = split_instance(sample_bytes("mlut_18.dcm"))  # 12-bit signed, values up to 4095
    assert split.frames_transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN


@pytest.mark.parametrize(
    ("photometric", "syntax", "expected"),
    [
        ("YBR_FULL_422", "1.2.840.10008.1.2.4.50", "RGB"),
        ("YBR_FULL", "1.2.840.10008.1.2.4.50", "RGB"),
        ("YBR_RCT", "1.2.840.10008.1.2.4.90", "RGB"),
        ("YBR_ICT", "1.2.840.10008.1.2.4.91", "RGB"),
        ("YBR_FULL", "1.2.840.10008.1.2.5", "RGB"),
        ("RGB", "1.2.840.10008.1.2.4.70", "RGB"),
        ("YBR_RCT", HTJ2K_LOSSLESS, "RGB"),
        ("YBR_FULL", HTJ2K_LOSSLESS, "YBR_FULL"),
        ("YBR_FULL_422", EXPLICIT_VR_LITTLE_ENDIAN, "YBR_FULL_422"),
    ],
)
def test_decoded_description_says_what_decoding_returns(
    photometric: str, syntax: str, expected: str
) -> None:
    pixel = PixelDescription(8, 8, 3, 8, 8, 0, photometric, planar_configuration=1)
    out = decoded_description(pixel, syntax)
    assert out.photometric_interpretation == expected
    if syntax not in (HTJ2K_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN):
        assert out.planar_configuration == 0


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
        "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, RGB
        "US1_J2KR.dcm",  # JPEG 2000 lossless, YBR_RCT
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, signed 16 bit
        "SC_rgb_rle_16bit.dcm",  # RLE, 16-bit RGB
        "JPGExtended.dcm",  # JPEG extended, 12 bit
    ],
)
def test_decode_frame_matches_pydicom(name: str) -> None:
    ds = read_dataset(sample_bytes(name))
    split = split_instance(sample_bytes(name))
    assert split.pixel is not None
    out = decoded_description(split.pixel, split.frames_transfer_syntax)
    decoded = decode_frame(split.frames[0], split.frames_transfer_syntax, split.pixel)
    assert len(decoded) == out.frame_bytes
    expected = ds.pixel_array
    if out.number_of_frames > 1:
        expected = expected[0]
    dtype = np.dtype(f"<{'i' if out.pixel_representation else 'u'}{out.bits_allocated // 8}")
    assert np.array_equal(np.frombuffer(decoded, dtype=dtype).reshape(expected.shape), expected)


def test_native_frames_pass_through_decode() -> None:
    ds = read_dataset(sample_bytes("SC_ybr_full_422_uncompressed.dcm"))
    pixel = pixel_description(ds)
    assert pixel is not None
    (frame,) = native_frames(ds)
    assert len(frame) == pixel.frame_bytes == pixel.rows * pixel.columns * 2
    assert decode_frame(frame, EXPLICIT_VR_LITTLE_ENDIAN, pixel) == frame


def test_unknown_or_undecodable_syntaxes_are_refused() -> None:
    with pytest.raises(DicomError) as caught:
        decode_frame(b"\0" * 10, "1.2.840.10008.1.2.4.100", MONO16)  # MPEG-2
    assert caught.value.code == "unsupported_transfer_syntax"
    with pytest.raises(DicomError) as caught:
        decode_frame(b"\xff\xd8 not a jpeg", "1.2.840.10008.1.2.4.70", MONO16)
    assert caught.value.code == "undecodable"
    with pytest.raises(DicomError) as caught:
        decode_htj2k(b"\xff\x4f garbage", MONO16)
    assert caught.value.code == "undecodable"


# A fresh process whose threads all encode their first frames at once: the codec's tables
# are filled on first use, and without the warm-up one process in about 40 (8 threads)
# wrote a corrupt codestream.
_FIRST_ENCODES = """
import sys, threading
import imagecodecs
import numpy as np
from voxelhub.dicom.codecs import decode_htj2k, encode_htj2k
from voxelhub.dicom.model import PixelDescription

pixel = PixelDescription(128, 128, 1, 16, 12, 0, "MONOCHROME2")
y, x = np.mgrid[0:128, 0:128]
frame = ((np.sin(x / 7) + np.cos(y / 5)) * 800 + 1000 + (x * y) % 37).astype(np.uint16).tobytes()
start = threading.Barrier(8)
encoded = [b""] * 8

def encode(index):
    start.wait()
    encoded[index] = encode_htj2k(frame, pixel)

threads = [threading.Thread(target=encode, args=(i,)) for i in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
reference = encode_htj2k(frame, pixel)
good = all(e == reference and decode_htj2k(e, pixel) == frame for e in encoded)
sys.exit(0 if good else 1)
"""


@pytest.mark.slow
def test_threads_encoding_at_once_in_a_fresh_process_agree() -> None:
    def run(_: int) -> int:
        command = [sys.executable, "-c", _FIRST_ENCODES]
        return subprocess.run(command, check=False, timeout=120).returncode

    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = list(pool.map(run, range(60)))
    assert codes.count(0) == len(codes), f"{len(codes) - codes.count(0)} of 60 processes differ"


JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"


def test_twelve_bit_jpeg_is_decoded() -> None:
    """12-bit JPEG Extended, common in old CT and MR archives, which pydicom's plugins do
    not read here: a 12-bit frame encoded by libjpeg-turbo decodes to within JPEG's error,
    and pydicom's 12-bit sample file decodes to 12-bit values."""
    y, x = np.mgrid[:24, :32]
    samples = ((np.sin(x / 5) + np.cos(y / 7) + 2) * 1000).astype(np.uint16)
    pixel = replace(MONO16, bits_stored=12)
    frame = bytes(imagecodecs.jpeg8_encode(samples, level=95))
    decoded = np.frombuffer(decode_frame(frame, JPEG_EXTENDED, pixel), dtype="<u2")
    assert np.abs(decoded.reshape(24, 32).astype(int) - samples).max() <= 8

    ds = read_dataset(sample_bytes("JPEG-lossy.dcm"))
    stored = pixel_description(ds)
    assert stored is not None and stored.bits_stored == 12
    (first,) = encapsulated_frames(ds)
    image = np.frombuffer(decode_frame(first, JPEG_EXTENDED, stored), dtype="<u2")
    assert image.size == stored.rows * stored.columns
    assert image.max() < 4096 and image.std() > 10
