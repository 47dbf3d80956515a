"""A series of slices as one 3D volume in real units, and its MHA file.

The slices are the single-frame instances of the series, or the frames of its Enhanced
(multi-frame) instances, placed by their functional groups (see `voxelhub.dicom.planes`).
They are ordered by their position along the slice normal (the cross product of the
ImageOrientationPatient cosines), not by InstanceNumber or frame number, and rescaled to
real units (Hounsfield units for CT).

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
from voxelhub.dicom.planes import Plane, image_planes, is_enhanced

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
    planes = [plane for ds in datasets for plane in image_planes(ds)]
    row, column = _orientation(planes)
    normal = np.cross(row, column)
    distances = [float(np.dot(plane.position, normal)) for plane in planes]
    order = np.argsort(distances, kind="stable")
    ordered = [planes[i] for i in order]
    slice_spacing = _slice_spacing([distances[i] for i in order], ordered)
    row_spacing, column_spacing = _pixel_spacing(planes)
    positions = [np.array(plane.position) for plane in ordered]
    _check_stacked(positions, normal, pixel=min(row_spacing, column_spacing))
    _check_size(datasets)
    volume = _rescaled(ordered)
    direction = np.column_stack([row, column, normal]).ravel()
    geometry = Geometry(
        spacing=(column_spacing, row_spacing, slice_spacing),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),  # type: ignore[arg-type]
    )
    return _narrowed(volume), geometry


def instances_in_slice_order(datasets: Sequence[Dataset]) -> tuple[Dataset, ...] | None:
    """The instances in the order `series_to_volume` stacks them, when each is one slice.

    None when an instance is an Enhanced image: its slices are frames, not instances.
    Call it on a series `series_to_volume` accepted.
    """
    if any(is_enhanced(ds) for ds in datasets):
        return None
    planes = [image_planes(ds)[0] for ds in datasets]
    row, column = _orientation(planes)
    normal = np.cross(row, column)
    order = np.argsort([float(np.dot(plane.position, normal)) for plane in planes], kind="stable")
    return tuple(datasets[i] for i in order)


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


def _orientation(
    planes: Sequence[Plane],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    first = np.array(planes[0].orientation)
    if any(not np.allclose(p.orientation, first, atol=_TOLERANCE_MM) for p in planes[1:]):
        raise _inconsistent("ImageOrientationPatient", "orientation")
    row, column = first[:3], first[3:]
    return row / np.linalg.norm(row), column / np.linalg.norm(column)


def _pixel_spacing(planes: Sequence[Plane]) -> tuple[float, float]:
    first = planes[0].pixel_spacing
    if any(not np.allclose(p.pixel_spacing, first, atol=_TOLERANCE_MM) for p in planes[1:]):
        raise _inconsistent("PixelSpacing", "pixel spacing")
    return first[0], first[1]


def _slice_spacing(distances: list[float], ordered: Sequence[Plane]) -> float:
    if len(distances) == 1:
        return ordered[0].slice_spacing or 1.0
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


def _rescaled(ordered: Sequence[Plane]) -> npt.NDArray[np.float64]:
    """The planes' pixels in real units; each instance's pixel data is decoded once."""
    frames: dict[int, npt.NDArray[np.generic]] = {}
    for plane in ordered:
        ds = plane.dataset
        if id(ds) not in frames:
            frames[id(ds)] = ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns))
    return np.stack(
        [
            frames[id(p.dataset)][p.frame_index].astype(np.float64) * p.slope + p.intercept
            for p in ordered
        ]
    )


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
