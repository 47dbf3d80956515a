"""The image planes of an instance: where each frame lies and how its values scale.

A single-frame image is one plane, placed by its top-level Image Plane attributes. An
Enhanced or Legacy Converted Enhanced CT, MR or PET image is one plane per frame, placed
by its functional groups: the frame's item of the Per-Frame Functional Groups Sequence,
else the Shared Functional Groups Sequence (Plane Position, Plane Orientation, Pixel
Measures, Pixel Value Transformation).

>>> from voxelhub.dicom.synthetic import ct_phantom
>>> [plane] = image_planes(ct_phantom(slices=1, size=8)[0])
>>> plane.position, plane.pixel_spacing, plane.intercept
((-6.0, -6.0, 0.0), (1.5, 1.5), -1024.0)
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import (
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
)

from voxelhub.dicom.errors import DicomError

ENHANCED_SOP_CLASSES = frozenset(
    {
        EnhancedCTImageStorage,
        EnhancedMRImageStorage,
        LegacyConvertedEnhancedCTImageStorage,
        LegacyConvertedEnhancedMRImageStorage,
        LegacyConvertedEnhancedPETImageStorage,
    }
)

# The functional group that holds each attribute of a frame's plane and rescale.
_PLANE_SEQUENCES = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
}
# Frame attributes that make more than one volume of an instance when they differ.
_FRAME_DIMENSIONS = (
    ("FrameContentSequence", "StackID", "stacks"),
    ("FrameContentSequence", "TemporalPositionIndex", "temporal positions"),
    ("MRDiffusionSequence", "DiffusionBValue", "diffusion b-values"),
    ("MREchoSequence", "EffectiveEchoTime", "echo times"),
)


@dataclass(frozen=True, eq=False)
class Plane:
    """One frame of an image: where it lies (LPS, millimetres) and how its values scale.

    `frame_index` is the 0-based index of the frame in `dataset`'s pixel data;
    `slice_spacing` is SpacingBetweenSlices, else SliceThickness, when given.
    """

    dataset: Dataset
    frame_index: int
    position: tuple[float, ...]
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, ...]
    slice_spacing: float | None
    slope: float
    intercept: float


def is_enhanced(ds: Dataset) -> bool:
    """Whether `ds` is an image whose frames are placed by functional groups."""
    return str(ds.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES


def image_planes(ds: Dataset) -> list[Plane]:
    """The planes of a greyscale image, one per frame, in frame order.

    Refuses colour images, multi-frame images that have no per-frame geometry (cine,
    ultrasound) and Enhanced images whose frames are more than one stack, time point,
    b-value or echo.
    """
    uid = str(ds.get("SOPInstanceUID", "an instance"))
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise DicomError(
            f"{uid} is colour (SamplesPerPixel {ds.SamplesPerPixel}); a volume is built "
            "from greyscale images.",
            code="invalid_attribute",
            attribute="SamplesPerPixel",
        )
    if is_enhanced(ds):
        return _enhanced_planes(ds)
    if int(ds.get("NumberOfFrames") or 1) != 1:
        raise DicomError(
            f"{uid} is a multi-frame image with no per-frame position; a volume is built "
            "from single-frame slices or from Enhanced (or Legacy Converted Enhanced) CT, "
            "MR and PET images.",
            code="invalid_attribute",
            attribute="NumberOfFrames",
        )
    return [_plane(ds, 0, ds)]


def _enhanced_planes(ds: Dataset) -> list[Plane]:
    frames = int(ds.get("NumberOfFrames") or 1)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if len(per_frame) != frames:
        raise DicomError(
            f"{ds.get('SOPInstanceUID', 'The image')} has {frames} frames but "
            f"{len(per_frame)} items in its PerFrameFunctionalGroupsSequence; each frame "
            "needs its own item.",
            code="invalid_attribute",
            attribute="PerFrameFunctionalGroupsSequence",
        )
    shared = next(iter(ds.get("SharedFunctionalGroupsSequence") or [Dataset()]))
    groups = [_FrameGroups(item, shared) for item in per_frame]
    _check_one_volume(ds, groups)
    return [_plane(ds, index, _flattened(ds, frame)) for index, frame in enumerate(groups)]


@dataclass(frozen=True)
class _FrameGroups:
    """The functional groups of one frame: its own item, then the shared one."""

    own: Dataset
    shared: Dataset

    def item(self, sequence: str) -> Dataset | None:
        for groups in (self.own, self.shared):
            items = groups.get(sequence)
            if items:
                return items[0]  # type: ignore[no-any-return]
        return None


def _flattened(ds: Dataset, frame: _FrameGroups) -> Dataset:
    """The frame's plane and rescale attributes as a single-frame image holds them."""
    flat = Dataset()
    for sequence in _PLANE_SEQUENCES.values():
        item = frame.item(sequence)
        for element in item or []:
            flat.add(element)
    # Some converters leave the rescale at the top level, where a single frame has it.
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in flat and keyword in ds:
            flat.add(ds[keyword])
    return flat


def _plane(ds: Dataset, index: int, attributes: Dataset) -> Plane:
    spacing = attributes.get("SpacingBetweenSlices") or attributes.get("SliceThickness")
    return Plane(
        dataset=ds,
        frame_index=index,
        position=_vector(ds, index, attributes, "ImagePositionPatient", 3),
        orientation=_vector(ds, index, attributes, "ImageOrientationPatient", 6),
        pixel_spacing=_vector(ds, index, attributes, "PixelSpacing", 2),
        slice_spacing=float(spacing) if spacing else None,
        slope=float(attributes.get("RescaleSlope") or 1.0),
        intercept=float(attributes.get("RescaleIntercept") or 0.0),
    )


def _vector(
    ds: Dataset, index: int, attributes: Dataset, keyword: str, length: int
) -> tuple[float, ...]:
    value = attributes.get(keyword)
    if value is not None and len(value) == length:
        return tuple(float(v) for v in value)
    where = f" (in its {_PLANE_SEQUENCES[keyword]})" if is_enhanced(ds) else ""
    raise DicomError(
        f"{keyword} of {_described(ds, index)}{where} is missing or does not have {length} "
        "values; the slice cannot be placed in the volume.",
        code="missing_attribute",
        attribute=keyword,
    )


def _described(ds: Dataset, index: int) -> str:
    uid = str(ds.get("SOPInstanceUID", "an instance"))
    return f"frame {index + 1} of {uid}" if is_enhanced(ds) else uid


def _check_one_volume(ds: Dataset, groups: list[_FrameGroups]) -> None:
    for sequence, keyword, what in _FRAME_DIMENSIONS:
        values = {
            str(item.get(keyword))
            for item in (frame.item(sequence) for frame in groups)
            if item is not None and item.get(keyword) is not None
        }
        if len(values) > 1:
            shown = ", ".join(sorted(values)[:5]) + (", …" if len(values) > 5 else "")
            raise DicomError(
                f"{ds.get('SOPInstanceUID', 'The image')} holds {len(values)} {what} "
                f"({keyword} {shown}) in one object; a volume is one stack of frames. "
                f"Export one series per {what[:-1]} from the scanner, or split the object.",
                code="invalid_attribute",
                attribute=keyword,
            )
