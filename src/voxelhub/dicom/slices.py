"""Which acquired frame each slice of a series' volume came from, and labels carried across.

`voxelhub.dicom.volume.series_volume` stacks frames (single-frame instances, or the frames
of Enhanced images) along their normal and, for a gantry-tilted series, shifts each frame
within its plane onto one wider grid. A writer whose frames a viewer lays over the acquired
images (a DICOM SEG) needs the way back: labels on the volume's grid sampled on each
acquired frame, and, to read such frames again, the reverse. Both are nearest neighbour, so
a label moves by whole pixels and keeps its value.

A frame that lies 1.5 columns into the grid (a 1.5 mm shift on 1 mm pixels) takes, for
each of its pixels, the label of the grid pixel nearest its centre (halves round up), 2
columns along; putting it back restores the grid where the frame lies:

>>> import numpy as np
>>> grid = np.array([[[0, 0, 1, 2, 3]]], dtype=np.uint8)
>>> frames = on_frames(grid, offsets=((0.0, 1.5),), frame_shape=(1, 3))
>>> frames
array([[[1, 2, 3]]], dtype=uint8)
>>> on_grid(frames, offsets=((0.0, 1.5),), size=(1, 5))
array([[[0, 0, 1, 2, 3]]], dtype=uint8)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from voxelhub.dicom.planes import Plane


@dataclass(frozen=True, eq=False)
class SliceSources:
    """The acquired frame of every slice of a volume, in the volume's slice order.

    `planes[k]` is the frame slice k was made from; `offsets[k]` the (rows, columns) from
    the volume's first row and column to that frame's first pixel, fractions of a pixel
    where a gantry tilt shifts by them, and (0, 0) for a series that was not resampled;
    `size` is the volume's (rows, columns).
    """

    planes: tuple[Plane, ...]
    offsets: tuple[tuple[float, float], ...]
    size: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The volume's (slices, rows, columns)."""
        return len(self.planes), self.size[0], self.size[1]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """The acquired frames' (rows, columns)."""
        first = self.planes[0].dataset
        return int(first.Rows), int(first.Columns)

    @property
    def resampled(self) -> bool:
        """Whether the volume's slices are not the acquired frames pixel for pixel."""
        return self.size != self.frame_shape or any(o != (0.0, 0.0) for o in self.offsets)

    @property
    def instances(self) -> tuple[Dataset, ...]:
        """The instances that hold the frames, in the order of their first slice."""
        seen: dict[int, Dataset] = {}
        for plane in self.planes:
            seen.setdefault(id(plane.dataset), plane.dataset)
        return tuple(seen.values())

    def on_frames(self, labels: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """`labels` of the (slice, row, column) volume sampled on each acquired frame."""
        return on_frames(labels, offsets=self.offsets, frame_shape=self.frame_shape)

    def on_grid(self, frames: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Labels of the acquired frames (in slice order) on the volume's grid; 0 where no
        frame lies."""
        return on_grid(frames, offsets=self.offsets, size=self.size)


def on_frames(
    labels: npt.NDArray[Any],
    *,
    offsets: Sequence[tuple[float, float]],
    frame_shape: tuple[int, int],
) -> npt.NDArray[Any]:
    """Per slice, the labels at the grid pixels nearest the frame's pixels (0 off the grid).

    `offsets` holds, per slice, the (rows, columns) from the grid's first pixel to the
    frame's, as `voxelhub.dicom.tilt.tilt_grid` gives them.
    """
    frames = np.zeros((labels.shape[0], *frame_shape), dtype=labels.dtype)
    for k, offset in enumerate(offsets):
        shift = _nearest(offset)
        grid_part, frame_part = _overlap(shift, frame_shape, grid=labels.shape[1:])
        frames[k][frame_part] = labels[k][grid_part]
    return frames


def on_grid(
    frames: npt.NDArray[Any],
    *,
    offsets: Sequence[tuple[float, float]],
    size: tuple[int, int],
) -> npt.NDArray[Any]:
    """The inverse of `on_frames`: each frame's labels put back on the grid of `size`."""
    labels = np.zeros((frames.shape[0], *size), dtype=frames.dtype)
    for k, offset in enumerate(offsets):
        shift = _nearest(offset)
        grid_part, frame_part = _overlap(shift, frames.shape[1:], grid=size)
        labels[k][grid_part] = frames[k][frame_part]
    return labels


def _nearest(offset: tuple[float, float]) -> tuple[int, int]:
    """The whole-pixel shift that takes a frame pixel to the grid pixel nearest its centre
    (frame pixel r lies at grid coordinate r + offset; halves round up)."""
    return math.floor(offset[0] + 0.5), math.floor(offset[1] + 0.5)


def _overlap(
    shift: tuple[int, int], frame: Sequence[int], *, grid: Sequence[int]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """The grid and frame slices that cover the same pixels when the frame lies `shift`
    (rows, columns) into the grid."""
    grid_slices, frame_slices = [], []
    for axis in (0, 1):
        start = max(shift[axis], 0)
        stop = min(shift[axis] + int(frame[axis]), int(grid[axis]))
        stop = max(stop, start)
        grid_slices.append(slice(start, stop))
        frame_slices.append(slice(start - shift[axis], stop - shift[axis]))
    return (grid_slices[0], grid_slices[1]), (frame_slices[0], frame_slices[1])
