"""Linked views in the browser: series of one frame of reference follow one patient point.

Two CTs of one ball share a frame of reference but not their slices: one untilted with
2 mm slices, one gantry-tilted with 2.5 mm table steps. A click or a scroll in one moves
the other to its image nearest the same point of the patient; a third CT of another frame
of reference (another session: its coordinates mean nothing here) stays where it is.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.browser import browser_page, needs_chromium
from tests.conftest import Account, stow
from tests.dicom.helpers import ball, sampled_series
from tests.viewer.helpers import (
    CENTRE,
    CENTRE_COLUMN,
    COLUMN_COSINE,
    CORNER,
    NORMAL,
    RADIUS,
    SIZE,
    SLICE_MM,
    tilted_ball,
)
from tests.viewer.pages import crosshair, open_study, page_point, viewport, wait_ready

pytestmark = [pytest.mark.slow, needs_chromium]

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# The untilted CT: 17 slices 2 mm apart, slice 8 (the middle one) through the ball's centre,
# whose pixel there is column 17, row 14.
FLAT_SLICES, FLAT_MM, CENTRE_ROW = 17, 2.0, 14
# The CT of another frame of reference: 14 slices 3 mm apart from z = 1 mm; it starts on
# its middle slice 7, and its slice 5 would be the one nearest the ball's centre.
OTHER_SLICES, OTHER_MM, OTHER_START = 14, 3.0, 1.0


def _axial_ball(slices: int, *, step_mm: float, start_mm: float = 0.0) -> list[Dataset]:
    positions = [np.add(CORNER, (0.0, 0.0, start_mm + step_mm * k)) for k in range(slices)]
    return sampled_series(ball(CENTRE, RADIUS), orientation=AXIAL, positions=positions,
                          size=SIZE, spacing_mm=1.0)  # fmt: skip


def _one_study(*series: tuple[list[Dataset], str, str]) -> list[Dataset]:
    """The series in one study, each with its description and frame of reference."""
    study = generate_uid()
    for number, (datasets, description, frame) in enumerate(series, start=1):
        for ds in datasets:
            ds.StudyInstanceUID, ds.FrameOfReferenceUID = study, frame
            ds.SeriesNumber, ds.SeriesDescription = number, description
    return [ds for datasets, _, _ in series for ds in datasets]


def _tilted_slice_nearest(point: np.ndarray) -> int:
    return round(float((point - CORNER) @ NORMAL / SLICE_MM))


def test_series_of_one_frame_of_reference_follow_a_click_and_a_scroll(
    live_server: str, make_user: Callable[..., Account]
) -> None:
    reader, frame = make_user("reader"), generate_uid()
    flat, tilted = _axial_ball(FLAT_SLICES, step_mm=FLAT_MM), tilted_ball()
    other = _axial_ball(OTHER_SLICES, step_mm=OTHER_MM, start_mm=OTHER_START)
    datasets = _one_study(
        (flat, "Flat 2 mm", frame), (tilted, "Tilted", frame), (other, "Other", generate_uid())
    )
    with httpx.Client(base_url=live_server, timeout=60) as http:
        archive = http.post("/api/v1/archives", json={"name": "Linked"}, headers=reader.headers)
        assert archive.status_code == 201, archive.text
        stow(http, reader, archive.json()["id"], datasets)  # type: ignore[arg-type]
    # The tilted CT's slice nearest the centre is 4 (it starts on 6); there the centre lies
    # on column 17 and, the slice being shifted along its columns, on its row 15.2.
    nearest = _tilted_slice_nearest(np.array(CENTRE))
    corner = np.array(tilted[nearest].ImagePositionPatient, dtype=np.float64)
    tilted_row = (np.array(CENTRE) - corner) @ COLUMN_COSINE
    assert nearest == 4

    first, second, third = viewport(0), viewport(1), viewport(2)
    slice_ = (SIZE, SIZE)
    with browser_page(1280, 800) as (page, errors):
        open_study(page, live_server, reader, datasets[0].StudyInstanceUID)
        wait_ready(page, first, series=flat[0].SeriesInstanceUID, index=FLAT_SLICES // 2)
        page.click("button[data-layout='2']")
        page.click(second)
        page.click(f"li[data-series-uid='{tilted[0].SeriesInstanceUID}'] button")
        wait_ready(page, second, series=tilted[0].SeriesInstanceUID, index=6)
        assert page.get_attribute("button[data-action=link]", "aria-pressed") == "true"

        # A click on the ball's centre in the flat CT: the tilted one goes to its slice 4.
        page.click("button[data-tool=crosshair]")
        page.mouse.click(*page_point(page, first, (CENTRE_COLUMN, CENTRE_ROW), shape=slice_))
        wait_ready(page, second, index=nearest)
        column, row = crosshair(page, second, shape=slice_)
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - tilted_row) < 0.5, (column, row)
        column, row = crosshair(page, first, shape=slice_)
        assert abs(column - CENTRE_COLUMN) < 0.5 and abs(row - CENTRE_ROW) < 0.5, (column, row)

        # Four viewports: the third shows the CT of the other frame of reference.
        page.click("button[data-layout='4']")
        wait_ready(page, third, series=other[0].SeriesInstanceUID, index=OTHER_SLICES // 2)
        # Two slices on in the flat CT (z = 20 mm): the tilted CT goes to its slice nearest
        # the middle of that image; the other frame of reference does not move.
        page.hover(first)
        page.mouse.wheel(0, 100)
        page.mouse.wheel(0, 100)
        wait_ready(page, first, index=FLAT_SLICES // 2 + 2)
        middle = np.add(CORNER, (SIZE / 2 - 0.5, SIZE / 2 - 0.5, FLAT_MM * (FLAT_SLICES // 2 + 2)))
        followed = _tilted_slice_nearest(middle)
        assert followed != nearest
        wait_ready(page, second, index=followed)
        assert page.get_attribute(third, "data-wanted-index") == str(OTHER_SLICES // 2)
        assert page.locator(f"{third} .vx-crosshair").count() == 0

        # Unlinked, the tilted CT stays where it is.
        page.click("button[data-action=link]")
        assert page.get_attribute("button[data-action=link]", "aria-pressed") == "false"
        page.hover(first)
        page.mouse.wheel(0, -100)
        wait_ready(page, first, index=FLAT_SLICES // 2 + 1)
        assert page.get_attribute(second, "data-wanted-index") == str(followed)
        assert errors == [], f"the viewer raised JavaScript errors: {errors}"
