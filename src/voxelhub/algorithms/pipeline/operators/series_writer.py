"""A volume → a new derived DICOM series (new UIDs, same patient, study and geometry)."""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from voxelhub.algorithms.pipeline.errors import OperatorError
from voxelhub.algorithms.pipeline.operator import Operator, PortValues
from voxelhub.algorithms.pipeline.operators._paths import checked_interface, output_folder
from voxelhub.algorithms.pipeline.values import SeriesData, Volume
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.planes import Plane, is_enhanced
from voxelhub.dicom.slices import SliceSources
from voxelhub.dicom.volume import Geometry, slice_sources

logger = logging.getLogger(__name__)

# Patient, study and frame of reference: what a derived series shares with its source.
_SHARED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Modality",
    "BodyPartExamined",
    "WindowCenter",
    "WindowWidth",
)
_INT16 = np.iinfo(np.int16)
# The derived series is single-frame: an Enhanced source's slices become slices of the
# classic image class of its modality.
_SINGLE_FRAME_CLASSES = {
    EnhancedCTImageStorage: CTImageStorage,
    LegacyConvertedEnhancedCTImageStorage: CTImageStorage,
    EnhancedMRImageStorage: MRImageStorage,
    LegacyConvertedEnhancedMRImageStorage: MRImageStorage,
    LegacyConvertedEnhancedPETImageStorage: PositronEmissionTomographyImageStorage,
}


class SeriesWriter(Operator):
    """Writes a volume as a new single-frame series in output/<interface>/ (0001.dcm, …).

    The series is DERIVED from the volume's source series: it keeps the patient, the study
    and the frame of reference, gets new series and instance UIDs, and places its slices by
    the volume's geometry. A slice that lies where a slice of the source's volume lies
    names the acquired image it was made from in its Source Image Sequence (with the frame
    number for an Enhanced source, and Spatial Locations Preserved NO where a gantry tilt
    shifted it). An Enhanced CT, MR or PET source gives a series of the single-frame class
    of its modality. Values are stored as signed 16-bit with a rescale that restores them
    (exactly for integers in int16's range).
    """

    input_ports = {"volume": Volume, "output_dir": Path}
    output_ports = {"path": Path}

    def __init__(
        self, interface: str, *, series_description: str | None = None, name: str | None = None
    ) -> None:
        self.interface = checked_interface(interface)
        super().__init__(name=name or f"SeriesWriter[{interface}]")
        self.series_description = series_description

    def compute(self, inputs: PortValues) -> dict[str, object]:
        volume = inputs.get("volume", Volume)
        if volume.series is None:
            raise OperatorError(
                self.name,
                "a derived series needs the source series for its patient and study; this "
                "volume was not built from one, so write it with MhaWriter instead.",
            )
        folder = output_folder(inputs.get("output_dir", Path), self.interface)
        stored, slope, intercept = _encoded(volume.array)
        shared = self._shared(volume.series, slope=slope, intercept=intercept)
        _set_plane(shared, volume.geometry)
        normal = _axes(volume.geometry)[2]
        sources = _slice_sources(volume.series)
        for index, plane in enumerate(stored):
            ds = copy.deepcopy(shared)
            position = (
                np.array(volume.geometry.origin) + index * volume.geometry.spacing[2] * normal
            )
            ds.ImagePositionPatient = [DSfloat(float(v), auto_format=True) for v in position]
            ds.InstanceNumber = index + 1
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            source = _source_at(sources, index=index, position=position, size=plane.shape)
            if source is not None:
                ds.SourceImageSequence = Sequence([source])
            ds.Rows, ds.Columns = plane.shape
            ds.PixelData = plane.astype("<i2").tobytes()
            ds.save_as(folder / f"{index + 1:04d}.dcm", enforce_file_format=True)
        return {"path": folder}

    def _shared(self, source: SeriesData, *, slope: float, intercept: float) -> Dataset:
        first, now = source.first, datetime.now()
        ds = Dataset()
        for keyword in _SHARED:
            if keyword in first:
                setattr(ds, keyword, copy.deepcopy(first[keyword].value))
        ds.file_meta = FileMetaDataset()
        sop_class_uid = _SINGLE_FRAME_CLASSES.get(first.SOPClassUID, first.SOPClassUID)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesInstanceUID = generate_uid()
        ds.SeriesNumber = int(first.get("SeriesNumber") or 0) + 2000
        ds.SeriesDescription = (
            self.series_description or f"Derived from {source.series_description}"
        )[:64]
        ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.ImageType = ["DERIVED", "SECONDARY", *list(first.get("ImageType") or [])[2:3]]
        ds.DerivationDescription = f"Derived by voxelhub from series {source.series_instance_uid}"
        ds.Manufacturer = "voxelhub"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = DSfloat(slope, auto_format=True)
        ds.RescaleIntercept = DSfloat(intercept, auto_format=True)
        if source.modality == "CT":
            ds.RescaleType = "HU"
        return ds


def _encoded(array: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int16], float, float]:
    """`array` as int16 with the slope and intercept that map it back to real values."""
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.integer) and low >= _INT16.min and high <= _INT16.max:
        return array.astype(np.int16), 1.0, 0.0
    slope = (high - low) / (int(_INT16.max) - int(_INT16.min)) or 1.0
    intercept = low - int(_INT16.min) * slope
    stored = np.round((array.astype(np.float64) - intercept) / slope)
    return stored.clip(_INT16.min, _INT16.max).astype(np.int16), slope, intercept


def _axes(geometry: Geometry) -> tuple[npt.NDArray[np.float64], ...]:
    """The directions of increasing column, row and slice index (LPS unit vectors)."""
    matrix = np.array(geometry.direction, dtype=np.float64).reshape(3, 3)
    return matrix[:, 0], matrix[:, 1], matrix[:, 2]


def _set_plane(ds: Dataset, geometry: Geometry) -> None:
    """The Image Plane attributes every slice shares: orientation, spacing, thickness."""
    row, column, _ = _axes(geometry)
    ds.ImageOrientationPatient = [DSfloat(float(v), auto_format=True) for v in (*row, *column)]
    # PixelSpacing is (between rows, between columns); Geometry.spacing is (x, y, z).
    ds.PixelSpacing = [
        DSfloat(geometry.spacing[1], auto_format=True),
        DSfloat(geometry.spacing[0], auto_format=True),
    ]
    ds.SliceThickness = ds.SpacingBetweenSlices = DSfloat(geometry.spacing[2], auto_format=True)


def _slice_sources(series: SeriesData) -> SliceSources | None:
    """Where each slice of the source's volume came from; None when it makes no volume."""
    try:
        return slice_sources(series.datasets)
    except DicomError:
        logger.info(
            "series %s is not a volume: no source references",
            series.series_instance_uid,
            exc_info=True,
        )
        return None


def _source_at(
    sources: SliceSources | None,
    *,
    index: int,
    position: npt.NDArray[np.float64],
    size: tuple[int, ...],
) -> Dataset | None:
    """The Source Image Sequence item of a slice that lies where slice `index` of the
    source's volume lies (else None): the acquired image that slice was made from.

    `size` is the written slice's (rows, columns); its pixels lie where the acquired
    image's do only when it has that image's size and no tilt shifted it.
    """
    if sources is None or index >= len(sources.planes):
        return None
    plane = sources.planes[index]
    if not np.allclose(_grid_position(plane, sources.offsets[index]), position, atol=1e-3):
        return None
    item = Dataset()
    item.ReferencedSOPClassUID = plane.dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = plane.dataset.SOPInstanceUID
    if is_enhanced(plane.dataset):
        item.ReferencedFrameNumber = plane.frame_index + 1
    same_pixels = sources.offsets[index] == (0.0, 0.0) and tuple(size) == sources.frame_shape
    item.SpatialLocationsPreserved = "YES" if same_pixels else "NO"
    return item


def _grid_position(plane: Plane, offset: tuple[float, float]) -> npt.NDArray[np.float64]:
    """Where the first pixel of the volume's slice lies, `offset` (rows, columns) before
    the first pixel of the acquired frame it was made from."""
    orientation = np.array(plane.orientation, dtype=np.float64)
    row, column = orientation[:3], orientation[3:]
    row_spacing, column_spacing = plane.pixel_spacing
    shift = offset[1] * column_spacing * row + offset[0] * row_spacing * column
    return np.array(plane.position, dtype=np.float64) - shift
