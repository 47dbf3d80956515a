"""Validation: UIDs, image attributes, sizes and pixel data length, each named in the error."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from tests.dicom.helpers import sample_bytes
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.dicom.validate import validate

# The tests set invalid values on purpose; pydicom warns about each.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.valuerep")


def _ct() -> Dataset:
    return ct_phantom(slices=1, size=16)[0]


def _split_error(ds: Dataset) -> DicomError:
    buffer = BytesIO()
    dcmwrite(buffer, ds)  # as it is, with no attribute filled in
    with pytest.raises(DicomError) as caught:
        split_instance(buffer.getvalue())
    return caught.value


@pytest.mark.parametrize(
    "keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"]
)
def test_missing_uid_is_named(keyword: str) -> None:
    ds = _ct()
    delattr(ds, keyword)
    error = _split_error(ds)
    assert (error.code, error.attribute) == ("missing_attribute", keyword)
    assert keyword in error.message


@pytest.mark.parametrize(
    "value",
    ["1.2.abc", "1..2", "1.2.", ".1.2", "1." + "2" * 63, "1.2 3"],
    ids=["letters", "empty component", "trailing dot", "leading dot", "65 chars", "space"],
)
def test_invalid_uid_is_named(value: str) -> None:
    ds = _ct()
    ds.SeriesInstanceUID = value
    with pytest.raises(DicomError) as caught:
        validate(ds)
    assert (caught.value.code, caught.value.attribute) == ("invalid_attribute", "SeriesInstanceUID")
    assert "SeriesInstanceUID" in caught.value.message


def _short_pixels(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[:-2]


def _more_frames(ds: Dataset) -> None:
    ds.NumberOfFrames = 2


def _odd_short_pixels(ds: Dataset) -> None:
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 3, 8, 8, 7
    ds.PixelData = bytes(range(8))


@pytest.mark.parametrize(
    "change", [_short_pixels, _more_frames, _odd_short_pixels], ids=["short", "frames", "odd"]
)
def test_native_pixel_data_shorter_than_its_frames_is_refused(
    change: Callable[[Dataset], None],
) -> None:
    ds = _ct()
    change(ds)
    error = _split_error(ds)
    assert (error.code, error.attribute) == ("pixel_data_mismatch", "PixelData")
    assert "PixelData" in error.message and "Rows" in error.message


@pytest.mark.parametrize("extra", [1, 2, 4, 128])
def test_padding_after_the_frames_is_allowed(extra: int) -> None:
    ds = _ct()
    ds.PixelData = ds.PixelData + bytes(extra)
    validate(ds)


def test_one_padding_byte_is_allowed() -> None:
    ds = _ct()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 3, 8, 8, 7
    ds.PixelData = bytes(range(9)) + b"\0"
    validate(ds)


def _absurd_frames(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 1000


def _absurd_rows(ds: Dataset) -> None:
    ds.Rows = 70000


def _absurd_frame_count(ds: Dataset) -> None:
    ds.NumberOfFrames = 100000


@pytest.mark.parametrize(
    ("change", "attribute"),
    [
        (_absurd_frames, "PixelData"),
        (_absurd_rows, "Rows"),
        (_absurd_frame_count, "NumberOfFrames"),
    ],
    ids=["8 TiB of pixels", "70000 rows", "100000 frames"],
)
def test_absurd_dimensions_are_too_large(change: Callable[[Dataset], None], attribute: str) -> None:
    ds = _ct()
    change(ds)
    with pytest.raises(DicomError) as caught:
        validate(ds)
    assert (caught.value.code, caught.value.attribute) == ("too_large", attribute)
    assert attribute in caught.value.message


def test_absurd_dimensions_in_a_file_are_too_large() -> None:
    ds = _ct()
    _absurd_frames(ds)
    error = _split_error(ds)
    assert error.code == "too_large"


@pytest.mark.parametrize(
    ("keyword", "value", "code"),
    [
        ("Rows", None, "missing_attribute"),
        ("BitsAllocated", None, "missing_attribute"),
        ("SamplesPerPixel", None, "missing_attribute"),
        ("Columns", 0, "invalid_attribute"),
        ("BitsAllocated", 12, "invalid_attribute"),
        ("BitsStored", 17, "invalid_attribute"),
        ("SamplesPerPixel", 7, "invalid_attribute"),
        ("PixelRepresentation", 2, "invalid_attribute"),
    ],
)
def test_bad_image_attribute_is_named(keyword: str, value: int | None, code: str) -> None:
    ds = _ct()
    if value is None:
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)
    with pytest.raises(DicomError) as caught:
        validate(ds)
    assert (caught.value.code, caught.value.attribute) == (code, keyword)
    assert keyword in caught.value.message


def test_image_without_pixel_data_is_refused() -> None:
    ds = _ct()
    del ds.PixelData
    with pytest.raises(DicomError) as caught:
        validate(ds)
    assert (caught.value.code, caught.value.attribute) == ("missing_attribute", "PixelData")


@pytest.mark.parametrize(
    "name",
    ["test-SR.dcm", "rtplan.dcm", "rtstruct.dcm", "waveform_ecg.dcm", "liver.dcm", "rtdose.dcm"],
    ids=["SR", "RT plan", "RT struct", "ECG", "SEG (1 bit)", "RT dose (32 bit)"],
)
def test_non_image_and_unusual_objects_are_valid(name: str) -> None:
    validate(read_dataset(sample_bytes(name)))
