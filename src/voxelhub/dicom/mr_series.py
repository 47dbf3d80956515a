"""Reconstructed MR magnitude images as a DICOM MR series, ready for the image store.

Pixel rows run along the readout and columns along the phase encode (as the reconstruction
lays them out), so Image Orientation (Patient) is (phase-encode, readout) direction.

An ECG-gated cine (`CardiacPhases`) is one series of every slice at every cardiac phase, as
scanners export it and cine viewers play it: instances numbered by slice position, then by
trigger time (or phase); each with its TriggerTime where known, CardiacNumberOfImages and
its phase as TemporalPositionIdentifier of NumberOfTemporalPositions.

>>> import numpy as np
>>> series = mr_series(np.ones((2, 8, 8), np.float32), fov_mm=(200.0, 200.0, 10.0))
>>> len(series), series[0].Modality, series[0].Rows
(2, 'MR', 8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from voxelhub.dicom.errors import DicomError

MAX_STORED = 4095  # 12 bits stored, as scanners write magnitude images
Vector = tuple[float, float, float]


@dataclass(frozen=True)
class SliceGeometry:
    """Where the slices lie in patient coordinates (mm, DICOM LPS): the centre of each
    slice's field of view, in the order of the images, and the unit readout, phase-encode
    and slice directions (ISMRMRD `position`, `read_dir`, `phase_dir`, `slice_dir`)."""

    centres_mm: tuple[tuple[float, float, float], ...]
    read_dir: Vector = (1.0, 0.0, 0.0)
    phase_dir: Vector = (0.0, 1.0, 0.0)
    slice_dir: Vector = (0.0, 0.0, 1.0)


@dataclass(frozen=True)
class CardiacPhases:
    """Which cardiac phase of an ECG-gated cine each image is (numbered from 0, in the order
    of the images) and, where known, its trigger time (ms after the R wave), the nominal RR
    interval (ms) and heart rate (beats per minute) of the acquisition."""

    phases: tuple[int, ...]
    trigger_times_ms: tuple[float, ...] | None = None
    nominal_interval_ms: float | None = None
    heart_rate_bpm: float | None = None

    @property
    def count(self) -> int:
        """The number of cardiac phases (CardiacNumberOfImages)."""
        return len(set(self.phases))


@dataclass(frozen=True)
class MrContext:
    """Who and what the images belong to, and how they were made.

    Given a `series_instance_uid`, the instances' UIDs follow from it, so the same images
    written again are the same objects; without one, every call makes a new series.
    `echo_number` and `temporal_position` (this frame's TemporalPositionIdentifier and the
    NumberOfTemporalPositions) say which echo and frame of an acquisition of several the
    series holds.
    """

    patient_id: str = "UNKNOWN"
    patient_name: str = "Unknown^Patient"
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    accession_number: str = ""
    referring_physician_name: str = ""
    study_description: str = "MRI reconstruction"
    series_description: str = "Reconstruction"
    series_number: int = 100
    protocol: str = ""
    patient_position: str = ""
    echo_time_ms: float | None = None
    echo_number: int | None = None
    temporal_position: tuple[int, int] | None = None
    repetition_time_ms: float | None = None
    inversion_time_ms: float | None = None
    flip_angle_deg: float | None = None
    field_strength_t: float | None = None
    imaging_frequency_mhz: float | None = None
    derivation: str = ""
    source: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def _scaled(images: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.uint16], float]:
    if not np.all(np.isfinite(images)):
        raise DicomError("the images hold NaN or infinite values", code="invalid_attribute")
    peak = float(images.max()) if images.size else 0.0
    slope = peak / MAX_STORED if peak > 0 else 1.0
    return np.round(images / slope).clip(0, MAX_STORED).astype(np.uint16), slope


def _unit(vector: Vector, *, name: str) -> npt.NDArray[np.float64]:
    array = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(array)) if array.shape == (3,) else 0.0
    if not math.isfinite(norm) or abs(norm - 1.0) > 1e-3:
        raise DicomError(
            f"the {name} {list(vector)} is not a unit vector; the acquisition's geometry is "
            "damaged",
            code="invalid_attribute",
            attribute="ImageOrientationPatient",
        )
    return array / norm


def _checked(
    geometry: SliceGeometry, *, slices: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(centres, read, phase) as arrays, or why they cannot place the images."""
    read = _unit(geometry.read_dir, name="readout direction")
    phase = _unit(geometry.phase_dir, name="phase-encode direction")
    if abs(float(np.dot(read, phase))) > 1e-3:
        raise DicomError(
            f"the readout {list(geometry.read_dir)} and phase-encode "
            f"{list(geometry.phase_dir)} directions are not orthogonal",
            code="invalid_attribute",
            attribute="ImageOrientationPatient",
        )
    centres = np.asarray(geometry.centres_mm, dtype=np.float64).reshape(-1, 3)
    if len(centres) != slices or not np.all(np.isfinite(centres)):
        raise DicomError(
            f"{len(centres)} slice positions for {slices} slices; the geometry must give one "
            "finite position per image",
            code="invalid_attribute",
            attribute="ImagePositionPatient",
        )
    return centres, read, phase


def _checked_cardiac(cardiac: CardiacPhases, *, along: npt.NDArray[np.float64]) -> None:
    """Refuse cardiac phases that do not describe the images: one phase and (where given)
    one finite, non-negative trigger time per image, and no phase twice at one position."""
    slices = len(along)
    times = cardiac.trigger_times_ms
    if len(cardiac.phases) != slices or (times is not None and len(times) != slices):
        raise DicomError(
            f"{len(cardiac.phases)} cardiac phases and "
            f"{'no' if times is None else len(times)} trigger times for {slices} images; give "
            "one of each per image",
            code="invalid_attribute",
            attribute="TriggerTime",
        )
    if times is not None and not all(math.isfinite(t) and t >= 0 for t in times):
        raise DicomError(
            f"the trigger times {list(times)} ms must be finite and not negative",
            code="invalid_attribute",
            attribute="TriggerTime",
        )
    placed = set(zip(np.round(along, 3).tolist(), cardiac.phases, strict=True))
    if len(placed) != slices:
        raise DicomError(
            "two images of one cardiac phase lie at the same position; a cine holds each "
            "slice once per phase",
            code="invalid_attribute",
            attribute="TemporalPositionIdentifier",
        )


def _order(along: npt.NDArray[np.float64], cardiac: CardiacPhases | None) -> npt.NDArray[np.intp]:
    """The images in instance order: by position along the slice normal, then (a cine) by
    trigger time, then phase."""
    if cardiac is None:
        return np.argsort(along, kind="stable")
    position = np.round(along, 3)
    phases = np.asarray(cardiac.phases)
    times = np.asarray(cardiac.trigger_times_ms or cardiac.phases, dtype=np.float64)
    return np.lexsort((phases, times, position))


def _cardiac(ds: Dataset, cardiac: CardiacPhases, *, index: int) -> None:
    """The MR Image module's cardiac attributes of image `index` of a cine."""
    numbers = sorted(set(cardiac.phases))
    ds.CardiacNumberOfImages = len(numbers)
    ds.TemporalPositionIdentifier = numbers.index(cardiac.phases[index]) + 1
    ds.NumberOfTemporalPositions = len(numbers)
    if cardiac.trigger_times_ms is not None:
        ds.ScanOptions = "CG"  # cardiac gating; TriggerTime is then required
        ds.TriggerTime = _ds(cardiac.trigger_times_ms[index])
    # Both are integer strings (IS): whole milliseconds and beats per minute.
    if cardiac.nominal_interval_ms is not None:
        ds.NominalInterval = round(cardiac.nominal_interval_ms)
    if cardiac.heart_rate_bpm is not None:
        ds.HeartRate = round(cardiac.heart_rate_bpm)


def _spacing(along: npt.NDArray[np.float64]) -> float | None:
    """The distance between neighbouring slice positions when it is one distance."""
    gaps = np.diff(np.unique(np.round(along, 4)))
    if gaps.size == 0 or np.ptp(gaps) > 1e-2 * max(float(gaps.max()), 1e-6):
        return None
    return float(np.mean(gaps))


def _uid(*parts: str) -> str:
    return str(generate_uid(entropy_srcs=list(parts)))


def mr_series(
    images: npt.NDArray[np.float32],
    *,
    fov_mm: tuple[float, float, float],
    geometry: SliceGeometry | None = None,
    context: MrContext | None = None,
    cardiac: CardiacPhases | None = None,
) -> list[Dataset]:
    """One MR Image Storage instance per slice (slices x rows x columns magnitude images,
    rows along the readout, columns along the phase encode), numbered by position.

    `fov_mm` is the (readout, phase-encode, slice) field of view: pixel spacing follows
    from it over the matrix and the slice thickness is its third value. `geometry` places
    the slices (without it, slice centres are `fov_mm[2]` apart along z, readout along x).
    Values are stored as 12-bit integers with a RescaleSlope that gives back the
    reconstructed magnitudes; the window is in those magnitudes. `cardiac` makes the
    images a cine: several images per position, one per cardiac phase.
    """
    if images.ndim != 3:
        raise DicomError(
            f"expected slices x rows x columns images, got shape {images.shape}",
            code="invalid_attribute",
        )
    if len(fov_mm) != 3 or not all(math.isfinite(v) and v > 0 for v in fov_mm):
        raise DicomError(
            f"the field of view {list(fov_mm)} mm must be three positive numbers (readout, "
            "phase encode, slice)",
            code="invalid_attribute",
            attribute="PixelSpacing",
        )
    context = context or MrContext()
    stored, slope = _scaled(images.astype(np.float32))
    slices, rows, cols = stored.shape
    row_mm, col_mm = fov_mm[0] / rows, fov_mm[1] / cols
    thickness = float(fov_mm[2])
    if geometry is None:
        geometry = SliceGeometry(centres_mm=tuple((0.0, 0.0, i * thickness) for i in range(slices)))
    centres, read, phase = _checked(geometry, slices=slices)
    normal = np.asarray(geometry.slice_dir, dtype=np.float64)
    if not np.any(normal):
        normal = np.cross(read, phase)
    along = centres @ normal
    if cardiac is not None:
        _checked_cardiac(cardiac, along=along)
    order = _order(along, cardiac)
    # fftshift puts the FOV centre on pixel (rows // 2, columns // 2).
    corners = centres - (rows // 2) * row_mm * read - (cols // 2) * col_mm * phase
    between = _spacing(along)
    width = float(np.percentile(stored, 99.5)) * slope or slope
    series_uid = context.series_instance_uid or generate_uid()
    study_uid = context.study_instance_uid or _uid(series_uid, "study")
    frame_uid = context.frame_of_reference_uid or _uid(series_uid, "frame")
    out = []
    for number, index in enumerate(order, start=1):
        sop_uid = _uid(series_uid, str(number))
        ds = _base(context, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.InstanceNumber = number
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [_ds(row_mm), _ds(col_mm)]
        ds.SliceThickness = _ds(thickness)
        if between is not None:
            ds.SpacingBetweenSlices = _ds(between)
        ds.ImageOrientationPatient = [_ds(v) for v in (*phase, *read)]
        ds.ImagePositionPatient = [_ds(v) for v in corners[index]]
        ds.SliceLocation = _ds(float(along[index]))
        if cardiac is not None:
            _cardiac(ds, cardiac, index=int(index))
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:.10g}", 0, "US"
        ds.WindowCenter, ds.WindowWidth = _ds(width / 2), _ds(width)
        ds.PixelData = stored[index].tobytes()
        out.append(ds)
    return out


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"


def _optional(ds: Dataset, keyword: str, value: float | None, *, scale: float = 1.0) -> None:
    setattr(ds, keyword, None if value is None else _ds(value * scale))


def _mr(ds: Dataset, context: MrContext) -> None:
    """The MR Image module's acquisition attributes (type 2 ones empty when unknown)."""
    ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "2D"
    ds.ScanOptions, ds.EchoTrainLength = "", None
    _optional(ds, "EchoTime", context.echo_time_ms)
    if context.echo_number is not None:
        ds.EchoNumbers = context.echo_number
    if context.temporal_position is not None:
        ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions = context.temporal_position
    _optional(ds, "RepetitionTime", context.repetition_time_ms)
    for keyword, value in (
        ("InversionTime", context.inversion_time_ms),
        ("FlipAngle", context.flip_angle_deg),
        ("MagneticFieldStrength", context.field_strength_t),
        ("ImagingFrequency", context.imaging_frequency_mhz),
    ):
        if value is not None:
            _optional(ds, keyword, value)


def _base(context: MrContext, *, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.PatientName = context.patient_id, context.patient_name
    ds.PatientBirthDate, ds.PatientSex = context.patient_birth_date, context.patient_sex
    ds.StudyDate, ds.StudyTime = context.study_date, context.study_time
    ds.StudyDescription, ds.SeriesDescription = (
        context.study_description,
        context.series_description,
    )
    ds.Modality, ds.Manufacturer, ds.SeriesNumber = "MR", "voxelhub", context.series_number
    ds.PatientPosition = context.patient_position
    ds.ImageType = ["DERIVED", "PRIMARY", "M", "RECON"]
    _mr(ds, context)
    ds.ProtocolName = context.protocol[:64]
    ds.DerivationDescription = (context.derivation or "reconstructed")[:1024]
    if context.source:
        ds.ImageComments = f"raw data: {context.source}"[:10240]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.AccessionNumber, ds.StudyID = context.accession_number, context.study_id
    ds.ReferringPhysicianName = context.referring_physician_name
    return ds
