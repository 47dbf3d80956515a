"""Where a series' slices lie in patient space, and whether they form one volume.

A volume is (slice, row, column): slices ordered along the normal of their common
orientation (row cosine x column cosine), evenly spaced, all of one size. Patient space
is DICOM's LPS (x to the patient's left, y to posterior, z to the head), in millimetres.

The slices of a gantry-tilted CT are each shifted within their plane from the one before
(see `voxelhub.dicom.tilt`). The volume keeps them as acquired, and its geometry says
where each lies on the regular grid that coronal and sagittal images are cut from.

>>> slices = [SliceInfo(position=(0.0, 0.0, 2.0 * k), orientation=AXIAL_COSINES,
...                     pixel_spacing=(0.5, 0.5), rows=4, columns=4) for k in (2, 0, 1)]
>>> plan = plan_volume(slices)
>>> plan.order, plan.geometry.spacing if plan.geometry else None
((1, 2, 0), (2.0, 0.5, 0.5))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.tilt import measure_tilt, tilt_grid

Vector = tuple[float, float, float]
AXIAL_COSINES = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_COSINE_TOLERANCE = 1e-3
_SPACING_TOLERANCE_MM = 1e-3
_RELATIVE_GAP_TOLERANCE = 0.01
# Slices may drift within their plane by this fraction of a pixel and still stack: scanners
# round the positions (as `voxelhub.dicom.volume` allows).
_IN_PLANE_TOLERANCE = 0.1


class Plane(StrEnum):
    """The three planes of a volume: across slices (axial), rows (coronal), columns."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


@dataclass(frozen=True)
class SliceInfo:
    """What the geometry of one image needs (None where the attribute is missing)."""

    position: Vector | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns), mm
    rows: int
    columns: int
    frames: int = 1
    samples: int = 1


@dataclass(frozen=True)
class SliceTilt:
    """Where the slices of a gantry-tilted series lie on the grid reformats are cut from.

    The grid is the one `voxelhub.dicom.tilt.untilt` resamples onto: the slices' row and
    column cosines and their normal as axes, widened so that every slice fits. `offsets`
    holds, per slice, the (rows, columns) from the grid's first row and column to the
    slice's first pixel; `size` is the grid's (rows, columns).
    """

    degrees: float
    offsets: tuple[tuple[float, float], ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class VolumeGeometry:
    """The grid of a volume: dims and spacing are (slices, rows, columns).

    `origin` is the centre of the first slice's first pixel. `tilt` is set when the slices
    are shifted within their plane (a gantry tilt): `dims` are then those of the slices as
    acquired, and coronal and sagittal images are cut from the wider grid of `tilt`.
    """

    dims: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: Vector
    row_cosine: Vector  # direction of increasing column index
    column_cosine: Vector  # direction of increasing row index
    normal: Vector  # direction of increasing slice index
    tilt: SliceTilt | None = None

    def axis(self, plane: Plane) -> int:
        return {Plane.AXIAL: 0, Plane.CORONAL: 1, Plane.SAGITTAL: 2}[plane]

    def plane_size(self, plane: Plane) -> int:
        """How many images the plane has (axial: slices, coronal: rows, sagittal: columns)."""
        if plane is not Plane.AXIAL and self.tilt is not None:
            return self.tilt.size[self.axis(plane) - 1]
        return self.dims[self.axis(plane)]

    def image_spacing(self, plane: Plane) -> tuple[float, float]:
        """(vertical, horizontal) millimetres between pixels of an image in `plane`."""
        slice_mm, row_mm, column_mm = self.spacing
        if plane is Plane.AXIAL:
            return row_mm, column_mm
        if plane is Plane.CORONAL:
            return slice_mm, column_mm
        return slice_mm, row_mm

    def flipped(self, plane: Plane) -> bool:
        """Whether a reformatted image is turned upside down so that the head is at the top."""
        return plane is not Plane.AXIAL and self.normal[2] > 0

    def screen_axes(self, plane: Plane) -> tuple[Vector, Vector]:
        """The patient directions of moving right and moving down in an image of `plane`."""
        if plane is Plane.AXIAL:
            return self.row_cosine, self.column_cosine
        down = _neg(self.normal) if self.flipped(plane) else self.normal
        across = self.row_cosine if plane is Plane.CORONAL else self.column_cosine
        return across, down

    def orientation_labels(self) -> dict[str, dict[str, str]]:
        """The patient direction at each edge of each plane (L/R, A/P, S/I)."""
        labels = {}
        for plane in Plane:
            right, down = self.screen_axes(plane)
            labels[plane.value] = {
                "top": direction_letter(_neg(down)),
                "bottom": direction_letter(down),
                "left": direction_letter(_neg(right)),
                "right": direction_letter(right),
            }
        return labels

    def grid_origin(self) -> Vector:
        """The patient position (LPS, mm) of voxel (0, 0, 0) of the grid reformats are cut
        from: the first slice's first pixel, or for a gantry-tilted series the corner of
        the wider grid, the rows and columns added before that pixel away from it."""
        if self.tilt is None:
            return self.origin
        rows, columns = self.tilt.offsets[0]
        return self.position_mm((0, -rows, -columns))

    def grid_steps_mm(self) -> tuple[Vector, Vector, Vector]:
        """The patient displacement (mm) of one step along the grid's slices, rows, columns."""
        slice_mm, row_mm, column_mm = self.spacing
        return (
            _scaled(self.normal, slice_mm),
            _scaled(self.column_cosine, row_mm),
            _scaled(self.row_cosine, column_mm),
        )

    def position_mm(self, voxel: tuple[int, float, float]) -> Vector:
        """The patient position (LPS, mm) of the centre of voxel (slice, row, column).

        Rows and columns are those of the slice as acquired; fractions lie between centres.
        """
        k, r, c = voxel
        if self.tilt is not None:
            first, offsets = self.tilt.offsets[0], self.tilt.offsets[k]
            r, c = r + offsets[0] - first[0], c + offsets[1] - first[1]
        slice_mm, row_mm, column_mm = self.spacing
        point = (
            np.array(self.origin)
            + k * slice_mm * np.array(self.normal)
            + r * row_mm * np.array(self.column_cosine)
            + c * column_mm * np.array(self.row_cosine)
        )
        return (float(point[0]), float(point[1]), float(point[2]))


@dataclass(frozen=True)
class VolumePlan:
    """The order of the images in the volume, and its grid; or why they form none."""

    order: tuple[int, ...]
    geometry: VolumeGeometry | None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.geometry is not None


def direction_letter(vector: Vector) -> str:
    """The patient direction a vector points to most: L, R, A, P, S or I."""
    axis = int(np.argmax(np.abs(vector)))
    positive = vector[axis] >= 0
    return ("L", "P", "S")[axis] if positive else ("R", "A", "I")[axis]


def plan_volume(slices: Sequence[SliceInfo]) -> VolumePlan:
    """Order `slices` along their normal and check that they form one volume."""
    as_given = tuple(range(len(slices)))
    reason = _not_a_volume(slices)
    if reason is not None:
        return VolumePlan(as_given, None, reason)
    cosines = np.array(slices[0].orientation, dtype=np.float64)
    row, column = (
        cosines[:3] / np.linalg.norm(cosines[:3]),
        cosines[3:] / np.linalg.norm(cosines[3:]),
    )
    normal = np.cross(row, column)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    gaps = np.diff(distances[order])
    mean = float(gaps.mean())
    if mean <= _SPACING_TOLERANCE_MM:
        return VolumePlan(as_given, None, "two or more images lie at the same position")
    if np.abs(gaps - mean).max() > _SPACING_TOLERANCE_MM + _RELATIVE_GAP_TOLERANCE * mean:
        return VolumePlan(
            as_given,
            None,
            f"the images are not evenly spaced (gaps from {gaps.min():.3f} to "
            f"{gaps.max():.3f} mm): a slice is missing or duplicated",
        )
    spacing = slices[0].pixel_spacing or (1.0, 1.0)  # present: checked by _not_a_volume
    pixel_spacing = (float(spacing[0]), float(spacing[1]))
    try:
        tilt = _tilt(
            [positions[i] for i in order],
            (row, column, normal),
            pixel_spacing=pixel_spacing,
            shape=(slices[0].rows, slices[0].columns),
        )
    except DicomError:
        return VolumePlan(
            as_given,
            None,
            "the images are shifted within their plane, but not in proportion to their "
            "distance along the normal as a gantry tilt shifts them: the series may mix stacks",
        )
    geometry = VolumeGeometry(
        dims=(len(slices), slices[0].rows, slices[0].columns),
        spacing=(mean, *pixel_spacing),
        origin=_vec(positions[order[0]]),
        row_cosine=_vec(row),
        column_cosine=_vec(column),
        normal=_vec(normal),
        tilt=tilt,
    )
    return VolumePlan(tuple(int(i) for i in order), geometry)


def _tilt(
    positions: Sequence[npt.NDArray[np.float64]],
    axes: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]],
    *,
    pixel_spacing: tuple[float, float],
    shape: tuple[int, int],
) -> SliceTilt | None:
    """Where gantry-tilted slices lie on the grid reformats are cut from; None when they
    stack. `axes` are the row and column cosines and the normal."""
    tolerance = max(_SPACING_TOLERANCE_MM, _IN_PLANE_TOLERANCE * min(pixel_spacing))
    found = measure_tilt(positions, *axes, tolerance_mm=tolerance)
    if found is None:
        return None
    grid = tilt_grid(found, pixel_spacing=pixel_spacing, shape=shape)
    return SliceTilt(found.degrees, grid.offsets, grid.size)


def _not_a_volume(slices: Sequence[SliceInfo]) -> str | None:
    if len(slices) < 2:
        return "the series has a single image"
    if any(s.frames != 1 for s in slices):
        return "the series holds multi-frame images"
    if any(s.samples != 1 for s in slices):
        return "the series holds colour images"
    if len({(s.rows, s.columns) for s in slices}) > 1:
        return "the images have different sizes"
    return _geometry_problem(slices)


def _geometry_problem(slices: Sequence[SliceInfo]) -> str | None:
    orientations = [s.orientation for s in slices]
    positions = [s.position for s in slices]
    spacings = [s.pixel_spacing for s in slices]
    if any(p is None for p in positions) or any(o is None or len(o) != 6 for o in orientations):
        return "an image has no ImagePositionPatient or ImageOrientationPatient"
    if any(p is None for p in spacings):
        return "an image has no PixelSpacing"
    if not _all_close(orientations, _COSINE_TOLERANCE):
        return "the images have different orientations"
    if not _all_close(spacings, _SPACING_TOLERANCE_MM):
        return "the images have different pixel spacings"
    if min(spacings[0] or (0.0,)) <= 0:
        return "PixelSpacing is not positive"
    return None


def _all_close(values: Sequence[tuple[float, ...] | None], tolerance: float) -> bool:
    array = np.array(values, dtype=np.float64)
    return bool(np.allclose(array, array[0], atol=tolerance))


def _vec(values: npt.NDArray[np.float64]) -> Vector:
    return (float(values[0]), float(values[1]), float(values[2]))


def _neg(vector: Vector) -> Vector:
    return (-vector[0], -vector[1], -vector[2])


def _scaled(vector: Vector, factor: float) -> Vector:
    return (vector[0] * factor, vector[1] * factor, vector[2] * factor)
