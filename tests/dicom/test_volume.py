"""Series → volume: ordered by position along the normal, rescaled, written as MHA.

Single-frame series, and Enhanced images whose frames are the slices; gantry-tilted series
resampled so each voxel lies where its slice said."""

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

from tests.dicom.helpers import (
    assert_same_volume,
    ball,
    enhanced,
    sampled_series,
    voxel_centres,
)
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.synthetic import AIR, BONE, RESCALE_INTERCEPT, ct_phantom, phantom_volume
from voxelhub.dicom.volume import (
    Geometry,
    instances_in_slice_order,
    series_to_volume,
    series_volume,
    write_mha,
)


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


# A ball 7 mm in radius, and slices of 32 x 32 one-millimetre pixels that cover it.
_CENTRE, _RADIUS, _CORNER = (1.0, -2.0, 16.0), 7.0, (-16.0, -16.0, 0.0)


def _tilted(degrees: float, *, about: str = "x", slices: int = 13) -> list[Dataset]:
    """The ball as a gantry tilted by `degrees` images it: the table moves 2.5 mm along z
    per slice while the slices are tilted about the x (or y) axis."""
    cosine, sine = float(np.cos(np.radians(degrees))), float(np.sin(np.radians(degrees)))
    orientation = [1, 0, 0, 0, cosine, sine] if about == "x" else [cosine, 0, sine, 0, 1, 0]
    positions = [np.add(_CORNER, (0, 0, 2.5 * k)) for k in range(slices)]
    return sampled_series(ball(_CENTRE, _RADIUS), orientation=orientation,
                          positions=positions, size=32, spacing_mm=1.0)  # fmt: skip


def _assert_holds_the_ball(volume: np.ndarray, geometry: Geometry) -> None:
    """Every voxel whose centre lies clear of the ball's surface by more than the reach of
    in-plane interpolation (a pixel diagonal) holds what lies at that point."""
    distance = np.linalg.norm(voxel_centres(volume, geometry) - np.array(_CENTRE), axis=-1)
    reach = np.sqrt(2) * 1.0
    assert np.all(volume[distance < _RADIUS - reach] == BONE)
    assert np.all(volume[distance > _RADIUS + reach] == AIR)
    assert np.count_nonzero(volume[distance < _RADIUS - reach]) > 50


@pytest.mark.parametrize(
    ("degrees", "about"), [(20.0, "x"), (-20.0, "x"), (12.0, "y")],
    ids=["20-about-x", "minus-20-about-x", "12-about-y"],
)  # fmt: skip
def test_gantry_tilted_series_is_resampled_so_each_voxel_lies_where_its_slice_said(
    degrees: float, about: str, tmp_path: Path
) -> None:
    series = _tilted(degrees, about=about)
    converted = series_volume(_shuffled(series))
    volume, geometry = converted.voxels, converted.geometry
    assert converted.gantry_tilt_degrees == pytest.approx(abs(degrees))
    assert f"gantry tilt of {abs(degrees):.1f} degrees" in converted.notes[0]
    # The slice orientation with the normal as third axis, spaced along the normal.
    cosines = np.array(series[0].ImageOrientationPatient, float)
    normal = np.cross(cosines[:3], cosines[3:])
    expected = np.column_stack([cosines[:3], cosines[3:], normal]).ravel()
    assert geometry.direction == pytest.approx(tuple(expected))
    assert geometry.spacing == pytest.approx((1.0, 1.0, 2.5 * np.cos(np.radians(degrees))))
    # Widened by the 12 slices' shifts of 2.5 mm * tan(tilt), rounded up to whole pixels.
    widened = int(np.ceil(12 * 2.5 * abs(np.tan(np.radians(degrees)))))
    assert volume.shape == ((13, 32 + widened, 32) if about == "x" else (13, 32, 32 + widened))
    assert volume.dtype == np.int16
    _assert_holds_the_ball(volume, geometry)
    # The MHA places the ball's centre in a voxel of the ball.
    write_mha(volume, geometry, tmp_path / "tilted.mha")
    image = SimpleITK.ReadImage(str(tmp_path / "tilted.mha"))
    assert image[image.TransformPhysicalPointToIndex(_CENTRE)] == BONE
    # Its slices are not the instances' pixels any more: writers that reference them
    # carry their values back onto the acquired slices (`slice_sources`).
    assert instances_in_slice_order(series) is None


def test_tilt_corrected_volume_matches_an_axial_acquisition_of_the_same_object() -> None:
    """The ball's centre of mass, in patient space, is where an untilted scan puts it."""
    axial = sampled_series(
        ball(_CENTRE, _RADIUS), orientation=[1, 0, 0, 0, 1, 0],
        positions=[np.add(_CORNER, (0, 0, 2.0 * k)) for k in range(16)],
        size=32, spacing_mm=1.0,
    )  # fmt: skip
    centres = []
    for series in (axial, _tilted(20.0)):
        volume, geometry = series_to_volume(series)
        centres.append(voxel_centres(volume, geometry)[volume == BONE].mean(axis=0))
    assert np.allclose(centres[0], _CENTRE, atol=0.25)
    assert np.linalg.norm(centres[1] - centres[0]) < 0.5


def test_whole_pixel_shifts_copy_each_slice_exactly() -> None:
    """Each slice one column right of the one before: slice k is copied k columns in, the
    rest of its row is the series' minimum, and the first slice keeps its place."""
    series = ct_phantom(slices=4, size=8, spacing_mm=1.5)
    for index, ds in enumerate(series):
        ds.ImagePositionPatient = [-6.0 + 1.5 * index, -6.0, 2.5 * index]
    original = phantom_volume(4, 8)
    converted = series_volume(series)
    volume = converted.voxels
    assert converted.gantry_tilt_degrees == pytest.approx(np.degrees(np.arctan(1.5 / 2.5)))
    assert volume.shape == (4, 8, 11)
    for index in range(4):
        assert np.array_equal(volume[index, :, index : index + 8], original[index])
        assert np.all(np.delete(volume[index], range(index, index + 8), axis=1) == AIR)
    assert converted.geometry.origin == pytest.approx((-6.0, -6.0, 0.0))


@pytest.mark.parametrize("as_enhanced", [False, True], ids=["slices", "enhanced"])
def test_enhanced_tilted_image_is_resampled_as_its_slices(as_enhanced: bool) -> None:
    series = _tilted(15.0, slices=6)
    got = series_volume([enhanced(series)] if as_enhanced else list(reversed(series)))
    expected = series_volume(series)
    assert_same_volume((got.voxels, got.geometry), (expected.voxels, expected.geometry))
    assert got.gantry_tilt_degrees == pytest.approx(15.0)


def test_in_plane_shifts_no_tilt_makes_are_refused() -> None:
    """Parallel, evenly spaced slices, one of them shifted off the line of the others: no
    gantry tilt does that, so no resampling would place it."""
    series = _tilted(15.0, slices=6)
    position = np.array(series[3].ImagePositionPatient, float)
    series[3].ImagePositionPatient = [float(v) for v in np.add(position, (2.0, 0, 0))]
    with pytest.raises(DicomError) as caught:
        series_to_volume(series)
    assert caught.value.attribute == "ImagePositionPatient"
    assert "not in proportion to their distance along the normal" in caught.value.message


def test_untilted_series_is_not_resampled() -> None:
    converted = series_volume(ct_phantom(slices=4, size=8))
    assert converted.gantry_tilt_degrees is None and converted.notes == ()


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
