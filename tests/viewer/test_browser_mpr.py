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
from tests.viewer.pages import WAIT_MS, crosshair, open_study, page_point, viewport, wait_ready

AXIAL, CORONAL, SAGITTAL = (viewport(i) for i in range(3))

pytestmark = [pytest.mark.slow, needs_chromium]


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
        open_study(page, live_server, reader, series[0].StudyInstanceUID)
        page.wait_for_selector("button[data-layout=mpr]:not([disabled])", timeout=WAIT_MS)
        page.click("button[data-layout=mpr]")
        wait_ready(page, SAGITTAL, plane="sagittal")
        wait_ready(page, CORONAL, plane="coronal")
        page.hover(SAGITTAL)
        page.mouse.wheel(0, 100)  # one sagittal image on: the column through the centre
        wait_ready(page, SAGITTAL, index=CENTRE_COLUMN)

        # Head up: sagittal image row y shows slice 12 - y, its column x grid row x.
        sagittal = (SLICES, GRID_ROWS)
        page.mouse.click(*page_point(page, SAGITTAL, (grid_row, SLICES - 1 - k), shape=sagittal))
        wait_ready(page, AXIAL, index=4)
        wait_ready(page, CORONAL, index=19)
        column, row = crosshair(page, AXIAL, shape=(SIZE, SIZE))
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - slice_row) < 0.5, (column, row)
        column, row = crosshair(page, CORONAL, shape=(SLICES, SIZE))
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - (SLICES - 1 - k)) < 0.5
        column, row = crosshair(page, SAGITTAL, shape=sagittal)
        assert abs(column - grid_row) < 0.5 and abs(row - (SLICES - 1 - k)) < 0.5

        # From the coronal view (grid row 19) near the top, where the slices lie furthest
        # along the grid: slice 11 starts 9.4 grid rows on, so row 19 is its row 9.6.
        page.mouse.click(*page_point(page, CORONAL, (CENTRE_COLUMN, 1), shape=(SLICES, SIZE)))
        wait_ready(page, AXIAL, index=SLICES - 2)
        wait_ready(page, SAGITTAL, index=CENTRE_COLUMN)
        corner = np.array(series[SLICES - 2].ImagePositionPatient, dtype=np.float64)
        expected = (grid_position(SLICES - 2, 19, CENTRE_COLUMN) - corner) @ COLUMN_COSINE
        column, row = crosshair(page, AXIAL, shape=(SIZE, SIZE))
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - expected) < 0.5, (column, row)
        column, row = crosshair(page, SAGITTAL, shape=sagittal)
        assert abs(column - 19) < 0.5 and abs(row - 1) < 0.5, (column, row)
        assert errors == [], f"the viewer raised JavaScript errors: {errors}"
