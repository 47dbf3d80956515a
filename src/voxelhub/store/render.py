"""Rendering a frame for people: window/level to 8 bits, encoded as JPEG, GIF or PNG."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
from pydicom import Dataset, FileMetaDataset
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import ExplicitVRLittleEndian

from voxelhub.dicom.model import PixelDescription
from voxelhub.store.errors import InvalidQuery

THUMBNAIL_SIZE = 128


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"  # "linear", "linear-exact" or "sigmoid" (PS3.3 C.11.2.1.2)


# VOI LUT Function (0028,1056) values, as the query parameter names them.
_FUNCTIONS = {"LINEAR": "linear", "LINEAR_EXACT": "linear-exact", "SIGMOID": "sigmoid"}


def _first_number(dataset_json: dict[str, Any], tag: str) -> float | None:
    value = dataset_json.get(tag, {}).get("Value")
    if not value:
        return None
    try:
        return float(value[0])
    except (TypeError, ValueError):
        return None


def parse_window(value: str | None) -> Window | None:
    """`window=center,width[,function]` from the query string (PS3.18 §8.3.5.1.4); the
    function is linear (the default), linear-exact or sigmoid."""
    if not value:
        return None
    parts = [part.strip() for part in value.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise InvalidQuery(f"window must be 'center,width', e.g. 40,400; not {value!r}") from None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise InvalidQuery(f"the window's center and width must be finite numbers, not {value!r}")
    if width <= 0:
        raise InvalidQuery("the window width must be > 0")
    function = parts[2].lower() if len(parts) > 2 and parts[2] else "linear"
    if function not in _FUNCTIONS.values() or len(parts) > 3:
        raise InvalidQuery(
            f"the window function must be linear, linear-exact or sigmoid, not {value!r}"
        )
    return Window(center, width, function)


def check_renderable(pixel: PixelDescription) -> None:
    """Refuse, before any frame is read, pixel data that `to_array` cannot take."""
    floats = pixel.pixel_keyword != "PixelData"
    if pixel.bits_allocated == 1 and pixel.samples_per_pixel == 1:
        return
    if pixel.bits_allocated not in ((32, 64) if floats else (8, 16, 32)):
        raise InvalidQuery(f"cannot render {pixel.bits_allocated}-bit pixel data")


def to_array(native: bytes, pixel: PixelDescription) -> npt.NDArray[Any]:
    """One native frame as an array: (rows, columns) for one sample per pixel, (rows,
    columns, samples) otherwise, whatever the planar configuration. Bit-packed frames
    (BitsAllocated 1: segmentations, overlays) become 0 and 1; native YBR_FULL_422 (two
    luminance samples sharing one chroma pair) is brought to full resolution."""
    rows, columns, samples = pixel.rows, pixel.columns, pixel.samples_per_pixel
    if pixel.bits_allocated == 1 and samples == 1:
        bits = np.unpackbits(np.frombuffer(native, dtype=np.uint8), bitorder="little")
        return bits[: rows * columns].reshape(rows, columns)
    check_renderable(pixel)
    floats = pixel.pixel_keyword != "PixelData"  # FloatPixelData, DoubleFloatPixelData
    if _is_422(pixel):
        return _full_422(np.frombuffer(native, dtype=np.uint8, count=rows * columns * 2), pixel)
    kind = "f" if floats else "i" if pixel.pixel_representation else "u"
    dtype = np.dtype(f"<{kind}{pixel.bits_allocated // 8}")
    array = _bits_stored_only(
        np.frombuffer(native, dtype=dtype, count=rows * columns * samples), pixel
    )
    if samples == 1:
        return array.reshape(rows, columns)
    if pixel.planar_configuration == 1:
        return np.ascontiguousarray(array.reshape(samples, rows, columns).transpose(1, 2, 0))
    return array.reshape(rows, columns, samples)


def _bits_stored_only(array: npt.NDArray[Any], pixel: PixelDescription) -> npt.NDArray[Any]:
    """Integer samples as their BitsStored bits say (sign-extended when signed): what lies
    above them (overlay bits, an unextended sign) is no part of the value (PS3.5 8.1.1),
    and native frames that hold such bits are kept as they came."""
    unused = pixel.bits_allocated - pixel.bits_stored
    if unused <= 0 or array.dtype.kind not in "iu":
        return array
    values: npt.NDArray[Any] = (
        (array << unused) >> unused
        if array.dtype.kind == "i"
        else array & array.dtype.type((1 << pixel.bits_stored) - 1)
    )
    return values


def _is_422(pixel: PixelDescription) -> bool:
    return (
        pixel.photometric_interpretation == "YBR_FULL_422"
        and pixel.samples_per_pixel == 3
        and pixel.bits_allocated == 8
    )


def _full_422(values: npt.NDArray[np.uint8], pixel: PixelDescription) -> npt.NDArray[np.uint8]:
    """Y1 Y2 Cb Cr groups (PS3.3 C.7.6.3.1.2) as full-resolution YBR_FULL."""
    rows, columns = pixel.rows, pixel.columns
    pairs = values.reshape(rows, columns // 2, 4)
    full = np.empty((rows, columns, 3), dtype=np.uint8)
    full[:, 0::2, 0], full[:, 1::2, 0] = pairs[..., 0], pairs[..., 1]
    full[..., 1] = np.repeat(pairs[..., 2], 2, axis=1)
    full[..., 2] = np.repeat(pairs[..., 3], 2, axis=1)
    return full


def _ybr_to_rgb(array: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """YBR_FULL to RGB (PS3.3 C.7.6.3.1.2, the inverse of the ITU-R BT.601 transform)."""
    y = array[..., 0].astype(np.float32)
    cb = array[..., 1].astype(np.float32) - 128.0
    cr = array[..., 2].astype(np.float32) - 128.0
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    out: npt.NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return out


def _voi(values: npt.NDArray[np.float32], window: Window) -> npt.NDArray[np.uint8]:
    """The VOI LUT function of PS3.3 C.11.2.1.2.1 onto 0..255."""
    c, w = window.center, window.width
    if window.function == "sigmoid":
        with np.errstate(over="ignore"):
            scaled = 255.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    elif window.function == "linear-exact":
        scaled = ((values - c) / w + 0.5) * 255.0
    else:
        low = c - 0.5 - (w - 1) / 2
        scaled = (values - low) / max(w - 1, 1.0) * 255.0
    display: npt.NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return display


# The Palette Color Lookup Table Module's descriptors, data and segmented data (PS3.3 C.7.9).
PALETTE_TAGS = tuple(
    f"0028{element}"
    for element in ("1101", "1102", "1103", "1201", "1202", "1203", "1221", "1222", "1223")
)


def _palette_to_rgb(array: npt.NDArray[Any], dataset_json: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """PALETTE COLOR indices through the instance's red, green and blue lookup tables
    (PS3.3 C.7.6.3.1.5), as 8-bit RGB."""
    elements = {tag: dataset_json[tag] for tag in PALETTE_TAGS if tag in dataset_json}
    if any("BulkDataURI" in element for element in elements.values()):
        raise InvalidQuery(
            "cannot render this PALETTE COLOR image: its lookup tables are held as bulk "
            "data (`wado.rendering_attributes` gives them inline)"
        )
    tables = Dataset.from_json(elements)
    # DICOM JSON's binary values are little endian; segmented tables are read as words.
    tables.file_meta = FileMetaDataset()
    tables.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    try:
        rgb = apply_color_lut(array, tables)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as err:
        raise InvalidQuery(
            f"cannot render this PALETTE COLOR image: its lookup tables are missing or "
            f"malformed ({err})"
        ) from err
    if rgb.dtype != np.uint8:  # 16-bit table entries
        rgb = rgb >> 8
    out: npt.NDArray[np.uint8] = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
    return out


def to_display(
    array: npt.NDArray[Any],
    dataset_json: dict[str, Any],
    window: Window | None,
    photometric: str | None = None,
) -> npt.NDArray[np.uint8]:
    """Modality LUT (rescale), then window/level to 0..255; colour images are scaled only
    (YBR_FULL brought to RGB first), PALETTE COLOR goes through its lookup tables; one-bit
    frames are black and white. `photometric` is
    the array's Photometric Interpretation where decoding changed it (JPEG's YBR to RGB)."""
    if photometric is None:
        photometric = str(dataset_json.get("00280004", {}).get("Value", [""])[0])
    if photometric == "PALETTE COLOR" and array.ndim == 2:
        return _palette_to_rgb(array, dataset_json)
    if array.ndim == 3:
        if array.dtype == np.uint8:
            if photometric.startswith("YBR_FULL"):
                return _ybr_to_rgb(array)
            return np.ascontiguousarray(array)
        peak = float(array.max()) or 1.0
        colour: npt.NDArray[np.uint8] = np.clip(
            array.astype(np.float32) * (255.0 / peak), 0, 255
        ).astype(np.uint8)
        return colour
    if _first_number(dataset_json, "00280100") == 1:  # BitsAllocated: a bit mask
        mask: npt.NDArray[np.uint8] = (array > 0).astype(np.uint8) * np.uint8(255)
        return mask
    slope = _first_number(dataset_json, "00281053") or 1.0
    intercept = _first_number(dataset_json, "00281052") or 0.0
    values = array.astype(np.float32) * slope + intercept
    if window is None:
        center = _first_number(dataset_json, "00281050")
        width = _first_number(dataset_json, "00281051")
        named = dataset_json.get("00281056", {}).get("Value", [""])[0]
        if center is not None and width is not None and width > 0:
            window = Window(center, width, _FUNCTIONS.get(str(named).strip().upper(), "linear"))
        else:
            low, high = float(values.min()), float(values.max())
            window = Window((low + high) / 2, max(high - low, 1.0))
    display = _voi(values, window)
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


@dataclass(frozen=True)
class Region:
    """A rectangle of an image as fractions of its width and height, top left (x1, y1) to
    bottom right (x2, y2): WADO-URI's `region` (PS3.18 §9.1.2.1.6)."""

    x1: float
    y1: float
    x2: float
    y2: float


def parse_region(value: str | None) -> Region | None:
    if not value:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in value.split(","))
    except ValueError:
        raise InvalidQuery(
            f"region must be four numbers x1,y1,x2,y2 from 0 to 1 (e.g. 0.25,0.25,0.75,0.75), "
            f"not {value!r}"
        ) from None
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise InvalidQuery(
            f"region {value!r} is not a rectangle inside the image: it needs "
            "0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1"
        )
    return Region(x1, y1, x2, y2)


def crop(image: npt.NDArray[np.uint8], region: Region) -> npt.NDArray[np.uint8]:
    rows, cols = image.shape[:2]
    top, bottom = int(region.y1 * rows), max(int(region.y1 * rows) + 1, round(region.y2 * rows))
    left, right = int(region.x1 * cols), max(int(region.x1 * cols) + 1, round(region.x2 * cols))
    return np.ascontiguousarray(image[top:bottom, left:right])


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
    # One pixel at least along each side: a 1 x 300 strip is not shrunk to nothing.
    ys = (np.arange(max(int(rows / step), 1)) * step).astype(int)
    xs = (np.arange(max(int(cols / step), 1)) * step).astype(int)
    return np.ascontiguousarray(image[ys][:, xs])


def _gif(image: npt.NDArray[np.uint8]) -> bytes:
    """GIF holds 256 colours at most: grey levels as they are, colour reduced to a fixed
    3-3-2 bit palette (red, green, blue)."""
    if image.ndim == 2:
        return bytes(imagecodecs.gif_encode(image))
    rgb = image[..., :3]
    indices = (rgb[..., 0] & 0xE0) | ((rgb[..., 1] & 0xE0) >> 3) | (rgb[..., 2] >> 6)
    levels = np.arange(256, dtype=np.uint16)
    colormap = np.stack(
        [
            (levels >> 5) * 255 // 7,
            ((levels >> 2) & 0x07) * 255 // 7,
            (levels & 0x03) * 255 // 3,
        ],
        axis=-1,
    ).astype(np.uint8)
    return bytes(imagecodecs.gif_encode(np.ascontiguousarray(indices), colormap=colormap))


def encode(image: npt.NDArray[np.uint8], media_type: str, *, quality: int = 90) -> bytes:
    """`image` (rows, columns[, samples]) as `media_type`; `quality` is JPEG's."""
    if media_type == "image/png":
        return bytes(imagecodecs.png_encode(image))
    if media_type == "image/jpeg":
        return bytes(imagecodecs.jpeg8_encode(image, level=quality))
    if media_type == "image/gif":
        return _gif(image)
    raise InvalidQuery(f"cannot render as {media_type}; ask for image/jpeg, image/gif or image/png")
