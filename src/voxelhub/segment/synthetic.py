"""Synthetic cases with known labels: a CT abdomen with a spleen, an MR brain with a tumour.

Deterministic for a seed; arrays are (z, y, x) like SimpleITK's, in real units (HU for
CT), with their `Geometry`; `to_image` makes SimpleITK images and `dicom_series` writes
any of them as a DICOM series.

>>> case = ct_case(shape=(16, 32, 32), seed=1)
>>> case.image.dtype, int(case.labels.max()), case.label_names
(dtype('int16'), 1, {1: 'spleen'})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage

from voxelhub.dicom.synthetic import PatientInfo
from voxelhub.dicom.volume import Geometry

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# BraTS labels: necrotic core, peritumoral oedema, enhancing tumour.
NECROTIC, EDEMA, ENHANCING = 1, 2, 4
MR_ROLES = ("t1c", "t1", "t2", "flair")


@dataclass(frozen=True, eq=False)
class SyntheticCase:
    """Images (one per channel, (z, y, x)), the label map and where they lie."""

    channels: dict[str, npt.NDArray[np.int16] | npt.NDArray[np.float32]]
    labels: npt.NDArray[np.uint8]
    geometry: Geometry
    label_names: dict[int, str]

    @property
    def image(self) -> npt.NDArray[np.int16] | npt.NDArray[np.float32]:
        return next(iter(self.channels.values()))

    def to_image(self, array: npt.NDArray[np.generic]) -> SimpleITK.Image:
        image = SimpleITK.GetImageFromArray(array)
        image.SetSpacing(self.geometry.spacing)  # type: ignore[no-untyped-call]
        image.SetOrigin(self.geometry.origin)  # type: ignore[no-untyped-call]
        image.SetDirection(self.geometry.direction)  # type: ignore[no-untyped-call]
        return image

    def images(self) -> dict[str, SimpleITK.Image]:
        return {role: self.to_image(array) for role, array in self.channels.items()}


def _grid(shape: Sequence[int]) -> tuple[npt.NDArray[np.float32], ...]:
    z, y, x = np.meshgrid(
        *[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij"
    )
    return z, y, x


def _ellipsoid(
    grid: tuple[npt.NDArray[np.float32], ...], centre: Sequence[float], radii: npt.ArrayLike
) -> npt.NDArray[np.bool_]:
    total = sum(
        ((axis - c) / r) ** 2 for axis, c, r in zip(grid, centre, np.asarray(radii), strict=True)
    )
    return np.asarray(total <= 1.0)


def _texture(
    rng: np.random.Generator, shape: Sequence[int], sigma: float
) -> npt.NDArray[np.float32]:
    noise = rng.standard_normal(shape).astype(np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma)
    return np.asarray(smooth / (smooth.std() + 1e-6), dtype=np.float32)


def ct_case(
    shape: tuple[int, int, int] = (64, 96, 96),
    *,
    spacing: tuple[float, float, float] = (3.0, 3.0, 4.0),
    seed: int = 0,
    noise_hu: float = 12.0,
) -> SyntheticCase:
    """A CT-like abdomen in HU: body, liver, kidneys, spine and a spleen (label 1).

    `shape` is (z, y, x); `spacing` is (x, y, z) mm. The spleen sits on the patient's left
    (+x in LPS) with a seed-dependent size and position.
    """
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    volume = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipsoid(grid, (0, 0.05, 0), (1.5, 0.75, 0.92))
    volume[body] = -100.0
    volume[_ellipsoid(grid, (0, 0.05, 0), (1.5, 0.68, 0.85))] = 35.0
    volume[_ellipsoid(grid, (0.1, -0.05, -0.35), (0.6, 0.4, 0.35))] = 60.0  # liver
    for side in (-1, 1):
        volume[_ellipsoid(grid, (0, 0.35, side * 0.32), (0.35, 0.14, 0.1))] = 150.0  # kidneys
    volume[_ellipsoid(grid, (0, 0.5, 0), (1.5, 0.1, 0.1))] = 500.0  # spine
    jitter = rng.uniform(-0.06, 0.06, size=3)
    radii = np.array([0.35, 0.22, 0.13]) * rng.uniform(0.85, 1.15, size=3)
    spleen = _ellipsoid(grid, (jitter[0], -0.05 + jitter[1], 0.5 + jitter[2]), radii)
    volume[spleen] = 110.0
    texture = noise_hu * _texture(rng, shape, 1.0) + 5.0 * _texture(rng, shape, 3.0)
    volume[body] += texture[body]
    volume += rng.normal(0.0, noise_hu / 2, size=shape).astype(np.float32)
    geometry = _centred(shape, spacing)
    return SyntheticCase(
        channels={"ct": np.clip(np.rint(volume), -1024, 3071).astype(np.int16)},
        labels=spleen.astype(np.uint8),
        geometry=geometry,
        label_names={1: "spleen"},
    )


def mr_brain_case(
    shape: tuple[int, int, int] = (48, 64, 64),
    *,
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    seed: int = 0,
) -> SyntheticCase:
    """A 4-channel MR-like brain (T1c, T1, T2, FLAIR) with a tumour in BraTS labels.

    Labels: 1 necrotic core, 2 peritumoral oedema, 4 enhancing rim (`brats_regions` gives
    the nested tumour core / whole tumour / enhancing tumour masks). Background is 0.
    """
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    head = _ellipsoid(grid, (0, 0, 0), (0.9, 0.85, 0.75))
    brain = _ellipsoid(grid, (0, 0, 0), (0.8, 0.75, 0.66))
    centre = (rng.uniform(-0.2, 0.2), rng.uniform(-0.25, 0.25), rng.choice([-0.3, 0.3]))
    size = rng.uniform(0.8, 1.2)
    edema = _ellipsoid(grid, centre, np.array([0.4, 0.38, 0.3]) * size) & brain
    rim = _ellipsoid(grid, centre, np.array([0.24, 0.22, 0.18]) * size)
    core = _ellipsoid(grid, centre, np.array([0.14, 0.13, 0.1]) * size)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[edema], labels[rim], labels[core] = EDEMA, ENHANCING, NECROTIC
    # Intensity of scalp, brain, oedema, enhancing rim, necrosis in each contrast.
    table = {
        "t1c": (500, 600, 450, 1300, 300),
        "t1": (500, 600, 450, 550, 300),
        "t2": (300, 700, 1300, 1000, 1500),
        "flair": (350, 600, 1400, 1100, 800),
    }
    regions = (head & ~brain, brain, labels == EDEMA, labels == ENHANCING, labels == NECROTIC)
    channels: dict[str, npt.NDArray[np.float32]] = {}
    for role in MR_ROLES:
        image = np.zeros(shape, dtype=np.float32)
        for region, value in zip(regions, table[role], strict=True):
            image[region] = value
        image[head] *= 1.0 + 0.05 * _texture(rng, shape, 1.5)[head]
        image[head] += rng.normal(0.0, 20.0, size=int(head.sum())).astype(np.float32)
        channels[role] = np.clip(image, 0.0, None)
    return SyntheticCase(
        channels=dict(channels.items()),
        labels=labels,
        geometry=_centred(shape, spacing),
        label_names={NECROTIC: "necrotic core", EDEMA: "edema", ENHANCING: "enhancing tumor"},
    )


def brats_regions(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """(3, ...) nested masks: tumour core (1, 4), whole tumour (1, 2, 4), enhancing (4)."""
    return np.stack(
        [
            np.isin(labels, (NECROTIC, ENHANCING)),
            np.isin(labels, (NECROTIC, EDEMA, ENHANCING)),
            labels == ENHANCING,
        ]
    )


def _centred(shape: Sequence[int], spacing: tuple[float, float, float]) -> Geometry:
    extent = [s * (n - 1) / 2 for s, n in zip(spacing, reversed(shape), strict=True)]
    return Geometry(
        spacing=spacing, origin=(-extent[0], -extent[1], -extent[2]), direction=IDENTITY
    )


def dicom_series(
    volume: npt.NDArray[np.generic],
    geometry: Geometry,
    *,
    modality: str = "CT",
    series_description: str = "Synthetic CT",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    patient: PatientInfo | None = None,
) -> list[Dataset]:
    """One single-frame DICOM dataset per slice of a (z, y, x) volume in real units.

    CT stores HU with RescaleIntercept -1024; MR stores rounded non-negative values.
    Give the same study and frame-of-reference UIDs to series of one case.
    """
    patient = patient or PatientInfo()
    study = study_instance_uid or generate_uid()
    frame = frame_of_reference_uid or generate_uid()
    series_uid, now = generate_uid(), datetime.now()
    direction = np.array(geometry.direction).reshape(3, 3)
    intercept = -1024 if modality == "CT" else 0
    datasets = []
    for index in range(volume.shape[0]):
        ds = _header(modality, patient, now)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = (
            series_description,
            series_number,
            index + 1,
        )
        position = np.array(geometry.origin) + direction[:, 2] * geometry.spacing[2] * index
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [geometry.spacing[1], geometry.spacing[0]]
        ds.SliceThickness = geometry.spacing[2]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
        stored = np.rint(volume[index].astype(np.float64) - intercept).clip(0, 65535)
        ds.PixelData = stored.astype(np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: Sequence[Dataset], folder: Path) -> Path:
    """Write datasets as `folder/NNNN.dcm` files; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, ds in enumerate(datasets):
        ds.save_as(folder / f"{index:04d}.dcm", enforce_file_format=True)
    return folder


def _header(modality: str, patient: PatientInfo, now: datetime) -> Dataset:
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientID, ds.PatientName = patient.patient_id, patient.patient_name
    ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber, ds.StudyID, ds.StudyDescription = "SYN0001", "1", "Synthetic case"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.Manufacturer = modality, "voxelhub"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "3D", 10.0, 500.0
        ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 3.0
    else:
        ds.RescaleType, ds.KVP = "HU", 120
    return ds
