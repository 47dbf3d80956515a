"""Rendered images: the VOI LUT functions of PS3.3 C.11.2.1.2 and the window parameter."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from voxelhub.dicom.model import PixelDescription
from voxelhub.store.errors import InvalidQuery
from voxelhub.store.render import (
    THUMBNAIL_SIZE,
    Window,
    check_renderable,
    encode,
    parse_window,
    shrink,
    to_array,
    to_display,
)

HU = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]], dtype=np.float32)
CT = {"00281052": {"vr": "DS", "Value": [0]}, "00281053": {"vr": "DS", "Value": [1]}}


def test_the_three_voi_functions_follow_the_standard() -> None:
    # Window 40/400: linear and linear-exact reach black at -160 and white at 240.
    linear = to_display(HU, CT, Window(40, 400))
    exact = to_display(HU, CT, Window(40, 400, "linear-exact"))
    sigmoid = to_display(HU, CT, Window(40, 400, "sigmoid"))
    assert linear.tolist() == [[0, 0, 127, 255, 255]]
    assert exact.tolist() == [[0, 0, 127, 255, 255]]
    # y = 255 / (1 + exp(-4 (x - c) / w)): 0.5 at the center, 0.018 and 0.982 two widths out.
    expected = 255 / (1 + np.exp(-4 * (HU - 40) / 400))
    assert np.abs(sigmoid.astype(float) - expected).max() <= 1
    assert sigmoid[0, 1] > 0 and sigmoid[0, 3] < 255  # never clipped inside the window


def test_the_stored_voi_function_is_used_without_a_window_parameter() -> None:
    stored = {
        **CT,
        "00281050": {"vr": "DS", "Value": [40]},
        "00281051": {"vr": "DS", "Value": [400]},
        "00281056": {"vr": "CS", "Value": ["SIGMOID"]},
    }
    assert (
        to_display(HU, stored, None).tolist()
        == to_display(HU, CT, Window(40, 400, "sigmoid")).tolist()
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("nan,400", "finite"),
        ("40,inf", "finite"),
        ("40,0", "> 0"),
        ("40,400,gamma", "linear, linear-exact or sigmoid"),
        ("40,400,sigmoid,1", "linear, linear-exact or sigmoid"),
        ("40", "center,width"),
    ],
)
def test_bad_windows_are_refused(value: str, fragment: str) -> None:
    with pytest.raises(InvalidQuery, match=fragment):
        parse_window(value)


def test_a_window_names_its_function() -> None:
    assert parse_window("40,400") == Window(40, 400, "linear")
    assert parse_window("40,400,SIGMOID") == Window(40, 400, "sigmoid")
    assert parse_window("40, 400, linear-exact") == Window(40, 400, "linear-exact")


def _pixel(**changes: object) -> PixelDescription:
    base = dict(
        rows=2, columns=4, samples_per_pixel=3, bits_allocated=8, bits_stored=8,
        pixel_representation=0, photometric_interpretation="RGB",
    )  # fmt: skip
    return PixelDescription(**{**base, **changes})  # type: ignore[arg-type]


def test_colour_layouts_become_rgb_rows_and_columns() -> None:
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    planar = _pixel(planar_configuration=1)
    as_planes = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    assert np.array_equal(to_display(to_array(as_planes, planar), {}, None, "RGB"), rgb)

    # YBR_FULL_422: Y1 Y2 Cb Cr for each pair of pixels (PS3.3 C.7.6.3.1.2).
    ybr = _pixel(photometric_interpretation="YBR_FULL_422")
    grey_then_red = bytes([128, 128, 128, 128, 76, 76, 85, 255] * 2)
    shown = to_display(to_array(grey_then_red, ybr), {}, None, "YBR_FULL_422")
    assert shown.shape == (2, 4, 3)
    assert shown[0, 0].tolist() == [128, 128, 128] and shown[0, 1].tolist() == [128, 128, 128]
    assert np.abs(shown[1, 3].astype(int) - [255, 0, 0]).max() <= 2  # pure red


def test_one_bit_frames_are_black_and_white() -> None:
    mask = _pixel(samples_per_pixel=1, bits_allocated=1, bits_stored=1,
                  photometric_interpretation="MONOCHROME2")  # fmt: skip
    packed = np.packbits([1, 0, 0, 1, 0, 0, 0, 1], bitorder="little").tobytes()
    shown = to_display(to_array(packed, mask), {"00280100": {"vr": "US", "Value": [1]}}, None)
    assert shown.tolist() == [[255, 0, 0, 255], [0, 0, 0, 255]]


def test_pixel_data_that_cannot_be_shown_is_refused_up_front() -> None:
    with pytest.raises(InvalidQuery, match="4-bit"):
        check_renderable(_pixel(samples_per_pixel=1, bits_allocated=4))
    check_renderable(
        _pixel(samples_per_pixel=1, bits_allocated=64, pixel_keyword="DoubleFloatPixelData")
    )


def test_bits_above_bits_stored_are_no_part_of_the_value() -> None:
    # Signed 12-bit samples in 16 bits: -1000 with its sign not extended, 500 with an old
    # overlay bit set (0x4000). pydicom (PS3.5 8.1.1) reads -1000 and 500.
    signed = _pixel(samples_per_pixel=1, rows=1, columns=2, bits_allocated=16,
                    bits_stored=12, pixel_representation=1,
                    photometric_interpretation="MONOCHROME2")  # fmt: skip
    raw = np.array([-1000 & 0x0FFF, 500 | 0x4000], dtype="<u2").tobytes()
    assert to_array(raw, signed).tolist() == [[-1000, 500]]
    unsigned = _pixel(samples_per_pixel=1, rows=1, columns=2, bits_allocated=16,
                      bits_stored=12, photometric_interpretation="MONOCHROME2")  # fmt: skip
    raw = np.array([0x8000 | 100, 4095], dtype="<u2").tobytes()
    assert to_array(raw, unsigned).tolist() == [[100, 4095]]


def test_a_thin_strip_keeps_a_pixel_across_when_shrunk() -> None:
    strip = np.zeros((1, 300), dtype=np.uint8)
    assert shrink(strip, THUMBNAIL_SIZE).shape == (1, THUMBNAIL_SIZE)
    assert encode(shrink(strip, THUMBNAIL_SIZE), "image/jpeg").startswith(b"\xff\xd8")


def _lut(values: list[int]) -> dict[str, object]:
    data = np.array(values, dtype="<u2").tobytes()
    return {"vr": "OW", "InlineBinary": base64.b64encode(data).decode()}


def test_palette_colour_goes_through_its_lookup_tables() -> None:
    # Three entries from index 0, 16 bits each: black, pure red, mid grey.
    palette = {
        "00280004": {"vr": "CS", "Value": ["PALETTE COLOR"]},
        **{tag: {"vr": "US", "Value": [3, 0, 16]} for tag in ("00281101", "00281102", "00281103")},
        "00281201": _lut([0, 0xFFFF, 0x8000]),
        "00281202": _lut([0, 0, 0x8000]),
        "00281203": _lut([0, 0, 0x8000]),
    }
    indices = np.array([[0, 1, 2]], dtype=np.uint8)
    shown = to_display(indices, palette, None)
    assert shown.dtype == np.uint8
    assert shown.tolist() == [[[0, 0, 0], [255, 0, 0], [128, 128, 128]]]
    del palette["00281203"]
    with pytest.raises(InvalidQuery, match="PALETTE COLOR"):
        to_display(indices, palette, None)
