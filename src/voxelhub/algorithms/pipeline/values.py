"""The values that flow between operators: series, volumes in real units, label volumes.

They are frozen plain classes so that a port's declared type is an ordinary class and the
pipeline can check a connection with `issubclass` when it is built.

>>> from voxelhub.dicom.synthetic import ct_phantom
>>> series = SeriesData.of(ct_phantom(slices=2, size=8))
>>> series.modality, series.number_of_instances
('CT', 2)
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from voxelhub.dicom.volume import Geometry

_MAX_LABEL = 255
_MAX_LO = 64  # characters in a DICOM LO value (SegmentLabel, SegmentDescription)


@dataclass(frozen=True, eq=False)
class SeriesData:
    """The instances of one DICOM series (one SeriesInstanceUID)."""

    series_instance_uid: str
    datasets: tuple[Dataset, ...]

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError(f"Series {self.series_instance_uid} has no instances.")

    @classmethod
    def of(cls, datasets: list[Dataset] | tuple[Dataset, ...]) -> SeriesData:
        """The series of `datasets`, which must all share one SeriesInstanceUID."""
        uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
        if len(uids) != 1:
            raise ValueError(f"Expected instances of one series, got {len(uids)} series.")
        return cls(uids.pop(), tuple(datasets))

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    @property
    def study_instance_uid(self) -> str:
        return str(self.first.get("StudyInstanceUID", ""))

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", ""))

    @property
    def series_description(self) -> str:
        return str(self.first.get("SeriesDescription", ""))

    @property
    def body_part_examined(self) -> str:
        return str(self.first.get("BodyPartExamined", ""))

    @property
    def number_of_instances(self) -> int:
        return len(self.datasets)

    @property
    def number_of_images(self) -> int:
        """Images (frames) in all instances: a multi-frame instance counts its frames."""
        return sum(_frames(ds) for ds in self.datasets)

    def describe(self) -> str:
        """One line for people: modality, description, body part, size and UID."""
        return (
            f"{self.modality or '?'} {self.series_description!r} "
            f"body part {self.body_part_examined or '?'}, "
            f"{self.number_of_instances} instances ({self.series_instance_uid})"
        )


@dataclass(frozen=True)
class SkippedFile:
    """A file a loader could not use, and why (errors are data)."""

    path: str
    reason: str


@dataclass(frozen=True, eq=False)
class SeriesCollection:
    """Every series found in a folder, and the files that were not usable DICOM."""

    series: tuple[SeriesData, ...]
    skipped: tuple[SkippedFile, ...] = ()


@dataclass(frozen=True, eq=False)
class Volume:
    """A (slice, row, column) array in real units (HU for CT) and where it lies in space.

    When it was built from a DICOM series, `series` holds that series, its instances in
    the volume's slice order; `voxelhub.dicom.volume.slice_sources(series.datasets)` says
    which acquired image (a single-frame instance or a frame of an Enhanced image) each
    slice was made from, and where a gantry tilt shifted it.
    """

    array: npt.NDArray[Any]
    geometry: Geometry
    _: KW_ONLY
    series: SeriesData | None = None

    @property
    def voxel_volume_ml(self) -> float:
        """The volume of one voxel in millilitres (cm³)."""
        return float(np.prod(self.geometry.spacing)) / 1000.0


@dataclass(frozen=True)
class Segment:
    """What one label of a label volume means, coded for a DICOM SEG.

    `category` and `property_type` are codes, e.g. SCT "Tissue" / SCT "Bone".
    """

    label: int
    name: str
    _: KW_ONLY
    description: str
    category: Code
    property_type: Code

    def __post_init__(self) -> None:
        if not 1 <= self.label <= _MAX_LABEL:
            raise ValueError(
                f"Segment {self.name!r} has label {self.label}; labels run from 1 to "
                f"{_MAX_LABEL} (0 is background)."
            )
        for field, text in (("name", self.name), ("description", self.description)):
            if not text or len(text) > _MAX_LO or "\\" in text:
                raise ValueError(
                    f"Segment {self.label} {field} {text!r} must be 1 to {_MAX_LO} characters "
                    "without a backslash (it is a DICOM LO value)."
                )


@dataclass(frozen=True, eq=False)
class LabelVolume(Volume):
    """An integer volume where each voxel holds a segment's label (0 = background)."""

    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        if not np.issubdtype(self.array.dtype, np.integer):
            raise ValueError(f"A label volume holds integers, not {self.array.dtype}.")
        labels = [segment.label for segment in self.segments]
        if len(set(labels)) != len(labels):
            raise ValueError(f"Each segment needs its own label; got labels {labels}.")

    def segment(self, label: int) -> Segment:
        for segment in self.segments:
            if segment.label == label:
                return segment
        raise KeyError(label)


def _frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1
