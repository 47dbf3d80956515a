"""Axis-aligned linear resampling done one axis at a time, for inverting `Spacingd`.

MONAI inverts a bundle's `Spacingd` with `grid_sample` on a full sampling grid: for a
512x512x200 CT that is 52 million coordinates built and read per channel. When the voxel
mapping is a scaling plus a shift per axis (what `Spacingd` does to an image that
`Orientationd` has put on the axes), trilinear interpolation is the product of three 1D
linear interpolations, so three gathers along one axis each give the same values for a
fraction of the work. `SeparableResample` is MONAI's `SpatialResample` with that inverse;
anything else (rotations, other modes or padding) goes to MONAI's own.

>>> import numpy as np
>>> values = torch.tensor([0.0, 10.0])[None, :, None, None]
>>> xform = np.diag([0.5, 1.0, 1.0, 1.0])  # output voxel i reads input voxel i / 2
>>> resample_axis_aligned(values, xform, (3, 1, 1), padding_mode="border")[0, :, 0, 0]
tensor([ 0.,  5., 10.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from monai.data.meta_tensor import MetaTensor
from monai.transforms.spatial.array import SpatialResample
from monai.utils.enums import TraceKeys
from monai.utils.type_conversion import get_torch_dtype_from_string

AXIS_ALIGNED_TOLERANCE = 1e-6


def is_axis_aligned(xform: npt.NDArray[np.float64]) -> bool:
    """Whether a (4, 4) voxel mapping only scales and shifts each axis."""
    linear = xform[:3, :3]
    off_diagonal = linear - np.diag(np.diag(linear))
    return bool(np.all(np.abs(off_diagonal) <= AXIS_ALIGNED_TOLERANCE)) and bool(
        np.allclose(xform[3], [0.0, 0.0, 0.0, 1.0])
    )


def _axis_weights(
    scale: float, shift: float, size_in: int, size_out: int, padding_mode: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    source = scale * np.arange(size_out, dtype=np.float64) + shift
    if padding_mode == "border":
        source = np.clip(source, 0.0, size_in - 1)
    low = np.floor(source)
    upper = source - low
    lower = 1.0 - upper
    low_index, high_index = low.astype(np.int64), low.astype(np.int64) + 1
    if padding_mode == "zeros":  # a neighbour outside the image reads zero
        lower[(low_index < 0) | (low_index > size_in - 1)] = 0.0
        upper[(high_index < 0) | (high_index > size_in - 1)] = 0.0
    low_index = np.clip(low_index, 0, size_in - 1)
    high_index = np.clip(high_index, 0, size_in - 1)
    return (
        torch.from_numpy(low_index),
        torch.from_numpy(high_index),
        torch.from_numpy(lower),
        torch.from_numpy(upper),
    )


def resample_axis_aligned(
    values: torch.Tensor,
    xform: npt.NDArray[np.float64],
    spatial_size: Sequence[int],
    *,
    padding_mode: str,
) -> torch.Tensor:
    """(C, X, Y, Z) `values` resampled linearly onto `spatial_size`.

    Output voxel (i, j, k) reads input position ``xform @ (i, j, k, 1)`` (voxel centres,
    MONAI's `align_corners=False` convention); `padding_mode` is "border" or "zeros".
    """
    result = values
    # Shrinking axes first keeps the intermediate arrays small.
    order = sorted(range(3), key=lambda a: spatial_size[a] / max(values.shape[a + 1], 1))
    for axis in order:
        size_in, size_out = result.shape[axis + 1], int(spatial_size[axis])
        scale, shift = float(xform[axis, axis]), float(xform[axis, 3])
        if size_in == size_out and scale == 1.0 and shift == 0.0:
            continue
        low, high, lower, upper = _axis_weights(scale, shift, size_in, size_out, padding_mode)
        shape = [1, 1, 1, 1]
        shape[axis + 1] = size_out
        dtype = result.dtype
        lower_w, upper_w = lower.to(dtype).view(shape), upper.to(dtype).view(shape)
        # Advanced indexing, not index_select: on CPU the latter copies inner axes one
        # element at a time (seconds on a CT where indexing takes a fraction of one).
        before: list[slice | torch.Tensor] = [slice(None)] * (axis + 1)
        resampled = result[tuple([*before, low])].mul_(lower_w)
        resampled.addcmul_(result[tuple([*before, high])], upper_w)
        result = resampled
    return result


class SeparableResample(SpatialResample):
    """MONAI's `SpatialResample` whose inverse resamples axis by axis where it can."""

    @classmethod
    def like(cls, other: SpatialResample) -> SeparableResample:
        copy = cls(
            mode=other.mode,
            padding_mode=other.padding_mode,
            align_corners=other.align_corners,
            dtype=other.dtype,
            lazy=other.lazy,
        )
        return copy

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        if not isinstance(data, MetaTensor) or data.pending_operations or data.ndim != 4:
            return super().inverse(data)
        transform = data.applied_operations[-1]
        extra: dict[str, Any] = transform[TraceKeys.EXTRA_INFO]
        dst_affine = extra["src_affine"]
        src_affine = data.affine
        xform = np.linalg.solve(
            np.asarray(src_affine, dtype=np.float64), np.asarray(dst_affine, dtype=np.float64)
        )
        fits = (
            extra.get("mode") == "bilinear"
            and extra.get("padding_mode") in ("border", "zeros")
            and extra.get("align_corners") in (False, TraceKeys.NONE)
            and xform.shape == (4, 4)
            and is_axis_aligned(xform)
        )
        if not fits:
            return super().inverse(data)
        self.pop_transform(data)
        dtype = get_torch_dtype_from_string(extra["dtype"])
        values = data.as_tensor().to(dtype)
        spatial_size = [int(s) for s in transform[TraceKeys.ORIG_SIZE]]
        out = resample_axis_aligned(
            values, xform, spatial_size, padding_mode=str(extra["padding_mode"])
        )
        result = MetaTensor(out.to(torch.float32), meta=dict(data.meta))
        result.applied_operations = list(data.applied_operations)
        result.affine = torch.as_tensor(dst_affine, dtype=torch.float64)
        return result
