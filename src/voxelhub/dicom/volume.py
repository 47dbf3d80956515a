"""A series of single-frame slices as one 3D volume in real units, and its MHA file.

Slices are ordered by their position along the slice normal (the cross product of the
ImageOrientationPatient cosines), not by InstanceNumber, and rescaled to real units
(Hounsfield units for CT).

>>> from voxelhub.dicom.synthetic import ct_phantom
>>> volume, geometry = series_to_volume(ct_phantom(slices=3, size=16, slice_thickness_mm=2.5))
>>> volume.shape, geometry.spacing, int(volume.min())
((3, 16, 16), (1.5, 1.5, 2.5), -1000)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK
from pydicom.dataset import Dataset

from voxelhub.dicom.errors import DicomError

_TOLERANCE_MM = 1e-3
_RELATIVE_GAP_TOLERANCE = 0.01
# Slices may drift within their plane by this fraction of a pixel (rounded positions).
_IN_PLANE_TOLERANCE = 0.1


@dataclass(frozen=True)
class Geometry:
    """Where a volume lies in patient space (LPS, millimetres), in SimpleITK's terms.

    `spacing` and `origin` are (x, y, z); `direction` is the row-major 3x3 matrix whose
    columns are the directions of increasing column, row and slice index.
    """

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, float, float, float, float, float, float, float, float]


def series_to_volume(
    datasets: Sequence[Dataset],
) -> tuple[npt.NDArray[np.int16] | npt.NDArray[np.float32], Geometry]:
    """The (slice, row, column) volume of a series in real units, and its geometry.

    The volume is int16 when every rescaled value is a whole number in int16's range
    (CT in HU), else float32.
    """
    if not datasets:
        raise DicomError("A volume needs at least one slice.", code="missing_attribute")
    for ds in datasets:
        _check_single_frame(ds)
    row, column = _orientation(datasets)
    normal = np.cross(row, column)
    positions = [_vector(ds, "ImagePositionPatient", 3) for ds in datasets]
    order = np.argsort([float(np.dot(p, normal)) for p in positions], kind="stable")
    ordered = [datasets[i] for i in order]
    slice_spacing = _slice_spacing([float(np.dot(positions[i], normal)) for i in order], ordered)
    row_spacing, column_spacing = _pixel_spacing(datasets)
    _check_stacked([positions[i] for i in order], normal, pixel=min(row_spacing, column_spacing))
    _check_size(datasets)
    volume = np.stack([_rescaled(ds) for ds in ordered])
    direction = np.column_stack([row, column, normal]).ravel()
    geometry = Geometry(
        spacing=(column_spacing, row_spacing, slice_spacing),
        origin=tuple(float(v) for v in positions[order[0]]),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),  # type: ignore[arg-type]
    )
    return _narrowed(volume), geometry


def write_mha(
    volume: npt.NDArray[np.int16] | npt.NDArray[np.float32], geometry: Geometry, path: Path
) -> None:
    """Write `volume` with its geometry as a compressed MetaImage (.mha) file."""
    image = SimpleITK.GetImageFromArray(volume)
    # SimpleITK's generated bindings carry no parameter types.
    image.SetSpacing(geometry.spacing)  # type: ignore[no-untyped-call]
    image.SetOrigin(geometry.origin)  # type: ignore[no-untyped-call]
    image.SetDirection(geometry.direction)  # type: ignore[no-untyped-call]
    SimpleITK.WriteImage(image, str(path), useCompression=True)


def _check_single_frame(ds: Dataset) -> None:
    if int(ds.get("NumberOfFrames") or 1) != 1 or int(ds.get("SamplesPerPixel") or 1) != 1:
        raise DicomError(
            "A volume is built from single-frame greyscale slices; "
            f"{ds.get('SOPInstanceUID', 'a slice')} is multi-frame or colour.",
            code="invalid_attribute",
            attribute="NumberOfFrames",
        )


def _vector(ds: Dataset, keyword: str, length: int) -> npt.NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or len(value) != length:
        raise DicomError(
            f"{keyword} is missing or does not have {length} values; the slice cannot be "
            "placed in the volume.",
            code="missing_attribute",
            attribute=keyword,
        )
    return np.array([float(v) for v in value], dtype=np.float64)


def _orientation(
    datasets: Sequence[Dataset],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    cosines = [_vector(ds, "ImageOrientationPatient", 6) for ds in datasets]
    first = cosines[0]
    if any(not np.allclose(c, first, atol=_TOLERANCE_MM) for c in cosines[1:]):
        raise _inconsistent("ImageOrientationPatient", "orientation")
    row, column = first[:3], first[3:]
    return row / np.linalg.norm(row), column / np.linalg.norm(column)


def _pixel_spacing(datasets: Sequence[Dataset]) -> tuple[float, float]:
    spacings = [_vector(ds, "PixelSpacing", 2) for ds in datasets]
    if any(not np.allclose(s, spacings[0], atol=_TOLERANCE_MM) for s in spacings[1:]):
        raise _inconsistent("PixelSpacing", "pixel spacing")
    return float(spacings[0][0]), float(spacings[0][1])


def _slice_spacing(distances: list[float], ordered: Sequence[Dataset]) -> float:
    if len(distances) == 1:
        return float(
            ordered[0].get("SpacingBetweenSlices") or ordered[0].get("SliceThickness") or 1.0
        )
    gaps = np.diff(distances)
    mean = float(gaps.mean())
    if (
        mean <= _TOLERANCE_MM
        or np.abs(gaps - mean).max() > _TOLERANCE_MM + _RELATIVE_GAP_TOLERANCE * mean
    ):
        raise DicomError(
            "The slices are not evenly spaced along their normal (gaps from "
            f"{gaps.min():.3f} to {gaps.max():.3f} mm); a slice is missing or duplicated.",
            code="invalid_attribute",
            attribute="ImagePositionPatient",
        )
    return mean


def _check_stacked(
    positions: Sequence[npt.NDArray[np.float64]], normal: npt.NDArray[np.float64], *, pixel: float
) -> None:
    """Refuse slices whose corners do not lie on one line along the normal.

    With a gantry tilt each slice is shifted within its plane from the one before; a
    regular grid (what an MHA holds) would put every slice after the first in the wrong
    place, by more the further it is.
    """
    steps = [p - positions[0] for p in positions]
    shifts = [float(np.linalg.norm(d - np.dot(d, normal) * normal)) for d in steps]
    if max(shifts) <= max(_TOLERANCE_MM, _IN_PLANE_TOLERANCE * pixel):
        return
    along = abs(float(np.dot(steps[-1], normal)))
    angle = float(np.degrees(np.arctan2(shifts[-1], along)))
    raise DicomError(
        "The slices are shifted within their plane from one to the next (by up to "
        f"{max(shifts):.2f} mm, as with a gantry tilt of {angle:.1f} degrees); a volume on a "
        "regular grid would misplace them. Correct the tilt (for example with dcm2niix) "
        "or send the slices of one stack as their own series.",
        code="invalid_attribute",
        attribute="ImagePositionPatient",
    )


def _check_size(datasets: Sequence[Dataset]) -> None:
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise _inconsistent("Rows", "size")


def _rescaled(ds: Dataset) -> npt.NDArray[np.float64]:
    slope = float(ds.get("RescaleSlope") or 1.0)
    intercept = float(ds.get("RescaleIntercept") or 0.0)
    return ds.pixel_array.astype(np.float64) * slope + intercept


def _narrowed(volume: npt.NDArray[np.float64]) -> npt.NDArray[np.int16] | npt.NDArray[np.float32]:
    info = np.iinfo(np.int16)
    if (
        np.array_equal(volume, np.round(volume))
        and volume.min() >= info.min
        and volume.max() <= info.max
    ):
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def _inconsistent(attribute: str, what: str) -> DicomError:
    return DicomError(
        f"The slices do not share one {what} ({attribute}); a volume needs them all equal.",
        code="invalid_attribute",
        attribute=attribute,
    )
