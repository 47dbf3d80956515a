"""Series → volume: ordered by position along the normal, rescaled, written as MHA."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK
from pydicom.dataset import Dataset

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.synthetic import RESCALE_INTERCEPT, ct_phantom, phantom_volume
from voxelhub.dicom.volume import series_to_volume, write_mha


def _shuffled(series: list[Dataset]) -> list[Dataset]:
    """The slices in random order with InstanceNumbers that lie about their position."""
    shuffled = list(series)
    random.Random(4).shuffle(shuffled)
    numbers = list(range(1, len(series) + 1))
    random.Random(9).shuffle(numbers)
    for ds, number in zip(shuffled, numbers, strict=True):
        ds.InstanceNumber = number
    return shuffled


def test_volume_is_ordered_by_position_not_instance_number() -> None:
    series = ct_phantom(slices=6, size=24, slice_thickness_mm=2.0)
    volume, geometry = series_to_volume(_shuffled(series))
    assert volume.dtype == np.int16
    assert np.array_equal(volume, phantom_volume(6, 24))  # in HU, slice 0 lowest z
    assert geometry.spacing == pytest.approx((1.5, 1.5, 2.0))
    assert geometry.origin == pytest.approx((-18.0, -18.0, 0.0))
    assert geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def test_oblique_series_uses_the_normal_and_applies_rescale() -> None:
    series = ct_phantom(slices=4, size=8)
    cosine, sine = np.cos(0.3), np.sin(0.3)
    row, column = [1.0, 0.0, 0.0], [0.0, cosine, sine]
    normal = np.cross(row, column)
    for index, ds in enumerate(series):
        ds.ImageOrientationPatient = row + column
        ds.ImagePositionPatient = list(np.array([5.0, 6.0, 7.0]) + 3.0 * index * normal)
        ds.RescaleSlope, ds.RescaleIntercept = 0.3, RESCALE_INTERCEPT
    volume, geometry = series_to_volume(list(reversed(series)))
    assert volume.dtype == np.float32
    stored = series[0].pixel_array.astype(np.float64)
    assert np.allclose(volume[0], stored * 0.3 + RESCALE_INTERCEPT)
    assert geometry.origin == pytest.approx((5.0, 6.0, 7.0))
    assert geometry.spacing[2] == pytest.approx(3.0)
    assert geometry.direction == pytest.approx((1, 0, 0, 0, cosine, -sine, 0, sine, cosine))


def test_mha_keeps_the_geometry(tmp_path: Path) -> None:
    series = ct_phantom(slices=5, size=16, spacing_mm=0.8, slice_thickness_mm=1.25)
    volume, geometry = series_to_volume(_shuffled(series))
    path = tmp_path / "ct.mha"
    write_mha(volume, geometry, path)
    image = SimpleITK.ReadImage(str(path))
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 1.25))
    assert image.GetOrigin() == pytest.approx((-6.4, -6.4, 0.0))
    assert image.GetDirection() == pytest.approx(geometry.direction)
    assert np.array_equal(SimpleITK.GetArrayFromImage(image), volume)


def _tilt_one(series: list[Dataset]) -> None:
    series[2].ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]


def _resize_one(series: list[Dataset]) -> None:
    series[2].Rows = 4


def _respace_one(series: list[Dataset]) -> None:
    series[2].PixelSpacing = [1.0, 1.0]


def _drop_one(series: list[Dataset]) -> None:
    del series[2]


def _duplicate_one(series: list[Dataset]) -> None:
    series.append(series[1])


@pytest.mark.parametrize(
    ("change", "attribute"),
    [
        (_tilt_one, "ImageOrientationPatient"),
        (_resize_one, "Rows"),
        (_respace_one, "PixelSpacing"),
        (_drop_one, "ImagePositionPatient"),
        (_duplicate_one, "ImagePositionPatient"),
    ],
    ids=["orientation", "size", "spacing", "gap", "duplicate"],
)
def test_inconsistent_series_are_refused(change: object, attribute: str) -> None:
    series = ct_phantom(slices=5, size=8)
    assert callable(change)
    change(series)
    with pytest.raises(DicomError) as caught:
        series_to_volume(series)
    assert caught.value.attribute == attribute


def test_gantry_tilt_is_refused_not_placed_on_a_skewed_grid() -> None:
    """Tilted slices are parallel and evenly spaced along their normal, but each is shifted
    within its plane; a regular grid would misplace every slice after the first."""
    series = ct_phantom(slices=5, size=8)
    tilt = np.radians(15.0)
    for index, ds in enumerate(series):
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.ImagePositionPatient = [-6.0, -6.0, 2.5 * index]
    with pytest.raises(DicomError) as caught:
        series_to_volume(series)
    assert caught.value.attribute == "ImagePositionPatient"
    assert "gantry tilt of 15.0 degrees" in caught.value.message


def test_positions_rounded_by_the_scanner_are_still_one_stack() -> None:
    series = ct_phantom(slices=5, size=8)
    for index, ds in enumerate(series):
        ds.ImagePositionPatient = [-6.0 + 0.004 * (index % 2), -6.0, 2.5 * index]
    _, geometry = series_to_volume(series)
    assert geometry.spacing == pytest.approx((1.5, 1.5, 2.5))
