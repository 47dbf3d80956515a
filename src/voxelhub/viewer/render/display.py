"""From real values to pixels on screen: window/level, square-mm resampling, encoding.

>>> import numpy as np
>>> window(np.array([[-1000.0, 40.0, 1000.0]], dtype=np.float32), center=40, width=400).tolist()
[[0, 127, 255]]
>>> grid = output_grid((100, 200), (2.0, 1.0), 100)
>>> grid.shape, grid.pixel_mm
((100, 100), 2.0)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

from voxelhub.viewer.render.planes import RenderError

MAX_SIZE = 2048
# Fast settings: deflate level 1 on run lengths of the SUB-filtered rows (as OpenCV's
# fastest PNG), a quarter of the time of level 1 with default filtering for CT slices.
PNG_LEVEL, PNG_STRATEGY_RLE, PNG_FILTER_SUB = 1, 3, 16
WEBP_METHOD = 0  # fastest
JPEG_QUALITY = 90
WEBP_QUALITY = 90


class ImageFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"


def window(
    values: npt.NDArray[np.float32], *, center: float, width: float, invert: bool = False
) -> npt.NDArray[np.uint8]:
    """Linear window/level (PS3.3 C.11.2.1.2) of real values to 0..255."""
    if not width > 0:
        raise RenderError(f"the window width must be > 0, not {width}")
    span = max(width - 1.0, 1.0)
    scaled = values - np.float32(center - 0.5)
    scaled *= np.float32(255.0 / span)
    scaled += np.float32(127.5)
    np.clip(scaled, 0, 255, out=scaled)
    display = scaled.astype(np.uint8)
    if invert:
        np.subtract(255, display, out=display)
    return display


@dataclass(frozen=True)
class OutputGrid:
    """Square output pixels of `pixel_mm`: output pixel (y, x) shows source (rows[y], cols[x])."""

    rows: npt.NDArray[np.intp]
    cols: npt.NDArray[np.intp]
    pixel_mm: float
    identity: bool

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def apply(self, image: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Nearest-neighbour resampling of a source image onto this grid."""
        if self.identity:
            return image
        resampled: npt.NDArray[Any] = image.take(self.rows, axis=0).take(self.cols, axis=1)
        return resampled

    def source(self, y: int, x: int) -> tuple[int, int]:
        """The source pixel (row, column) under output pixel (y, x)."""
        height, width = self.shape
        if not (0 <= x < width and 0 <= y < height):
            raise RenderError(
                f"pixel ({x}, {y}) is outside the {width}x{height} image: "
                f"use x in 0..{width - 1} and y in 0..{height - 1}"
            )
        return int(self.rows[y]), int(self.cols[x])


def output_grid(shape: tuple[int, int], spacing: tuple[float, float], size: int) -> OutputGrid:
    """The grid of square pixels whose longer edge is `size` pixels, covering `shape`."""
    if not 1 <= size <= MAX_SIZE:
        raise RenderError(f"size must be 1..{MAX_SIZE} pixels, not {size}")
    return _grid(shape[0], shape[1], float(spacing[0]), float(spacing[1]), size)


@functools.lru_cache(maxsize=256)
def _grid(height: int, width: int, row_mm: float, col_mm: float, size: int) -> OutputGrid:
    pixel_mm = max(height * row_mm, width * col_mm) / size
    out_h = max(1, round(height * row_mm / pixel_mm))
    out_w = max(1, round(width * col_mm / pixel_mm))
    rows = _index_map(out_h, height, pixel_mm / row_mm)
    cols = _index_map(out_w, width, pixel_mm / col_mm)
    identity = (
        out_h == height
        and out_w == width
        and bool(np.array_equal(rows, np.arange(height)) and np.array_equal(cols, np.arange(width)))
    )
    rows.setflags(write=False)
    cols.setflags(write=False)
    return OutputGrid(rows, cols, pixel_mm, identity)


def _index_map(count: int, limit: int, step: float) -> npt.NDArray[np.intp]:
    centres = (np.arange(count, dtype=np.float64) + 0.5) * step
    indices: npt.NDArray[np.intp] = np.minimum(np.floor(centres).astype(np.intp), limit - 1)
    return indices


def encode(image: npt.NDArray[np.uint8], image_format: ImageFormat) -> bytes:
    """PNG (fast compression), JPEG or WebP bytes of an 8-bit grey or RGB image."""
    image = np.ascontiguousarray(image)
    if image_format is ImageFormat.PNG:
        return bytes(
            imagecodecs.png_encode(
                image, level=PNG_LEVEL, strategy=PNG_STRATEGY_RLE, filter=PNG_FILTER_SUB
            )
        )
    if image_format is ImageFormat.JPEG:
        return bytes(imagecodecs.jpeg8_encode(image, level=JPEG_QUALITY))
    if image.ndim == 2:  # WebP holds colour only
        image = np.repeat(image[:, :, np.newaxis], 3, axis=2)
    return bytes(imagecodecs.webp_encode(image, level=WEBP_QUALITY, method=WEBP_METHOD))
