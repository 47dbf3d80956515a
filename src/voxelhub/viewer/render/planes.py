"""Images cut from a volume: one plane, or a slab projected (MIP, MinIP, average).

The volume holds stored values (`Volume.data`) with one rescale for all slices, so a
projection runs on the compact stored type and only the 2D result is rescaled.
Reformatted planes (coronal, sagittal) come turned head up (see `VolumeGeometry.flipped`).

>>> import numpy as np
>>> from voxelhub.viewer.render.geometry import VolumeGeometry
>>> g = VolumeGeometry((4, 2, 2), (2.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
>>> v = Volume(np.arange(16, dtype=np.int16).reshape(4, 2, 2), g)
>>> cut(v, Plane.AXIAL, 1, mode=Mode.MIP, slab_mm=4.0).values.tolist()
[[8.0, 9.0], [10.0, 11.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from voxelhub.viewer.render.geometry import Plane, VolumeGeometry

_SLICES_PER_CHUNK = 16


class Mode(StrEnum):
    SLICE = "slice"
    MIP = "mip"
    MINIP = "minip"
    AVG = "avg"


class RenderError(ValueError):
    """Parameters that cannot be rendered; the message says which and what is allowed."""


@dataclass(frozen=True)
class Volume:
    """Stored values (slice, row, column) on `geometry`; real = data * slope + intercept."""

    data: npt.NDArray[Any]
    geometry: VolumeGeometry
    slope: float = 1.0
    intercept: float = 0.0


@dataclass(frozen=True)
class PlaneImage:
    """A 2D image in real units (e.g. HU) with its pixel spacing (vertical, horizontal) mm."""

    values: npt.NDArray[np.float32]
    spacing: tuple[float, float]


def slab_range(index: int, size: int, *, slab_mm: float, spacing_mm: float) -> tuple[int, int]:
    """The planes [start, stop) of a slab `slab_mm` thick centred on `index`.

    >>> slab_range(10, 100, slab_mm=6.0, spacing_mm=2.0)
    (9, 12)
    """
    count = max(1, round(slab_mm / spacing_mm)) if slab_mm > 0 else 1
    start = index - (count - 1) // 2
    return max(start, 0), min(start + count, size)


def check_index(geometry: VolumeGeometry, plane: Plane, index: int) -> None:
    size = geometry.plane_size(plane)
    if not 0 <= index < size:
        raise RenderError(f"index {index} is outside the {plane.value} plane: use 0..{size - 1}")


def cut(volume: Volume, plane: Plane, index: int, *, mode: Mode, slab_mm: float) -> PlaneImage:
    """The image at `index` in `plane`, projected over a slab when `mode` is not slice."""
    geometry = volume.geometry
    check_index(geometry, plane, index)
    axis = geometry.axis(plane)
    if mode is Mode.SLICE or slab_mm <= 0:
        start, stop = index, index + 1
    else:
        start, stop = slab_range(
            index, geometry.plane_size(plane), slab_mm=slab_mm, spacing_mm=geometry.spacing[axis]
        )
    block = _take(volume.data, axis, start, stop)
    raw = _project(block, axis, mode)
    if geometry.flipped(plane):
        raw = raw[::-1]
    return PlaneImage(rescale(raw, volume.slope, volume.intercept), geometry.image_spacing(plane))


def rescale(raw: npt.NDArray[Any], slope: float, intercept: float) -> npt.NDArray[np.float32]:
    values = raw.astype(np.float32)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def to_voxel(
    geometry: VolumeGeometry, plane: Plane, index: int, row: int, column: int
) -> tuple[int, int, int]:
    """The voxel (slice, row, column) shown at (row, column) of the image `index` in `plane`."""
    if plane is Plane.AXIAL:
        return index, row, column
    slice_index = geometry.dims[0] - 1 - row if geometry.flipped(plane) else row
    if plane is Plane.CORONAL:
        return slice_index, index, column
    return slice_index, column, index


def _take(data: npt.NDArray[Any], axis: int, start: int, stop: int) -> npt.NDArray[Any]:
    if axis == 0:
        return data[start:stop]
    if axis == 1:
        return data[:, start:stop, :]
    return data[:, :, start:stop]


def _project(block: npt.NDArray[Any], axis: int, mode: Mode) -> npt.NDArray[Any]:
    projected: npt.NDArray[Any]
    if block.shape[axis] == 1:
        projected = np.take(block, 0, axis=axis)
    elif mode in (Mode.MIP, Mode.MINIP) and axis == 2:
        projected = _across_columns(block, np.maximum if mode is Mode.MIP else np.minimum)
    elif mode is Mode.MIP:
        projected = block.max(axis=axis)
    elif mode is Mode.MINIP:
        projected = block.min(axis=axis)
    elif mode is Mode.AVG:
        projected = block.mean(axis=axis, dtype=np.float32)
    else:
        projected = np.take(block, block.shape[axis] // 2, axis=axis)
    return projected


def _across_columns(block: npt.NDArray[Any], combine: np.ufunc) -> npt.NDArray[Any]:
    """A sagittal slab's max or min, a few slices at a time so each stays in the CPU cache.

    numpy reduces a short last axis one row at a time; combining whole columns is faster.
    """
    out = np.empty(block.shape[:2], dtype=block.dtype)
    for start in range(0, block.shape[0], _SLICES_PER_CHUNK):
        part = block[start : start + _SLICES_PER_CHUNK]
        result = part[:, :, 0].copy()
        for column in range(1, part.shape[2]):
            combine(result, part[:, :, column], out=result)
        out[start : start + _SLICES_PER_CHUNK] = result
    return out
