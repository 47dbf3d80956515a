"""Linked cross-hairs in the browser on a gantry-tilted series: one point of the patient.

The slices of a tilted series are shown as acquired while coronal and sagittal images are
cut from a wider grid, so the views no longer share their edges: a click must map through
the patient's coordinates to meet the same point in every view.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page

from tests.browser import browser_page, needs_chromium
from tests.conftest import Account, stow
from tests.viewer.helpers import (
    CENTRE,
    CENTRE_COLUMN,
    COLUMN_COSINE,
    CORNER,
    GRID_ROWS,
    NORMAL,
    ROW_COSINE,
    SIZE,
    SLICE_MM,
    SLICES,
    grid_position,
    tilted_ball,
)

WAIT_MS = 30_000
AXIAL, CORONAL, SAGITTAL = (f'.vx-viewport[data-viewport="{i}"]' for i in range(3))

pytestmark = [pytest.mark.slow, needs_chromium]


def _image_box(page: Page, viewport: str) -> tuple[float, float, float, float, float]:
    """The page position of the image drawn in `viewport` (zoom 1, no pan): its left and
    top edges, and how many page pixels one pixel of the rendered image covers; and that
    image's width and height."""
    box = page.locator(viewport).bounding_box()
    assert box is not None
    width = float(page.get_attribute(viewport, "data-image-width") or "nan")
    height = float(page.get_attribute(viewport, "data-image-height") or "nan")
    scale = min(box["width"] / width, box["height"] / height)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    return left, top, scale, width, height


def _page_point(
    page: Page, viewport: str, at: tuple[float, float], *, shape: tuple[int, int]
) -> tuple[float, float]:
    """Where (column, row) of the `shape` image that `viewport` shows lies on the page."""
    left, top, scale, width, height = _image_box(page, viewport)
    x = (at[0] + 0.5) / shape[1] * width
    y = (at[1] + 0.5) / shape[0] * height
    return left + x * scale, top + y * scale


def _crosshair(page: Page, viewport: str, *, shape: tuple[int, int]) -> tuple[float, float]:
    """The (column, row) of the `shape` image that `viewport`'s cross-hair lines cross at."""
    lines = page.locator(f"{viewport} .vx-crosshair line")
    assert lines.count() == 2
    y = float(lines.nth(0).get_attribute("y1") or "nan")
    x = float(lines.nth(1).get_attribute("x1") or "nan")
    left, top, scale, width, height = _image_box(page, viewport)
    box = page.locator(viewport).bounding_box()
    assert box is not None
    column = (box["x"] + x - left) / scale / width * shape[1] - 0.5
    row = (box["y"] + y - top) / scale / height * shape[0] - 0.5
    return column, row


def _ready(page: Page, viewport: str, **data: str | int) -> None:
    checks = "".join(f"[data-{name}='{value}']" for name, value in data.items())
    page.wait_for_selector(f"{viewport}[data-state='ready']{checks}", timeout=WAIT_MS)


def test_a_click_in_the_sagittal_view_of_a_tilted_series_meets_the_same_point_axially(
    live_server: str, make_user: Callable[..., Account]
) -> None:
    reader, series = make_user("reader"), tilted_ball()
    with httpx.Client(base_url=live_server, timeout=60) as http:
        archive = http.post("/api/v1/archives", json={"name": "Tilted"}, headers=reader.headers)
        assert archive.status_code == 201, archive.text
        stow(http, reader, archive.json()["id"], series)  # type: ignore[arg-type]
    # The ball's centre on the grid: between slices 4 and 5, on grid row 18.6 (the slices
    # shift 0.86 rows each), column 17; in slice 4 as acquired, on its row 15.2.
    offset = np.array(CENTRE) - CORNER
    k, grid_row = offset @ NORMAL / SLICE_MM, offset @ COLUMN_COSINE
    assert round(k) == 4 and round(grid_row) == 19 and offset @ ROW_COSINE == CENTRE_COLUMN
    in_slice = np.array(CENTRE) - np.array(series[4].ImagePositionPatient, dtype=np.float64)
    slice_row = in_slice @ COLUMN_COSINE

    with browser_page(1280, 800) as (page, errors):
        page.goto(f"{live_server}/viewer")
        page.fill("input[name=username]", reader.username)
        page.fill("input[name=password]", reader.password)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{live_server}/viewer")
        page.goto(f"{live_server}/viewer/studies/{series[0].StudyInstanceUID}")
        page.wait_for_selector("button[data-layout=mpr]:not([disabled])", timeout=WAIT_MS)
        page.click("button[data-layout=mpr]")
        _ready(page, SAGITTAL, plane="sagittal")
        _ready(page, CORONAL, plane="coronal")
        page.hover(SAGITTAL)
        page.mouse.wheel(0, 100)  # one sagittal image on: the column through the centre
        _ready(page, SAGITTAL, index=CENTRE_COLUMN)

        # Head up: sagittal image row y shows slice 12 - y, its column x grid row x.
        sagittal = (SLICES, GRID_ROWS)
        page.mouse.click(*_page_point(page, SAGITTAL, (grid_row, SLICES - 1 - k), shape=sagittal))
        _ready(page, AXIAL, index=4)
        _ready(page, CORONAL, index=19)
        column, row = _crosshair(page, AXIAL, shape=(SIZE, SIZE))
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - slice_row) < 0.5, (column, row)
        column, row = _crosshair(page, CORONAL, shape=(SLICES, SIZE))
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - (SLICES - 1 - k)) < 0.5
        column, row = _crosshair(page, SAGITTAL, shape=sagittal)
        assert abs(column - grid_row) < 0.5 and abs(row - (SLICES - 1 - k)) < 0.5

        # From the coronal view (grid row 19) near the top, where the slices lie furthest
        # along the grid: slice 11 starts 9.4 grid rows on, so row 19 is its row 9.6.
        page.mouse.click(*_page_point(page, CORONAL, (CENTRE_COLUMN, 1), shape=(SLICES, SIZE)))
        _ready(page, AXIAL, index=SLICES - 2)
        _ready(page, SAGITTAL, index=CENTRE_COLUMN)
        corner = np.array(series[SLICES - 2].ImagePositionPatient, dtype=np.float64)
        expected = (grid_position(SLICES - 2, 19, CENTRE_COLUMN) - corner) @ COLUMN_COSINE
        column, row = _crosshair(page, AXIAL, shape=(SIZE, SIZE))
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - expected) < 0.5, (column, row)
        column, row = _crosshair(page, SAGITTAL, shape=sagittal)
        assert abs(column - 19) < 0.5 and abs(row - 1) < 0.5, (column, row)
        assert errors == [], f"the viewer raised JavaScript errors: {errors}"
