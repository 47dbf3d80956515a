"""Gantry tilt: parallel slices each shifted within its plane, and their correction.

A CT acquired with the gantry tilted has parallel, evenly spaced slices, but the table moves
along the scanner axis, not along the slice normal: each slice lies shifted within its plane
from the one before, in proportion to its distance along the normal. `measure_tilt` finds
those shifts (and refuses shifts no tilt makes); `untilt` resamples each slice within its
plane by its own shift, so that the slices stack on one regular grid whose third axis is the
normal, as dcm2niix does.

A tilt of 20 degrees on slices 2.5 mm apart along the normal shifts each slice by
2.5 * tan(20°) = 0.91 mm from the one before:

>>> import numpy as np
>>> row, column, normal = np.eye(3)
>>> positions = [np.array([0.0, 0.91 * k, 2.5 * k]) for k in range(4)]
>>> tilt = measure_tilt(positions, row, column, normal, tolerance_mm=0.01)
>>> round(tilt.degrees, 1), tilt.shifts_mm[3]
(20.0, (0.0, 2.73))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxelhub.dicom.errors import DicomError

# A shift of this fraction of a pixel past a whole number still counts as that number, so
# rounding in the positions does not widen the image by a column of padding.
_WHOLE_PIXEL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Tilt:
    """How far each slice lies shifted within its plane from the first.

    `shifts_mm` holds, per slice in stacking order, the shift (along the row cosine, along
    the column cosine) in millimetres; `degrees` is the angle between the stacking direction
    and the normal.
    """

    shifts_mm: tuple[tuple[float, float], ...]
    degrees: float


@dataclass(frozen=True)
class TiltGrid:
    """Where tilted slices lie on the one grid that `untilt` resamples them onto.

    The grid has the slices' pixel spacing and is widened to hold every slice. `offsets`
    holds, per slice in stacking order, the (rows, columns) from the grid's first row and
    column to the slice's first pixel (fractions of a pixel where the tilt shifts by them);
    `size` is the grid's (rows, columns). The first slice's offsets are whole numbers: the
    rows and columns added before it.
    """

    offsets: tuple[tuple[float, float], ...]
    size: tuple[int, int]

    @property
    def padding(self) -> tuple[int, int]:
        rows, columns = self.offsets[0]
        return round(rows), round(columns)


@dataclass(frozen=True)
class Untilted:
    """Slices resampled onto one grid, and where that grid starts.

    `padding` is the (rows, columns) added before the first row and column, so the grid's
    origin lies that many pixels before the first slice's along the column and row cosines.
    """

    voxels: npt.NDArray[np.float64]
    padding: tuple[int, int]


def measure_tilt(
    positions: Sequence[npt.NDArray[np.float64]],
    row: npt.NDArray[np.float64],
    column: npt.NDArray[np.float64],
    normal: npt.NDArray[np.float64],
    *,
    tolerance_mm: float,
) -> Tilt | None:
    """The tilt of slices at `positions` (in stacking order), or None when they stack.

    Refuses in-plane shifts that do not grow in proportion to the distance along the normal
    (by more than `tolerance_mm`): no tilt makes them, and no resampling would place them.
    """
    steps = np.asarray(positions, dtype=np.float64) - positions[0]
    shifts = np.stack([steps @ row, steps @ column], axis=1)
    if float(np.linalg.norm(shifts, axis=1).max()) <= tolerance_mm:
        return None
    along = steps @ normal
    # Least squares through the first slice: the in-plane shift per mm along the normal.
    slope = shifts.T @ along / float(along @ along)
    off_line = float(np.linalg.norm(shifts - np.outer(along, slope), axis=1).max())
    if off_line > tolerance_mm:
        raise DicomError(
            "The slices are shifted within their plane from one to the next, but not in "
            f"proportion to their distance along the normal (up to {off_line:.2f} mm off), "
            "so this is not a gantry tilt that resampling could correct; the series may mix "
            "stacks or acquisitions. Send the slices of one stack as their own series.",
            code="invalid_attribute",
            attribute="ImagePositionPatient",
        )
    return Tilt(
        shifts_mm=tuple((float(a), float(b)) for a, b in shifts),
        degrees=math.degrees(math.atan(float(np.linalg.norm(slope)))),
    )


def tilt_grid(
    tilt: Tilt, *, pixel_spacing: tuple[float, float], shape: tuple[int, int]
) -> TiltGrid:
    """The grid `untilt` resamples slices of `shape` (rows, columns) onto, and their place.

    `pixel_spacing` is (between rows, between columns) in mm. The image is widened by as
    many whole rows and columns as the shifts span, as dcm2niix does, so no slice loses any
    of its pixels.

    >>> tilt = Tilt(shifts_mm=((0.0, 0.0), (0.0, 0.75), (0.0, 1.5)), degrees=16.7)
    >>> grid = tilt_grid(tilt, pixel_spacing=(0.5, 0.5), shape=(4, 4))
    >>> grid.offsets[1], grid.size
    ((1.5, 0.0), (7, 4))
    """
    row_spacing, column_spacing = pixel_spacing
    in_pixels = np.array([(b / row_spacing, a / column_spacing) for a, b in tilt.shifts_mm])
    before = [_whole(max(0.0, -float(in_pixels[:, axis].min()))) for axis in (0, 1)]
    after = [_whole(max(0.0, float(in_pixels[:, axis].max()))) for axis in (0, 1)]
    rows, columns = shape
    return TiltGrid(
        offsets=tuple((float(r) + before[0], float(c) + before[1]) for r, c in in_pixels),
        size=(rows + before[0] + after[0], columns + before[1] + after[1]),
    )


def untilt(
    volume: npt.NDArray[np.float64],
    tilt: Tilt,
    *,
    pixel_spacing: tuple[float, float],
    fill: float,
) -> Untilted:
    """The (slice, row, column) `volume` with each slice moved back by its shift.

    `pixel_spacing` is (between rows, between columns) in mm. Each slice is resampled by
    linear interpolation along rows and along columns (an exact copy where the shift is a
    whole number of pixels) onto the grid of `tilt_grid`; voxels no slice covers get `fill`.
    """
    grid = tilt_grid(tilt, pixel_spacing=pixel_spacing, shape=(volume.shape[1], volume.shape[2]))
    rows, columns = grid.size
    resampled = np.stack(
        [
            _shifted(
                _shifted(image, column_offset, axis=1, size=columns, fill=fill),
                row_offset,
                axis=0,
                size=rows,
                fill=fill,
            )
            for image, (row_offset, column_offset) in zip(volume, grid.offsets, strict=True)
        ]
    )
    return Untilted(resampled, grid.padding)


def _whole(pixels: float) -> int:
    return math.ceil(pixels - _WHOLE_PIXEL_TOLERANCE)


def _shifted(
    image: npt.NDArray[np.float64], offset: float, *, axis: int, size: int, fill: float
) -> npt.NDArray[np.float64]:
    """`image` sampled at index `i - offset` along `axis` for i in range(size)."""
    length = image.shape[axis]
    source = np.arange(size, dtype=np.float64) - offset
    if abs(offset - round(offset)) < _WHOLE_PIXEL_TOLERANCE:
        source = np.round(source)
    inside = (source >= 0) & (source <= length - 1)
    clipped = np.clip(source, 0, length - 1)
    low = np.floor(clipped).astype(np.intp)
    high = np.minimum(low + 1, length - 1)
    shape = [1, 1]
    shape[axis] = size
    weight = (clipped - low).reshape(shape)
    sampled = np.take(image, low, axis=axis) * (1 - weight)
    sampled += np.take(image, high, axis=axis) * weight
    return np.where(inside.reshape(shape), sampled, fill)
