"""Lines of the slices of a gantry-tilted series, sampled where the regular grid needs them.

Each slice of a tilted series lies shifted within its plane (see `voxelhub.dicom.tilt`),
so one row (or column) of the regular grid crosses slice k at a fractional row of that
slice, and that line lies shifted along its length. `lines` samples each slice's line
and `placed` moves the lines along their length onto the grid, both by linear
interpolation as `voxelhub.dicom.tilt.untilt` resamples whole slices (or by taking the
nearest pixel, for segment numbers), reading one or two lines per slice instead of the
whole volume.

A tilt of 11.3 degrees on slices 2.5 mm apart with 0.5 mm pixels shifts each slice one
row from the one before: row 3 of the grid is row 2 of slice 1. With 1 mm pixels it is
half a row, and row 3 of the grid lies halfway between rows 2 and 3 of slice 1:

>>> import numpy as np
>>> data = np.arange(2 * 4 * 3, dtype=np.int16).reshape(2, 4, 3) * 10
>>> values, inside = lines(data, np.array([3.0, 2.5]), axis=1, nearest=False)
>>> values.tolist(), inside.tolist()
([[90.0, 100.0, 110.0], [195.0, 205.0, 215.0]], [True, True])
>>> placed(values[:1], np.array([1.5]), size=4, inside=inside[:1], nearest=False,
...        fill=-1.0).tolist()
[[-1.0, -1.0, 95.0, 105.0]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

# A shift this close to a whole number of pixels is that number, so that whole-pixel
# shifts copy the pixels exactly (as `voxelhub.dicom.tilt` does).
_WHOLE_PIXEL_TOLERANCE = 1e-3


def lines(
    data: npt.NDArray[Any], at: npt.NDArray[np.float64], *, axis: int, nearest: bool
) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Per slice k of the (slice, row, column) `data`, its row (`axis` 1) or column
    (`axis` 2) at the fractional index `at[k]`; and whether that line lies in the slice.

    Lines between two rows are interpolated (float32), or the nearest row is taken with
    its type kept when `nearest`.
    """
    length = data.shape[axis]
    at = _snapped(at)
    slices = np.arange(len(at))
    if nearest:
        inside = (at >= -0.5) & (at < length - 0.5)
        index = np.clip(np.floor(at + 0.5), 0, length - 1).astype(np.intp)
        return _line(data, slices, index, axis), inside
    inside = (at >= 0) & (at <= length - 1)
    clipped = np.clip(at, 0, length - 1)
    low = np.floor(clipped).astype(np.intp)
    high = np.minimum(low + 1, length - 1)
    weight = (clipped - low).astype(np.float32)[:, np.newaxis]
    values = _line(data, slices, low, axis).astype(np.float32)
    values *= 1 - weight
    values += _line(data, slices, high, axis) * weight
    return values, inside


def placed(
    values: npt.NDArray[Any],
    offsets: npt.NDArray[np.float64],
    *,
    size: int,
    inside: npt.NDArray[np.bool_],
    nearest: bool,
    fill: float,
) -> npt.NDArray[Any]:
    """The lines `values` (one per slice), line k moved `offsets[k]` pixels along its
    length onto `size` pixels; `fill` where a line does not reach, or is not `inside`.

    Lines are interpolated (float32), or moved by the nearest whole number of pixels
    with their type kept when `nearest`.
    """
    length = values.shape[1]
    offsets = _snapped(offsets)
    dtype = values.dtype if nearest else np.dtype(np.float32)
    result = np.full((len(values), size), fill, dtype=dtype)
    # One line at a time: each moves by one amount, so two slices of it make the result
    # (several times faster than gathering every pixel by its own index).
    for k in np.flatnonzero(inside):
        line = values[k]
        if nearest:
            # Pixel x shows pixel x - shift of the line.
            shift = math.floor(offsets[k] + 0.5)
            first = max(0, shift)
            last = max(first, min(size, length + shift))
            result[k, first:last] = line[first - shift : last - shift]
            continue
        # Pixel x lies between pixels x - shift and x - shift + 1 of the line.
        shift = math.ceil(offsets[k])
        weight = np.float32(shift - offsets[k])
        first = max(0, shift)
        last = max(first, min(size, length + shift - (1 if weight else 0)))
        moved = line[first - shift : last - shift].astype(np.float32)
        if weight:
            moved *= 1 - weight
            moved += line[first - shift + 1 : last - shift + 1] * weight
        result[k, first:last] = moved
    return result


def _line(
    data: npt.NDArray[Any], slices: npt.NDArray[np.intp], index: npt.NDArray[np.intp], axis: int
) -> npt.NDArray[Any]:
    line: npt.NDArray[Any] = data[slices, index, :] if axis == 1 else data[slices, :, index]
    return line


def _snapped(positions: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    whole = np.round(positions)
    snapped: npt.NDArray[np.float64] = np.where(
        np.abs(positions - whole) < _WHOLE_PIXEL_TOLERANCE, whole, positions
    )
    return snapped
