"""Rendered images of stored instances, compared with pydicom's reading of the original."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut

from tests.conftest import Account, stow


@pytest.fixture
def owner(make_user) -> Account:  # type: ignore[no-untyped-def]
    return make_user("owner")


def _rendered_png(client: TestClient, owner: Account, ds: Dataset, query: str = "") -> np.ndarray:
    response = client.post("/api/v1/archives", json={"name": "Images"}, headers=owner.headers)
    assert response.status_code == 201, response.text
    stow(client, owner, response.json()["id"], [ds])
    url = (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/rendered{query}"
    )
    rendered = client.get(url, headers={**owner.headers, "Accept": "image/png"})
    assert rendered.status_code == 200, rendered.text
    image: np.ndarray = imagecodecs.png_decode(rendered.content)
    return image


def test_palette_colour_is_rendered_through_its_lookup_tables(
    client: TestClient, owner: Account
) -> None:
    original = dcmread(get_testdata_file("examples_palette.dcm"))  # 16-bit table entries
    expected = apply_color_lut(original.pixel_array, original) >> 8
    image = _rendered_png(client, owner, original)
    assert image.shape == expected.shape
    assert np.array_equal(image, expected)


def test_bits_above_bits_stored_do_not_reach_the_rendered_image(
    client: TestClient, owner: Account
) -> None:
    # Signed 12-bit CT whose high bits hold garbage (unextended signs, an overlay bit): kept
    # native as it came, and rendered from the values pydicom reads, -1024 HU included.
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    values = np.clip(ds.pixel_array.astype(np.int32) - 1152, -2048, 2047)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = ((values & 0x0FFF) | np.where(values > 500, 0x4000, 0)).astype("<u2").tobytes()
    assert np.array_equal(ds.pixel_array, values)
    image = _rendered_png(client, owner, ds, "?window=40,400")
    hu = values * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip(((hu - 39.5) / 399 + 0.5) * 255, 0, 255)
    assert np.abs(image - expected).max() <= 1
