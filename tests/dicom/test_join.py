"""Joining stored headers and frames into files and WADO-RS frames in a requested syntax."""

from __future__ import annotations

import warnings
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.dicom.helpers import assert_same_elements, sample_bytes
from voxelhub.dicom.codecs import decode_htj2k
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.frames import native_frames
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.join import frame_for_transfer_syntax, join_instance
from voxelhub.dicom.model import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    IMPLICIT_VR_LITTLE_ENDIAN,
    SplitInstance,
)
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_general, split_instance
from voxelhub.dicom.synthetic import ct_phantom

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
HTJ2K = "1.2.840.10008.1.2.4.203"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"


def _joined(split: SplitInstance, target: str) -> bytes:
    """The Part-10 file `split` rebuilds into in `target`."""
    return join_instance(
        split.header,
        split.frames,
        split.frames_transfer_syntax,
        target_transfer_syntax=target,
        pixel=split.pixel,
    )


def _join(split: SplitInstance, target: str) -> Dataset:
    return dcmread(BytesIO(_joined(split, target)))


def _ct_split() -> tuple[Dataset, SplitInstance]:
    ds = ct_phantom(slices=1, size=32)[0]
    return ds, split_instance(write_part10(ds))


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "color-pl.dcm",
        "SC_rgb_16bit_2frame.dcm",
        "MR_small_bigendian.dcm",
        "OBXXXX1A.dcm",
        "SC_ybr_full_uncompressed.dcm",
        "emri_small.dcm",
        "SC_rgb_small_odd.dcm",
    ],
)
def test_htj2k_files_made_from_native_frames_decode_in_pydicom(name: str) -> None:
    original = read_dataset(sample_bytes(name))
    split = split_instance(sample_bytes(name))
    assert split.frames_transfer_syntax == HTJ2K_LOSSLESS
    joined = _join(split, HTJ2K_LOSSLESS)
    assert joined.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    assert np.array_equal(joined.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    "target", [IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED, BIG_ENDIAN, HTJ2K], ids=str
)
def test_other_native_targets_and_compatible_syntaxes(target: str) -> None:
    ds, split = _ct_split()
    joined = _join(split, target)
    assert joined.file_meta.TransferSyntaxUID == target
    assert np.array_equal(joined.pixel_array, ds.pixel_array)
    assert_same_elements(read_dataset(write_part10(ds)), joined)


def test_compressed_target_other_than_stored_is_refused() -> None:
    _, split = _ct_split()
    with pytest.raises(DicomError) as caught:
        _join(split, JPEG_BASELINE)
    assert caught.value.code == "unsupported_transfer_syntax"
    assert JPEG_BASELINE in caught.value.message


def test_unknown_target_is_refused() -> None:
    _, split = _ct_split()
    with pytest.raises(DicomError) as caught:
        _join(split, "1.2.3.4")
    assert caught.value.code == "unsupported_transfer_syntax"


def test_wrong_number_of_frames_is_refused() -> None:
    _, split = _ct_split()
    with pytest.raises(DicomError) as caught:
        join_instance(
            split.header,
            split.frames * 2,
            split.frames_transfer_syntax,
            target_transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN,
            pixel=split.pixel,
        )
    assert caught.value.code == "pixel_data_mismatch"


def test_frames_for_wado() -> None:
    ds, split = _ct_split()
    assert split.pixel is not None
    (frame,) = split.frames
    native = bytes(ds.PixelData)
    assert frame_for_transfer_syntax(frame, HTJ2K_LOSSLESS, HTJ2K_LOSSLESS, split.pixel) == frame
    assert frame_for_transfer_syntax(frame, HTJ2K_LOSSLESS, HTJ2K, split.pixel) == frame
    for target in (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN):
        assert frame_for_transfer_syntax(frame, HTJ2K_LOSSLESS, target, split.pixel) == native
    with pytest.raises(DicomError) as caught:
        frame_for_transfer_syntax(frame, HTJ2K_LOSSLESS, JPEG_BASELINE, split.pixel)
    assert caught.value.code == "unsupported_transfer_syntax"


def test_jpeg_frames_for_wado_are_decoded_to_rgb() -> None:
    name = "SC_rgb_dcmtk_+eb+cy+s2.dcm"  # JPEG baseline, YBR_FULL_422
    split = split_instance(sample_bytes(name))
    assert split.pixel is not None
    (frame,) = split.frames
    assert frame_for_transfer_syntax(frame, JPEG_BASELINE, JPEG_BASELINE, split.pixel) == frame
    native = frame_for_transfer_syntax(frame, JPEG_BASELINE, EXPLICIT_VR_LITTLE_ENDIAN, split.pixel)
    expected = read_dataset(sample_bytes(name)).pixel_array  # pydicom converts to RGB
    assert native == expected.tobytes()
    joined = _join(split, EXPLICIT_VR_LITTLE_ENDIAN)
    assert joined.PhotometricInterpretation == "RGB"


def test_float_pixel_data_stays_native_and_comes_back() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    del ds.PixelData, ds.PixelRepresentation, ds.BitsStored, ds.HighBit
    ds.BitsAllocated = 32
    values = np.linspace(-1.5, 2.5, 64, dtype="<f4")
    ds.FloatPixelData = values.tobytes()
    split = split_instance(write_part10(ds))
    assert split.pixel is not None and split.pixel.pixel_keyword == "FloatPixelData"
    assert split.frames_transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
    assert "7FE00008" not in split.dataset_json  # bulk data is left out without a URI
    joined = _join(split, EXPLICIT_VR_LITTLE_ENDIAN)
    assert joined["FloatPixelData"].VR == "OF"
    assert np.array_equal(np.frombuffer(joined.FloatPixelData, "<f4"), values)


@pytest.mark.parametrize(
    "target", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED], ids=str
)
def test_non_image_objects_change_syntax(target: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = read_dataset(sample_bytes("test-SR.dcm"))
        split = split_instance(sample_bytes("test-SR.dcm"))
    assert split.pixel is None and split.frames == ()
    joined = _join(split, target)
    assert joined.file_meta.TransferSyntaxUID == target
    assert_same_elements(original, joined)


def test_encoding_can_be_turned_off() -> None:
    ds = ct_phantom(slices=1, size=32)[0]
    split = split_instance(write_part10(ds), encode=False)
    assert split.frames_transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
    assert split.frames == (bytes(ds.PixelData),)
    assert _join(split, EXPLICIT_VR_LITTLE_ENDIAN).PixelData == ds.PixelData


def _pixel_element(data: bytes) -> bytes:
    """The Pixel Data element of a Part-10 file, as its bytes in the file."""
    ds = dcmread(BytesIO(data))
    elem = ds["PixelData"]
    start = elem.file_tell - (8 if ds.original_encoding[0] else 12)
    return data[start : elem.file_tell + len(elem.value)]


def test_padded_pixel_data_comes_back_bit_for_bit() -> None:
    data = sample_bytes("MR_small_padded.dcm")  # 128 bytes of padding after its frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the excess pixel data
        original = read_dataset(data)
        split = split_instance(data)
        assert split.pixel is not None and split.frames_transfer_syntax == HTJ2K_LOSSLESS
        length = len(original.PixelData) - 128
        assert decode_htj2k(split.frames[0], split.pixel) == original.PixelData[:length]
        native = _joined(split, split.original_transfer_syntax)
        assert _pixel_element(native) == _pixel_element(data)
        assert_same_elements(original, dcmread(BytesIO(native)))
        stored = _join(split, HTJ2K_LOSSLESS)  # re-encoded frames: no place for padding
        assert np.array_equal(stored.pixel_array, original.pixel_array)
        assert_same_elements(original, stored)


@pytest.mark.parametrize("extra", [4, 3, 130], ids=["4 bytes", "3 bytes", "130 bytes"])
@pytest.mark.parametrize(
    "syntax", [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, BIG_ENDIAN], ids=str
)
def test_padding_after_the_frames_is_kept_in_the_header(syntax: str, extra: int) -> None:
    ds = ct_phantom(slices=1, size=16)[0]
    ds.PixelData = bytes(ds.PixelData) + bytes(range(1, extra + 1))
    ds.file_meta.TransferSyntaxUID = syntax
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = write_part10(ds)
        original = read_dataset(data)
        split = split_instance(data, encode=False)
        assert split == split_general(data, encode=False)
        assert split.frames == tuple(native_frames(original))
        assert len(split.frames[0]) == 16 * 16 * 2
        joined = _joined(split, syntax)
        assert _pixel_element(joined) == _pixel_element(data)
        assert_same_elements(original, dcmread(BytesIO(joined)))
