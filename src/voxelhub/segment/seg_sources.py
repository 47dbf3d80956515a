"""The acquired images a DICOM SEG of a series' volume lies on and references.

A SEG frame references the image it was derived from (Derivation Image Sequence >
Source Image Sequence) and lies where that image lies, pixel for pixel: a single-frame
instance, or one frame of an Enhanced image (with its Referenced Frame Number). Viewers
(OHIF, 3D Slicer with dcmqi) place a SEG frame on the image it references, so that is
what a SEG must give them, whatever the volume was made of:

- single-frame slices: one SEG frame per instance, as the slices are the volume's;
- one Enhanced (or Legacy Converted Enhanced) image: one SEG frame per source frame, in
  the image's frame order, each with the frame's Plane Position and the image's Plane
  Orientation and Pixel Measures;
- a gantry-tilted series, whose volume was resampled onto a wider grid: the labels are
  carried back onto each acquired slice (nearest neighbour, `voxelhub.dicom.slices`), so
  each SEG frame lies on, and references, the acquired slice it overlays. A SEG on the
  resampled grid could name no image it lies on, and viewers that place frames by
  reference would draw it shifted by the tilt.

highdicom builds the SEG from these images. It copies a multi-frame source's orientation
and pixel measures from its shared functional groups, so an Enhanced image is handed over
as a view with them shared (an image may repeat them per frame; the volume checked they
are equal in every frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import DSfloat

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.planes import is_enhanced
from voxelhub.dicom.slices import SliceSources
from voxelhub.dicom.volume import slice_sources
from voxelhub.segment.errors import SegmentError

if TYPE_CHECKING:
    import highdicom as hd


@dataclass(frozen=True, eq=False)
class SegSources:
    """The images the frames of a SEG of a series' volume lie on, in the order its pixel
    array lists them (`images` as highdicom takes them: one multi-frame image, or one
    single-frame image per frame)."""

    slices: SliceSources
    images: tuple[Dataset, ...]

    @property
    def multi_frame(self) -> bool:
        return len(self.images) == 1 and is_enhanced(self.images[0])

    def frames(self, labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The (slice, row, column) `labels` of the volume as one array per source image
        (or source frame), in the order of `images` (or of the image's frames)."""
        acquired = self.slices.on_frames(labels)
        if not self.multi_frame:
            return acquired
        ordered = np.zeros_like(acquired)
        ordered[[plane.frame_index for plane in self.slices.planes]] = acquired
        return ordered

    def labels(self, seg: hd.seg.Segmentation) -> npt.NDArray[np.uint8]:
        """The labels (segment numbers) of a highdicom SEG of these images on the volume's
        grid; frames the SEG leaves out are background, and where segments overlap the
        higher number wins."""
        options: dict[str, Any] = {
            "combine_segments": True,
            "assert_missing_frames_are_empty": True,
            "skip_overlap_checks": True,
        }
        planes = self.slices.planes
        if self.multi_frame:
            pixels = seg.get_pixels_by_source_frame(
                str(self.images[0].SOPInstanceUID),
                [plane.frame_index + 1 for plane in planes],
                **options,
            )
        else:
            pixels = seg.get_pixels_by_source_instance(
                [str(plane.dataset.SOPInstanceUID) for plane in planes], **options
            )
        return self.slices.on_grid(np.asarray(pixels, dtype=np.uint8))


def seg_sources(datasets: Sequence[Dataset]) -> SegSources:
    """The images a SEG of the volume of `datasets` (any order) lies on.

    Refuses a volume whose slices are frames of several Enhanced images, which highdicom
    cannot reference frame by frame.
    """
    try:
        slices = slice_sources(datasets)
    except DicomError as err:
        raise SegmentError(f"the SEG's source series is not one volume: {err.message}") from err
    instances = slices.instances
    if not any(is_enhanced(ds) for ds in instances):
        return SegSources(slices, tuple(plane.dataset for plane in slices.planes))
    if len(instances) > 1:
        raise SegmentError(
            f"the volume's slices are frames of {len(instances)} instances, and a SEG here "
            "references the frames of one Enhanced image or one single-frame image per "
            "slice. Send the series as one Enhanced image, or as single-frame slices."
        )
    return SegSources(slices, (_with_shared_geometry(slices),))


def can_reference(datasets: Sequence[Dataset]) -> bool:
    """Whether `seg_sources` accepts the volume of `datasets`."""
    return len(datasets) == 1 or not any(is_enhanced(ds) for ds in datasets)


def _with_shared_geometry(slices: SliceSources) -> Dataset:
    """A view of the one Enhanced image of `slices` whose shared functional groups hold its
    Plane Orientation (written as valid DS values) and its first frame's Pixel Measures;
    the other attributes, pixel data included, are the image's own elements."""
    plane = slices.planes[0]
    ds = plane.dataset
    shared = next(iter(ds.get("SharedFunctionalGroupsSequence") or [Dataset()]))
    groups = Dataset()
    for element in shared:
        groups.add(element)
    if "PixelMeasuresSequence" not in groups:
        groups.add(ds.PerFrameFunctionalGroupsSequence[0]["PixelMeasuresSequence"])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [DSfloat(v, auto_format=True) for v in plane.orientation]
    groups.PlaneOrientationSequence = DicomSequence([orientation])
    view = Dataset()
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta
    for element in ds:
        if element.keyword != "SharedFunctionalGroupsSequence":
            view.add(element)
    view.SharedFunctionalGroupsSequence = DicomSequence([groups])
    return view
