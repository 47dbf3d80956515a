"""Image planes: one per single-frame image, one per frame of an Enhanced image."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.dicom.helpers import enhanced
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.planes import image_planes
from voxelhub.dicom.synthetic import ct_phantom


def _item(keyword: str, value: object) -> Sequence:
    item = Dataset()
    setattr(item, keyword, value)
    return Sequence([item])


def test_frames_take_shared_groups_unless_they_have_their_own() -> None:
    image = enhanced(ct_phantom(slices=3, size=8, spacing_mm=0.7))
    image.PerFrameFunctionalGroupsSequence[1].PixelMeasuresSequence = _item(
        "PixelSpacing", [0.5, 0.5]
    )
    planes = image_planes(image)
    assert [p.position[2] for p in planes] == [5.0, 2.5, 0.0]
    assert [p.pixel_spacing for p in planes] == [(0.7, 0.7), (0.5, 0.5), (0.7, 0.7)]
    assert [p.frame_index for p in planes] == [0, 1, 2]
    assert planes[0].intercept == -1024.0
    assert planes[0].slice_spacing == 2.5


def _stacks(frames: list[Dataset]) -> None:
    frames[1].FrameContentSequence[0].StackID = "2"


def _temporal_positions(frames: list[Dataset]) -> None:
    for index, frame in enumerate(frames):
        frame.FrameContentSequence[0].TemporalPositionIndex = index % 2 + 1


def _b_values(frames: list[Dataset]) -> None:
    for index, frame in enumerate(frames):
        frame.MRDiffusionSequence = _item("DiffusionBValue", 1000.0 * (index % 2))


def _echoes(frames: list[Dataset]) -> None:
    for index, frame in enumerate(frames):
        frame.MREchoSequence = _item("EffectiveEchoTime", 10.0 + 20 * (index % 2))


@pytest.mark.parametrize(
    ("change", "attribute", "named"),
    [
        (_stacks, "StackID", "2 stacks"),
        (_temporal_positions, "TemporalPositionIndex", "2 temporal positions"),
        (_b_values, "DiffusionBValue", "2 diffusion b-values"),
        (_echoes, "EffectiveEchoTime", "2 echo times"),
    ],
    ids=["stacks", "temporal", "diffusion", "echoes"],
)
def test_more_than_one_stack_in_an_image_is_refused_naming_the_dimension(
    change: Callable[[list[Dataset]], None], attribute: str, named: str
) -> None:
    image = enhanced(ct_phantom(slices=4, size=8))
    change(list(image.PerFrameFunctionalGroupsSequence))
    with pytest.raises(DicomError) as caught:
        image_planes(image)
    assert caught.value.attribute == attribute
    assert named in caught.value.message


def test_one_value_of_a_dimension_is_one_stack() -> None:
    image = enhanced(ct_phantom(slices=3, size=8))
    for frame in image.PerFrameFunctionalGroupsSequence:
        frame.FrameContentSequence[0].TemporalPositionIndex = 1
        frame.MRDiffusionSequence = _item("DiffusionBValue", 0.0)
    assert len(image_planes(image)) == 3


def test_a_frame_without_a_position_is_refused_naming_frame_and_sequence() -> None:
    image = enhanced(ct_phantom(slices=3, size=8))
    del image.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    with pytest.raises(DicomError) as caught:
        image_planes(image)
    assert caught.value.attribute == "ImagePositionPatient"
    assert f"frame 2 of {image.SOPInstanceUID} (in its PlanePositionSequence)" in (
        caught.value.message
    )


def test_frames_without_their_own_functional_groups_are_refused() -> None:
    image = enhanced(ct_phantom(slices=3, size=8))
    del image.PerFrameFunctionalGroupsSequence[2]
    with pytest.raises(DicomError) as caught:
        image_planes(image)
    assert caught.value.attribute == "PerFrameFunctionalGroupsSequence"


def test_colour_multi_frame_is_refused() -> None:
    image = enhanced(ct_phantom(slices=3, size=8))
    image.SamplesPerPixel, image.PhotometricInterpretation = 3, "RGB"
    with pytest.raises(DicomError) as caught:
        image_planes(image)
    assert caught.value.attribute == "SamplesPerPixel"
    assert "is colour" in caught.value.message


def test_multi_frame_without_functional_groups_is_refused() -> None:
    """A cine (US, XA, or a Secondary Capture) has frames but no per-frame position."""
    image = ct_phantom(slices=1, size=8)[0]
    image.NumberOfFrames = 3
    image.PixelData = image.PixelData * 3
    with pytest.raises(DicomError) as caught:
        image_planes(image)
    assert caught.value.attribute == "NumberOfFrames"
    assert "no per-frame position" in caught.value.message


@pytest.mark.parametrize(
    ("name", "attribute"),
    [
        ("emri_small.dcm", "PerFrameFunctionalGroupsSequence"),  # Enhanced MR, groups stripped
        ("color3d_jpeg_baseline.dcm", "SamplesPerPixel"),  # colour ultrasound cine
        ("OBXXXX1A_2frame.dcm", "NumberOfFrames"),  # greyscale ultrasound cine
    ],
)
def test_multi_frame_files_that_are_not_one_stack_are_refused(name: str, attribute: str) -> None:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), name
    with pytest.raises(DicomError) as caught:
        image_planes(dcmread(path, stop_before_pixels=True))
    assert caught.value.attribute == attribute
