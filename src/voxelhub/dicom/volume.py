"""A series of slices as one 3D volume in real units, and its MHA file.

The slices are the single-frame instances of the series, or the frames of its Enhanced
(multi-frame) instances, placed by their functional groups (see `voxelhub.dicom.planes`).
They are ordered by their position along the slice normal (the cross product of the
ImageOrientationPatient cosines), not by InstanceNumber or frame number, and rescaled to
real units (Hounsfield units for CT). The volume's axes are the row and column cosines
and the normal; the slices of a gantry-tilted series, shifted within their planes, are
resampled onto that grid (see `voxelhub.dicom.tilt`). `slice_sources` says which acquired
frame each slice came from, for writers that reference them (see `voxelhub.dicom.slices`).

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
from voxelhub.dicom.slices import SliceSources
from voxelhub.dicom.tilt import Tilt, measure_tilt, tilt_grid, untilt

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


@dataclass(frozen=True)
class SeriesVolume:
    """A series as a volume: its voxels, its geometry and what the conversion changed.

    `gantry_tilt_degrees` is set when the slices were resampled within their planes to
    correct a gantry tilt (see `voxelhub.dicom.tilt`); `notes` says so in words, for the
    report of whoever asked for the volume.
    """

    voxels: npt.NDArray[np.int16] | npt.NDArray[np.float32]
    geometry: Geometry
    gantry_tilt_degrees: float | None = None

    @property
    def notes(self) -> tuple[str, ...]:
        if self.gantry_tilt_degrees is None:
            return ()
        return (
            f"the slices were resampled to correct a gantry tilt of "
            f"{self.gantry_tilt_degrees:.1f} degrees: each was shifted within its plane (linear "
            "interpolation, the image widened to keep every pixel, the series' minimum "
            "outside the slices), so the volume's axes are the slice orientation and normal",
        )


def series_to_volume(
    datasets: Sequence[Dataset],
) -> tuple[npt.NDArray[np.int16] | npt.NDArray[np.float32], Geometry]:
    """The (slice, row, column) volume of a series in real units, and its geometry.

    The volume is int16 when every rescaled value is a whole number in int16's range
    (CT in HU), else float32. A gantry-tilted series is resampled (see `series_volume`).
    """
    converted = series_volume(datasets)
    return converted.voxels, converted.geometry


def series_volume(datasets: Sequence[Dataset]) -> SeriesVolume:
    """The volume of a series, as `series_to_volume`, with what the conversion changed.

    Slices of a gantry-tilted series are resampled within their planes so that each voxel
    lies where its slice said; slices that are not parallel, not evenly spaced along
    their normal or shifted in a way no tilt makes are refused.
    """
    stack = _stack(datasets)
    _check_size(datasets)
    volume = _rescaled(stack.planes)
    origin = np.array(stack.planes[0].position)
    if stack.tilt is not None:
        volume, origin = _untilted(
            volume, stack.tilt, origin=origin, axes=(stack.row, stack.column),
            spacing=stack.pixel_spacing,
        )  # fmt: skip
    direction = np.column_stack([stack.row, stack.column, stack.normal]).ravel()
    row_spacing, column_spacing = stack.pixel_spacing
    geometry = Geometry(
        spacing=(column_spacing, row_spacing, stack.slice_spacing),
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),  # type: ignore[arg-type]
    )
    return SeriesVolume(
        _narrowed(volume),
        geometry,
        gantry_tilt_degrees=None if stack.tilt is None else stack.tilt.degrees,
    )


def slice_sources(datasets: Sequence[Dataset]) -> SliceSources:
    """The acquired frame of each slice of the volume of `datasets`, and its place there.

    The slices are those `series_volume` stacks, in its order; no pixel data is read.
    Writers that reference the acquired images use it (see `voxelhub.dicom.slices`).
    """
    stack = _stack(datasets)
    _check_size(datasets)
    first = stack.planes[0].dataset
    shape = (int(first.Rows), int(first.Columns))
    if stack.tilt is None:
        return SliceSources(stack.planes, ((0.0, 0.0),) * len(stack.planes), shape)
    grid = tilt_grid(stack.tilt, pixel_spacing=stack.pixel_spacing, shape=shape)
    return SliceSources(stack.planes, grid.offsets, grid.size)


def instances_in_slice_order(datasets: Sequence[Dataset]) -> tuple[Dataset, ...] | None:
    """The instances in the order `series_to_volume` stacks them, when each is one slice.

    None when an instance is an Enhanced image (its slices are frames, not instances), or
    when the slices were resampled for a gantry tilt (a slice of the volume is no longer
    the pixels of its instance); `slice_sources` describes those. Call it on a series
    `series_to_volume` accepted.
    """
    if any(is_enhanced(ds) for ds in datasets):
        return None
    stack = _stack(datasets)
    if stack.tilt is not None:
        return None
    return tuple(plane.dataset for plane in stack.planes)


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


@dataclass(frozen=True, eq=False)
class _Stack:
    """The planes of a series in stacking order, their axes and spacing, and any tilt.

    `pixel_spacing` is (between rows, between columns), as PixelSpacing gives it.
    """

    planes: tuple[Plane, ...]
    row: npt.NDArray[np.float64]
    column: npt.NDArray[np.float64]
    normal: npt.NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    tilt: Tilt | None


def _stack(datasets: Sequence[Dataset]) -> _Stack:
    if not datasets:
        raise DicomError("A volume needs at least one slice.", code="missing_attribute")
    planes = [plane for ds in datasets for plane in image_planes(ds)]
    row, column = _orientation(planes)
    normal = np.cross(row, column)
    distances = [float(np.dot(plane.position, normal)) for plane in planes]
    order = np.argsort(distances, kind="stable")
    ordered = tuple(planes[i] for i in order)
    slice_spacing = _slice_spacing([distances[i] for i in order], ordered)
    pixel_spacing = _pixel_spacing(planes)
    positions = [np.array(plane.position) for plane in ordered]
    tilt = _tilt(positions, row, column, normal, pixel=min(pixel_spacing))
    return _Stack(ordered, row, column, normal, pixel_spacing, slice_spacing, tilt)


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


def _tilt(
    positions: Sequence[npt.NDArray[np.float64]],
    row: npt.NDArray[np.float64],
    column: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    *,
    pixel: float,
) -> Tilt | None:
    """The gantry tilt of the slices, or None when their corners lie on one line along the
    normal (within a tenth of a pixel: scanners round the positions)."""
    tolerance = max(_TOLERANCE_MM, _IN_PLANE_TOLERANCE * pixel)
    return measure_tilt(positions, row, column, normal, tolerance_mm=tolerance)


def _untilted(
    volume: npt.NDArray[np.float64],
    tilt: Tilt,
    *,
    origin: npt.NDArray[np.float64],
    axes: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    spacing: tuple[float, float],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The slices resampled onto one grid, filled with the series' minimum (as dcm2niix
    fills with the darkest value), and the grid's origin.

    `axes` are the row and column cosines, `spacing` the PixelSpacing (between rows,
    between columns).
    """
    row, column = axes
    row_spacing, column_spacing = spacing
    untilted = untilt(volume, tilt, pixel_spacing=spacing, fill=float(volume.min()))
    voxels = untilted.voxels
    if np.array_equal(volume, np.round(volume)):
        # Interpolated HU stay whole numbers (16-bit), as dcm2niix keeps them.
        voxels = np.round(voxels)
    rows_before, columns_before = untilted.padding
    shift = columns_before * column_spacing * row + rows_before * row_spacing * column
    return voxels, origin - shift


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
