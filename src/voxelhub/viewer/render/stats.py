"""Region statistics on a rendered image: what the pixels under a rectangle or ellipse hold.

Regions are given in output pixels of the image as rendered (square pixels of
`OutputGrid.pixel_mm`); the values are the real values (e.g. HU) shown there.

>>> import numpy as np
>>> values = np.array([[0, 10], [20, 30]], dtype=np.float32)
>>> roi_stats(values, (0, 0, 1, 1), shape=Shape.RECT, pixel_mm=0.5).mean
15.0
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from voxelhub.viewer.render.planes import RenderError


class Shape(StrEnum):
    RECT = "rect"
    ELLIPSE = "ellipse"


@dataclass(frozen=True)
class RoiStats:
    mean: float
    std: float
    min: float
    max: float
    n: int
    area_mm2: float


def roi_stats(
    values: npt.NDArray[np.float32],
    box: tuple[int, int, int, int],
    *,
    shape: Shape,
    pixel_mm: float,
) -> RoiStats:
    """Statistics of `values` (the image as rendered) inside the region of `box` (x0, y0, x1, y1).

    The box's corners are pixels it includes; an ellipse is the one inscribed in the box.
    """
    height, width = values.shape
    x0, y0, x1, y1 = box
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    if left < 0 or top < 0 or right >= width or bottom >= height:
        raise RenderError(
            f"the region ({x0}, {y0})-({x1}, {y1}) leaves the {width}x{height} image: "
            f"use x in 0..{width - 1} and y in 0..{height - 1}"
        )
    region = values[top : bottom + 1, left : right + 1].astype(np.float64)
    if shape is Shape.ELLIPSE:
        ys, xs = np.mgrid[top : bottom + 1, left : right + 1]
        cy, cx = (top + bottom) / 2, (left + right) / 2
        ry, rx = max((bottom - top) / 2, 0.5), max((right - left) / 2, 0.5)
        inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
        picked = region[inside]
    else:
        picked = region.ravel()
    return RoiStats(
        mean=float(picked.mean()),
        std=float(picked.std()),
        min=float(picked.min()),
        max=float(picked.max()),
        n=int(picked.size),
        area_mm2=float(picked.size * pixel_mm * pixel_mm),
    )
