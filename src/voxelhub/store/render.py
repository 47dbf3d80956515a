"""Rendering a frame for people: window/level to 8 bits, encoded as PNG or JPEG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

from voxelhub.dicom.model import PixelDescription
from voxelhub.store.errors import InvalidQuery, NotAcceptable

THUMBNAIL_SIZE = 128


@dataclass(frozen=True)
class Window:
    center: float
    width: float


def _first_number(dataset_json: dict[str, Any], tag: str) -> float | None:
    value = dataset_json.get(tag, {}).get("Value")
    if not value:
        return None
    try:
        return float(value[0])
    except (TypeError, ValueError):
        return None


def parse_window(value: str | None) -> Window | None:
    """`window=center,width[,function]` from the query string (PS3.18 §8.3.5.1.4)."""
    if not value:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise InvalidQuery(f"window must be 'center,width', e.g. 40,400; not {value!r}") from None
    if width <= 0:
        raise InvalidQuery("the window width must be > 0")
    return Window(center, width)


def to_array(native: bytes, pixel: PixelDescription) -> npt.NDArray[Any]:
    if pixel.bits_allocated not in (8, 16, 32):
        raise InvalidQuery(f"cannot render {pixel.bits_allocated}-bit pixel data")
    kind = "i" if pixel.pixel_representation else "u"
    dtype = np.dtype(f"<{kind}{pixel.bits_allocated // 8}")
    array = np.frombuffer(
        native, dtype=dtype, count=pixel.rows * pixel.columns * pixel.samples_per_pixel
    )
    if pixel.samples_per_pixel == 1:
        return array.reshape(pixel.rows, pixel.columns)
    if pixel.planar_configuration == 1:
        return array.reshape(pixel.samples_per_pixel, pixel.rows, pixel.columns).transpose(1, 2, 0)
    return array.reshape(pixel.rows, pixel.columns, pixel.samples_per_pixel)


def to_display(
    array: npt.NDArray[Any], dataset_json: dict[str, Any], window: Window | None
) -> npt.NDArray[np.uint8]:
    """Modality LUT (rescale), then window/level to 0..255; colour images are scaled only."""
    if array.ndim == 3:
        if array.dtype == np.uint8:
            return array.astype(np.uint8, copy=False)
        peak = float(array.max()) or 1.0
        colour: npt.NDArray[np.uint8] = np.clip(
            array.astype(np.float32) * (255.0 / peak), 0, 255
        ).astype(np.uint8)
        return colour
    slope = _first_number(dataset_json, "00281053") or 1.0
    intercept = _first_number(dataset_json, "00281052") or 0.0
    values = array.astype(np.float32) * slope + intercept
    if window is None:
        center = _first_number(dataset_json, "00281050")
        width = _first_number(dataset_json, "00281051")
        if center is not None and width is not None and width > 0:
            window = Window(center, width)
        else:
            low, high = float(values.min()), float(values.max())
            window = Window((low + high) / 2, max(high - low, 1.0))
    low = window.center - 0.5 - (window.width - 1) / 2
    scaled = (values - low) / max(window.width - 1, 1.0) * 255.0
    display: npt.NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    photometric = dataset_json.get("00280004", {}).get("Value", [""])[0]
    if photometric == "MONOCHROME1":
        display = np.subtract(255, display, dtype=np.uint8)
    return display


MAX_VIEWPORT = 4096
DEFAULT_QUALITY = 90


def parse_quality(value: str | None) -> int:
    """The `quality` query parameter (PS3.18 8.3.5.1.2): 1-100, for lossy media types."""
    if value is None:
        return DEFAULT_QUALITY
    try:
        quality = int(value)
    except ValueError:
        quality = 0
    if not 1 <= quality <= 100:
        raise InvalidQuery(f"quality must be a whole number from 1 to 100, not {value!r}")
    return quality


def parse_viewport(value: str | None) -> tuple[int, int] | None:
    """The `viewport` query parameter (PS3.18 8.3.5.1.3), "width,height" in pixels."""
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value.split(","))
    except ValueError:
        raise InvalidQuery(
            f"viewport must be two whole numbers, width,height (e.g. 512,512), not {value!r}"
        ) from None
    if not (0 < width <= MAX_VIEWPORT and 0 < height <= MAX_VIEWPORT):
        raise InvalidQuery(f"viewport sides must be between 1 and {MAX_VIEWPORT} pixels")
    return width, height


def fit(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour scaling, up or down, to the largest size inside width x height
    that keeps the aspect ratio."""
    rows, cols = image.shape[:2]
    step = max(rows / height, cols / width)
    ys = np.minimum((np.arange(max(round(rows / step), 1)) * step).astype(int), rows - 1)
    xs = np.minimum((np.arange(max(round(cols / step), 1)) * step).astype(int), cols - 1)
    return np.ascontiguousarray(image[ys][:, xs])


def shrink(image: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """Nearest-neighbour downscale so the longer side is at most `size`."""
    rows, cols = image.shape[:2]
    step = max(rows, cols) / size
    if step <= 1:
        return image
    ys = (np.arange(int(rows / step)) * step).astype(int)
    xs = (np.arange(int(cols / step)) * step).astype(int)
    return np.ascontiguousarray(image[ys][:, xs])


def encode(image: npt.NDArray[np.uint8], media_type: str, *, quality: int = 90) -> bytes:
    if media_type == "image/png":
        return bytes(imagecodecs.png_encode(image))
    if media_type == "image/jpeg":
        return bytes(imagecodecs.jpeg8_encode(image, level=quality))
    raise InvalidQuery(f"cannot render as {media_type}; ask for image/png or image/jpeg")


def rendered_media_type(accept: str | None) -> str:
    for item in (accept or "image/png").split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("image/png", "image/jpeg"):
            return media
        if media in ("*/*", "image/*"):
            return "image/png"
    raise NotAcceptable(
        f"cannot render as {accept!r}; rendered images come as image/png or image/jpeg"
    )
