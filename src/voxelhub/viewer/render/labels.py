"""Label volumes of a DICOM SEG on the grid of the image series it segments.

Each SEG frame is one segment on one source slice. Its slice is found by the source
instance it references, or else by where its plane lies along the source's normal; the
label volume holds, per voxel, the highest segment number whose frame covers it (0: none).

>>> import numpy as np
>>> from voxelhub.viewer.render.geometry import VolumeGeometry
>>> g = VolumeGeometry((3, 2, 2), (2.0, 1.0, 1.0), (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
>>> frame = SegFrame(segment=2, mask=np.ones((2, 2), bool), position=(0.0, 0.0, 4.0))
>>> label_volume(g, [frame], {})[:, 0, 0].tolist()
[0, 0, 2]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxelhub.viewer.render.geometry import Vector, VolumeGeometry
from voxelhub.viewer.render.planes import RenderError

_SLICE_TOLERANCE = 0.25  # of the slice spacing
_IN_PLANE_TOLERANCE = 0.5  # of a pixel


@dataclass(frozen=True)
class SegFrame:
    """One frame of a SEG: the segment it belongs to, its mask, and where it lies."""

    segment: int
    mask: npt.NDArray[np.bool_]
    position: Vector | None = None
    referenced_sop_instance_uid: str | None = None


def label_volume(
    geometry: VolumeGeometry, frames: Sequence[SegFrame], slice_of_sop: Mapping[str, int]
) -> npt.NDArray[np.uint8]:
    """The (slice, row, column) segment numbers of `frames` on `geometry`."""
    labels = np.zeros(geometry.dims, dtype=np.uint8)
    rows, columns = geometry.dims[1:]
    for number, frame in enumerate(frames, start=1):
        if frame.mask.shape != (rows, columns):
            raise RenderError(
                f"SEG frame {number} is {frame.mask.shape[1]}x{frame.mask.shape[0]} pixels but "
                f"its source images are {columns}x{rows}; only SEGs on the source grid are shown"
            )
        if not 0 < frame.segment <= 255:
            raise RenderError(f"SEG frame {number} names segment {frame.segment}; use 1..255")
        k = _slice_of(geometry, frame, slice_of_sop, number)
        np.maximum(
            labels[k], np.where(frame.mask, frame.segment, 0).astype(np.uint8), out=labels[k]
        )
    return labels


def _slice_of(
    geometry: VolumeGeometry, frame: SegFrame, slice_of_sop: Mapping[str, int], number: int
) -> int:
    uid = frame.referenced_sop_instance_uid
    if uid is not None and uid in slice_of_sop:
        return slice_of_sop[uid]
    if frame.position is None:
        raise RenderError(
            f"SEG frame {number} neither references a source image of this series nor "
            "gives its ImagePositionPatient, so it cannot be placed"
        )
    offset = np.array(frame.position) - np.array(geometry.origin)
    slice_mm, row_mm, column_mm = geometry.spacing
    along = float(offset @ np.array(geometry.normal)) / slice_mm
    across = (
        float(offset @ np.array(geometry.row_cosine)) / column_mm,
        float(offset @ np.array(geometry.column_cosine)) / row_mm,
    )
    k = round(along)
    if geometry.tilt is not None and 0 <= k < geometry.dims[0]:
        # Each slice of a gantry-tilted series lies shifted within its plane.
        first, offsets = geometry.tilt.offsets[0], geometry.tilt.offsets[k]
        across = (across[0] - offsets[1] + first[1], across[1] - offsets[0] + first[0])
    if (
        abs(along - k) > _SLICE_TOLERANCE
        or not 0 <= k < geometry.dims[0]
        or max(abs(a) for a in across) > _IN_PLANE_TOLERANCE
    ):
        raise RenderError(
            f"SEG frame {number} at {tuple(round(p, 2) for p in frame.position)} mm does not "
            "lie on a slice of the source series"
        )
    return k
