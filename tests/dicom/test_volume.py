"""Series → volume: ordered by position along the normal, rescaled, written as MHA.

Single-frame series, and Enhanced images whose frames are the slices."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
)

from tests.dicom.helpers import assert_same_volume, enhanced
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


def _oblique(slices: int) -> list[Dataset]:
    """A phantom tilted 0.3 rad about x, its slices 3 mm apart along its normal."""
    series = ct_phantom(slices=slices, size=8)
    row, column = [1.0, 0.0, 0.0], [0.0, float(np.cos(0.3)), float(np.sin(0.3))]
    normal = np.cross(row, column)
    for index, ds in enumerate(series):
        ds.ImageOrientationPatient = row + column
        ds.ImagePositionPatient = [
            float(v) for v in np.array([5.0, 6.0, 7.0]) + 3.0 * index * normal
        ]
    return series


def test_oblique_series_uses_the_normal_and_applies_rescale() -> None:
    series = _oblique(4)
    cosine, sine = np.cos(0.3), np.sin(0.3)
    for ds in series:
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


@pytest.mark.parametrize("as_enhanced", [False, True], ids=["slices", "enhanced"])
def test_gantry_tilt_is_refused_not_placed_on_a_skewed_grid(as_enhanced: bool) -> None:
    """Tilted slices are parallel and evenly spaced along their normal, but each is shifted
    within its plane; a regular grid would misplace every slice after the first."""
    series = ct_phantom(slices=5, size=8)
    tilt = np.radians(15.0)
    for index, ds in enumerate(series):
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(np.sin(tilt))]
        ds.ImagePositionPatient = [-6.0, -6.0, 2.5 * index]
    with pytest.raises(DicomError) as caught:
        series_to_volume([enhanced(series)] if as_enhanced else series)
    assert caught.value.attribute == "ImagePositionPatient"
    assert "gantry tilt of 15.0 degrees" in caught.value.message


def test_positions_rounded_by_the_scanner_are_still_one_stack() -> None:
    series = ct_phantom(slices=5, size=8)
    for index, ds in enumerate(series):
        ds.ImagePositionPatient = [-6.0 + 0.004 * (index % 2), -6.0, 2.5 * index]
    _, geometry = series_to_volume(series)
    assert geometry.spacing == pytest.approx((1.5, 1.5, 2.5))


@pytest.mark.parametrize(
    "sop_class_uid",
    [
        LegacyConvertedEnhancedCTImageStorage,
        EnhancedCTImageStorage,
        EnhancedMRImageStorage,
        LegacyConvertedEnhancedMRImageStorage,
    ],
    ids=["legacy-ct", "ct", "mr", "legacy-mr"],
)
def test_enhanced_image_is_the_volume_of_its_single_frame_series(sop_class_uid: str) -> None:
    series = ct_phantom(slices=6, size=16, spacing_mm=0.8, slice_thickness_mm=2.0)
    image = enhanced(_shuffled(series), sop_class_uid=sop_class_uid)
    frame_z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2])
               for f in image.PerFrameFunctionalGroupsSequence]  # fmt: skip
    assert frame_z != sorted(frame_z)  # frame order is not position order
    volume, geometry = series_to_volume([image])
    assert np.array_equal(volume, phantom_volume(6, 16))
    assert geometry == series_to_volume(series)[1]
    assert geometry.spacing == pytest.approx((0.8, 0.8, 2.0))


def test_several_enhanced_instances_make_one_volume() -> None:
    series = ct_phantom(slices=6, size=16)
    parts = [enhanced(series[3:]), enhanced(series[:3])]
    volume, geometry = series_to_volume(parts)
    assert np.array_equal(volume, phantom_volume(6, 16))
    assert geometry == series_to_volume(series)[1]


def test_enhanced_frames_are_rescaled_each_by_their_own_transformation() -> None:
    series = ct_phantom(slices=4, size=8)
    series[1].RescaleSlope, series[1].RescaleIntercept = 0.3, -10.0
    image = enhanced(series)
    assert "PixelValueTransformationSequence" in image.PerFrameFunctionalGroupsSequence[0]
    volume, _ = series_to_volume([image])
    expected, _ = series_to_volume(series)
    assert volume.dtype == np.float32
    assert np.array_equal(volume, expected)
    stored = series[1].pixel_array.astype(np.float64)
    assert np.allclose(volume[1], stored * 0.3 - 10.0)


def test_oblique_enhanced_image_has_the_geometry_of_its_series() -> None:
    series = _oblique(4)
    assert_same_volume(series_to_volume([enhanced(series)]), series_to_volume(series))


def test_enhanced_image_with_a_missing_frame_is_refused() -> None:
    series = ct_phantom(slices=5, size=8)
    del series[2]
    with pytest.raises(DicomError) as caught:
        series_to_volume([enhanced(series)])
    assert caught.value.attribute == "ImagePositionPatient"


def test_enhanced_ct_of_a_scanner_matches_simpleitk(tmp_path: Path) -> None:
    """A real Enhanced CT whose frames run against the normal: every voxel lands at the
    point SimpleITK (GDCM) places it, with the same value; so does the MHA's."""
    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    assert isinstance(path, str)
    volume, geometry = series_to_volume([dcmread(path)])
    mha = tmp_path / "ect.mha"
    write_mha(volume, geometry, mha)
    ours, theirs = SimpleITK.ReadImage(str(mha)), SimpleITK.ReadImage(path)
    assert ours.GetSize() == theirs.GetSize() == (512, 512, 2)
    for index in [(0, 0, 0), (511, 0, 1), (17, 300, 1)]:
        point = ours.TransformIndexToPhysicalPoint(index)
        other = theirs.TransformPhysicalPointToIndex(point)
        assert theirs.TransformIndexToPhysicalPoint(other) == pytest.approx(point)
        assert ours[index] == theirs[other]
