"""The viewer as a person uses it: headless Chromium against a real server, reading the canvas.

A synthetic CT and a DICOM SEG of a known box are stored in an archive; the test signs in,
finds the study in the study browser, opens it, scrolls with the wheel, windows with a preset
and a right-drag, switches to coronal and to a MIP, overlays the SEG and measures a length and
a region. What the canvas shows is read back pixel by pixel after each step. Screenshots are
kept under $VOXELHUB_TEST_ARTIFACTS (or the test's tmp directory).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pytest
from playwright.sync_api import Page
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from tests.browser import browser_page, needs_chromium
from tests.conftest import Account, stow
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom

SLICES, SIZE, SPACING_MM, THICKNESS_MM = 16, 64, 1.5, 2.5
# The SEG's box: slices, rows and columns (end exclusive) of the CT volume.
BOX = (slice(5, 11), slice(20, 36), slice(12, 30))
VIEWPORT = '.vx-viewport[data-viewport="0"]'
WAIT_MS = 30_000

pytestmark = [
    pytest.mark.slow,
    needs_chromium,
]

# Statistics of the image canvas of the first viewport: grey level, and the pixels that are
# coloured (an overlay), with their bounding box and mean colour.
CANVAS_STATS = """(selector) => {
  const canvas = document.querySelector(selector + " canvas");
  const { width, height } = canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let sum = 0, sum2 = 0, coloured = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
  const colour = [0, 0, 0];
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i], g = data[i + 1], b = data[i + 2];
    const grey = (r + g + b) / 3;
    sum += grey; sum2 += grey * grey;
    if (Math.max(Math.abs(r - g), Math.abs(g - b), Math.abs(r - b)) > 24) {
      const p = i / 4, x = p % width, y = Math.floor(p / width);
      coloured += 1; colour[0] += r; colour[1] += g; colour[2] += b;
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
    }
  }
  const n = width * height, mean = sum / n;
  return {
    width, height, mean, std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)), coloured,
    box: coloured ? [x0, y0, x1, y1] : null,
    colour: coloured ? colour.map((c) => c / coloured) : null,
  };
}"""
# The red channel of the image canvas, base64-encoded (a JSON array of a million numbers is slow).
CANVAS_PIXELS = """(selector) => {
  const canvas = document.querySelector(selector + " canvas");
  const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let text = "";
  for (let i = 0; i < rgba.length; i += 4 * 8192) {
    const chunk = [];
    for (let j = i; j < Math.min(rgba.length, i + 4 * 8192); j += 4) chunk.push(rgba[j]);
    text += String.fromCharCode(...chunk);
  }
  return btoa(text);
}"""


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("VOXELHUB_TEST_ARTIFACTS")
    folder = Path(root) / "viewer-browser" if root else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"viewer screenshots in {folder}")
    return folder


def _seg_of_box(series: list[Dataset]) -> Dataset:
    mask = np.zeros((SLICES, SIZE, SIZE), dtype=bool)
    mask[BOX] = True
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Box",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=series,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="voxelhub tests",
        manufacturer_model_name="box",
        software_versions="1",
        device_serial_number="0",
    )
    seg.SeriesDescription = "Box segmentation"
    return seg


@pytest.fixture
def stored_study(
    live_server: str, make_user: Callable[..., Account]
) -> Iterator[tuple[Account, list[Dataset]]]:
    reader = make_user("reader")
    series = ct_phantom(
        slices=SLICES, size=SIZE, spacing_mm=SPACING_MM, slice_thickness_mm=THICKNESS_MM,
        patient=PatientInfo(patient_name="Curie^Marie", patient_id="VX-77"),
    )  # fmt: skip
    with httpx.Client(base_url=live_server, timeout=60) as http:
        archive = http.post("/api/v1/archives", json={"name": "Chest"}, headers=reader.headers)
        assert archive.status_code == 201, archive.text
        single = ct_phantom(slices=1, size=SIZE, patient=PatientInfo(patient_name="Solo^Slice"))
        stow(http, reader, archive.json()["id"], [*series, _seg_of_box(series), *single])  # type: ignore[arg-type]
    yield reader, [*series, *single]


# --- helpers ---------------------------------------------------------------------------------


def _wait(page: Page, **expected: str | int) -> None:
    """Wait until the first viewport shows, finished, an image with these data-* values."""
    checks = " && ".join(
        f"v.dataset[{name!r}] === {str(value)!r}" for name, value in expected.items()
    )
    condition = f"""() => {{
        const v = document.querySelector('{VIEWPORT}');
        return v && v.dataset.state === "ready" && v.dataset.index === v.dataset.wantedIndex
          && (v.dataset.overlay === undefined || v.dataset.overlay !== "loading")
          {("&& " + checks) if checks else ""};
    }}"""
    page.wait_for_function(condition, timeout=WAIT_MS)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => r(null)))")


def _stats(page: Page) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate(CANVAS_STATS, VIEWPORT)
    return stats


def _pixels(page: Page) -> np.ndarray:
    encoded = page.evaluate(CANVAS_PIXELS, VIEWPORT)
    return np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).astype(np.float64)


def _data(page: Page, name: str) -> str:
    value = page.get_attribute(VIEWPORT, f"data-{name}")
    assert value is not None, name
    return value


def _image_box(page: Page) -> tuple[float, float, float]:
    """Scale and top-left corner of the image drawn in the viewport (zoom 1, no pan)."""
    box = page.locator(VIEWPORT).bounding_box()
    assert box is not None
    width, height = float(_data(page, "image-width")), float(_data(page, "image-height"))
    scale = min(box["width"] / width, box["height"] / height)
    return scale, (box["width"] - width * scale) / 2, (box["height"] - height * scale) / 2


def _to_page(page: Page, x: float, y: float) -> tuple[float, float]:
    """Image pixel (x, y) of the first viewport → page coordinates for the mouse."""
    box = page.locator(VIEWPORT).bounding_box()
    assert box is not None
    scale, x0, y0 = _image_box(page)
    return box["x"] + x0 + x * scale, box["y"] + y0 + y * scale


# --- the steps ---------------------------------------------------------------------------------


def _sign_in_and_find_the_study(page: Page, server: str, reader: Account, shots: Path) -> None:
    page.goto(f"{server}/viewer")
    assert "/login?next=/viewer" in page.url
    page.fill("input[name=username]", reader.username)
    page.fill("input[name=password]", reader.password)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{server}/viewer")
    page.wait_for_selector("#study-table tbody tr")
    assert page.get_attribute("#study-count", "data-total") == "2"
    page.fill("input[name=patient]", "nobody-by-this-name")
    page.click("button:has-text('Search')")
    page.wait_for_selector("#study-count[data-total='0']")
    page.fill("input[name=patient]", "")
    page.fill("input[name=modality]", "mr")
    page.click("button:has-text('Search')")
    page.wait_for_selector("#study-count[data-total='0']")
    page.fill("input[name=modality]", "ct")
    page.fill("input[name=date_from]", "2999-01-01")
    page.click("button:has-text('Search')")
    page.wait_for_selector("#study-count[data-total='0']")
    page.fill("input[name=date_from]", "")
    page.select_option("select[name=archive]", label="Chest")
    page.fill("input[name=patient]", "curie")
    page.click("button:has-text('Search')")
    page.wait_for_selector("#study-count[data-total='1']")
    row = page.locator("#study-table tbody tr").first
    assert "Curie, Marie" in row.inner_text() and "VX-77" in row.inner_text()
    row.locator("button:has-text('Series')").click()
    page.wait_for_selector(".vx-seriesrow li img")
    assert page.locator(".vx-seriesrow li").count() == 2
    page.screenshot(path=shots / "01-study-browser.png", full_page=True)
    row.locator("a:has-text('Open')").click()
    page.wait_for_url(f"{server}/viewer/studies/*")


def _scroll(page: Page, shots: Path) -> None:
    _wait(page, index=SLICES // 2, plane="axial")
    assert page.inner_text("#study-title") == "Curie, Marie"
    assert "Im 9 / 16" in page.inner_text(f"{VIEWPORT} .vx-corner.bl")
    assert page.inner_text(f"{VIEWPORT} .vx-orient.left") == "R"
    before = _pixels(page)
    assert before.std() > 10, "the first image is blank"
    page.screenshot(path=shots / "02-first-slice.png")
    page.hover(VIEWPORT)
    for _ in range(3):
        page.mouse.wheel(0, 100)
    _wait(page, index=SLICES // 2 + 3)
    after = _pixels(page)
    assert np.abs(after - before).mean() > 0.5, "scrolling did not change the image"
    assert "Im 12 / 16" in page.inner_text(f"{VIEWPORT} .vx-corner.bl")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    _wait(page, index=SLICES // 2 + 1)
    page.screenshot(path=shots / "03-scrolled.png")

    # Cine plays forward (wrapping at the end) until paused.
    page.fill("#fps", "20")
    page.click("button[data-action=cine]")
    page.wait_for_selector(f"{VIEWPORT}[data-index='{SLICES // 2 + 4}']", timeout=WAIT_MS)
    page.click("button[data-action=cine]")
    assert page.inner_text("button[data-action=cine]") == "Play"
    page.keyboard.press("Home")
    _wait(page, index=0)
    page.keyboard.press("End")
    _wait(page, index=SLICES - 1)
    page.keyboard.press("PageUp")
    _wait(page, index=SLICES - 11)
    for _ in range(SLICES // 2 + 1 - (SLICES - 11)):
        page.keyboard.press("ArrowDown")
    _wait(page, index=SLICES // 2 + 1)


def _window(page: Page, shots: Path) -> None:
    soft = _stats(page)
    page.click("button[data-preset=lung]")
    _wait(page, ww=1500, wc=-600)
    lung = _stats(page)
    # In a lung window air, fat and the lungs are all lighter than in the default soft window.
    assert lung["mean"] > soft["mean"] + 10, (soft, lung)
    page.screenshot(path=shots / "04-lung-window.png")

    x, y = _to_page(page, SIZE / 2, SIZE / 2)
    page.mouse.move(x, y)
    page.mouse.down(button="right")
    page.mouse.move(x + 60, y, steps=4)
    page.mouse.up(button="right")
    _wait(page)
    wider = int(_data(page, "ww"))
    assert wider > 1500
    assert _stats(page)["std"] < lung["std"], "a wider window must lower the contrast"
    page.screenshot(path=shots / "05-dragged-window.png")
    page.click("button[data-preset=mediastinum]")
    _wait(page, ww=350, wc=50)

    # Invert: every pixel of the image becomes its complement (the black margin stays).
    plain = _pixels(page)
    page.click("button[data-action=invert]")
    _wait(page, invert="1")
    inverted = _pixels(page)
    inside = _image_mask(page)
    assert np.abs(inverted[inside] - (255 - plain[inside])).mean() < 2
    page.keyboard.press("i")
    _wait(page, invert="0")


def _image_mask(page: Page) -> np.ndarray:
    """Which canvas pixels (flattened) lie well inside the drawn image."""
    rows, columns = page.evaluate(
        f"() => {{ const c = document.querySelector('{VIEWPORT} canvas'); "
        "return [c.height, c.width]; }"
    )
    scale, x0, y0 = _image_box(page)
    width, height = float(_data(page, "image-width")), float(_data(page, "image-height"))
    ys, xs = np.mgrid[0:rows, 0:columns]
    margin = 2
    return (
        (xs >= x0 + margin) & (xs < x0 + width * scale - margin)
        & (ys >= y0 + margin) & (ys < y0 + height * scale - margin)
    ).ravel()  # fmt: skip


def _coronal_and_mip(page: Page, shots: Path) -> None:
    page.wait_for_selector("button[data-plane=coronal]:not([disabled])", timeout=WAIT_MS)
    assert "Volume ready" in page.inner_text("#volume-status")
    axial = _pixels(page)
    page.click("button[data-plane=coronal]")
    _wait(page, plane="coronal", count=SIZE, index=SIZE // 2)
    width, height = int(_data(page, "image-width")), int(_data(page, "image-height"))
    # Square millimetres: 64 columns of 1.5 mm across, 16 slices of 2.5 mm down.
    assert abs(width / height - (SIZE * SPACING_MM) / (SLICES * THICKNESS_MM)) < 0.05
    assert page.inner_text(f"{VIEWPORT} .vx-orient.top") == "S"
    coronal = _pixels(page)
    assert np.abs(coronal - axial).mean() > 1
    slice_stats = _stats(page)
    page.screenshot(path=shots / "06-coronal.png")

    page.click("button[data-mode=mip]")
    _wait(page, plane="coronal", mode="mip", slab=20)
    mip = _stats(page)
    assert mip["mean"] > slice_stats["mean"] + 0.5, (slice_stats, mip)
    assert "MIP 20 mm" in page.inner_text(f"{VIEWPORT} .vx-corner.tr")
    page.screenshot(path=shots / "07-coronal-mip.png")
    page.click("button[data-mode=minip]")
    _wait(page, mode="minip")
    minip = _stats(page)
    assert minip["mean"] < slice_stats["mean"] - 0.5
    page.click("button[data-mode=avg]")
    _wait(page, mode="avg")
    assert minip["mean"] < _stats(page)["mean"] < mip["mean"]
    page.click("button[data-mode=slice]")
    page.click("button[data-plane=axial]")
    _wait(page, plane="axial", mode="slice", index=SLICES // 2)


def _segmentation(page: Page, shots: Path) -> None:
    page.keyboard.press("ArrowUp")  # slice 7: inside the box's slices 5..10
    _wait(page, index=SLICES // 2 - 1)
    assert _stats(page)["coloured"] == 0
    page.check("#seg-list input[data-seg-toggle]")
    _wait(page, overlay="ready", overlayDrawn="1")
    shown = _stats(page)
    assert shown["coloured"] > 100
    # The coloured pixels cover the box (rows 20..35, columns 12..29) and nothing else.
    width = float(_data(page, "image-width"))
    per_voxel = width / SIZE
    scale, x0, y0 = _image_box(page)
    expected = [
        x0 + BOX[2].start * per_voxel * scale, y0 + BOX[1].start * per_voxel * scale,
        x0 + BOX[2].stop * per_voxel * scale, y0 + BOX[1].stop * per_voxel * scale,
    ]  # fmt: skip
    tolerance = per_voxel * scale + 2
    for got, want in zip(shown["box"], expected, strict=True):
        assert abs(got - want) <= tolerance, (shown["box"], expected)
    page.screenshot(path=shots / "08-seg-overlay.png")

    page.fill("#seg-opacity", "100")
    page.dispatch_event("#seg-opacity", "input")
    opaque = _stats(page)
    colour = page.evaluate(
        "() => getComputedStyle(document.querySelector('.vx-swatch')).backgroundColor"
    )
    rgb = [int(c) for c in colour.removeprefix("rgb(").removesuffix(")").split(",")]
    assert np.abs(np.array(opaque["colour"]) - rgb).max() < 12, (opaque["colour"], rgb)

    page.uncheck("#seg-list input[data-segment='1']")
    _wait(page, overlayDrawn="0")
    assert _stats(page)["coloured"] == 0
    page.check("#seg-list input[data-segment='1']")
    _wait(page, overlayDrawn="1")
    page.uncheck("#seg-list input[data-seg-toggle]")
    _wait(page, overlay="none")
    assert _stats(page)["coloured"] == 0


def _measure(page: Page, shots: Path) -> None:
    page.click("button[data-tool=length]")
    width = float(_data(page, "image-width"))
    start, end = (8.0, 40.0), (8.0 + width * 0.5, 40.0)
    page.mouse.move(*_to_page(page, *start))
    page.mouse.down()
    page.mouse.move(*_to_page(page, *end), steps=5)
    page.mouse.up()
    label = page.locator(f"{VIEWPORT} .vx-measure-label").first
    # Half the image's width: half of 64 columns of 1.5 mm.
    assert abs(float(label.get_attribute("data-length-mm") or "nan") - SIZE * SPACING_MM / 2) < 1
    assert (label.text_content() or "").endswith(" mm")

    page.click("button[data-tool=rect]")
    per_voxel = width / SIZE
    centre = SIZE / 2 * per_voxel
    page.mouse.move(*_to_page(page, centre - 2 * per_voxel, centre - 2 * per_voxel))
    page.mouse.down()
    page.mouse.move(*_to_page(page, centre + 2 * per_voxel, centre + 2 * per_voxel), steps=3)
    page.mouse.up()
    region = page.locator(f"{VIEWPORT} .vx-measure.rect .vx-measure-label")
    page.wait_for_function(
        "() => document.querySelector('.vx-measure.rect .vx-measure-label')?.dataset.mean",
        timeout=WAIT_MS,
    )
    # The phantom's mediastinum is soft tissue, 40 HU.
    assert abs(float(region.get_attribute("data-mean") or "nan") - 40) < 1
    assert "HU" in (region.text_content() or "")

    # The ellipse inscribed in the same square holds about pi/4 of its pixels.
    page.click("button[data-tool=ellipse]")
    page.mouse.move(*_to_page(page, centre - 2 * per_voxel, centre - 2 * per_voxel))
    page.mouse.down()
    page.mouse.move(*_to_page(page, centre + 2 * per_voxel, centre + 2 * per_voxel), steps=3)
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelector('.vx-measure.ellipse .vx-measure-label')?.dataset.n",
        timeout=WAIT_MS,
    )
    ellipse = page.locator(f"{VIEWPORT} .vx-measure.ellipse .vx-measure-label")
    ratio = float(ellipse.get_attribute("data-n") or 0) / float(region.get_attribute("data-n") or 1)
    assert abs(ratio - np.pi / 4) < 0.08, ratio
    assert abs(float(ellipse.get_attribute("data-mean") or "nan") - 40) < 1
    page.screenshot(path=shots / "09-measurements.png")


def _zoom_and_pan(page: Page, shots: Path) -> None:
    """Pan moves the drawn image with the mouse; zoom enlarges it; reset undoes both."""
    centre = float(_data(page, "image-width")) / 2
    rows, columns = page.evaluate(
        f"() => {{ const c = document.querySelector('{VIEWPORT} canvas'); "
        "return [c.height, c.width]; }"
    )
    before = _pixels(page).reshape(rows, columns)
    page.click("button[data-tool=pan]")
    x, y = _to_page(page, centre, centre)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 50, y, steps=3)
    page.mouse.up()
    after = _pixels(page).reshape(rows, columns)
    assert np.abs(after[:, 100:-100] - before[:, 50:-150]).mean() < 2
    page.click("button[data-tool=zoom]")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y - 80, steps=3)
    page.mouse.up()
    assert float(_data(page, "zoom")) > 1.3
    page.screenshot(path=shots / "10-zoomed.png")
    page.keyboard.press("r")  # also back to the series' own window
    _wait(page, zoom="1.000", ww=400, wc=40)
    page.click("button[data-preset=mediastinum]")
    _wait(page, ww=350, wc=50)
    assert np.abs(_pixels(page).reshape(rows, columns) - before).mean() < 1


def _layouts(page: Page, shots: Path) -> None:
    page.click("button[data-layout=mpr]")
    page.wait_for_selector(
        '.vx-viewport[data-viewport="2"][data-plane="sagittal"][data-state="ready"]'
    )
    page.wait_for_selector(
        '.vx-viewport[data-viewport="1"][data-plane="coronal"][data-state="ready"]'
    )
    _wait(page, plane="axial")
    coronal = page.locator('.vx-viewport[data-viewport="1"]')
    sagittal = page.locator('.vx-viewport[data-viewport="2"]')
    # A click in the axial view at column 12, row 20 moves the other planes there.
    page.mouse.click(*_to_page(page, 12.5 * float(_data(page, "image-width")) / SIZE,
                               20.5 * float(_data(page, "image-width")) / SIZE))  # fmt: skip
    page.wait_for_selector('.vx-viewport[data-viewport="1"][data-index="20"]', timeout=WAIT_MS)
    page.wait_for_selector('.vx-viewport[data-viewport="2"][data-index="12"]', timeout=WAIT_MS)
    assert coronal.locator(".vx-crosshair").count() == 1
    assert sagittal.locator(".vx-crosshair").count() == 1
    page.screenshot(path=shots / "11-mpr.png")
    page.click("button[data-layout='4']")
    page.wait_for_selector('.vx-viewport[data-viewport="3"][data-state="ready"]', timeout=WAIT_MS)
    assert page.locator(".vx-viewport").count() == 4
    # Drag the series from the list onto the coronal viewport: it shows it axially again.
    page.drag_and_drop(
        ".vx-serieslist li[data-kind=image] button", '.vx-viewport[data-viewport="1"]'
    )
    page.wait_for_selector(
        '.vx-viewport[data-viewport="1"][data-plane="axial"][data-state="ready"]',
        timeout=WAIT_MS,
    )
    page.screenshot(path=shots / "12-four-viewports.png")


def _a_series_that_is_no_volume(page: Page, server: str, study_uid: str, shots: Path) -> None:
    page.goto(f"{server}/viewer/studies/{study_uid}")
    _wait(page, index=0, count=1)
    status = page.inner_text("#volume-status")
    assert status.startswith("Slice by slice only: "), status
    assert "single image" in status
    assert page.is_disabled("button[data-plane=coronal]")
    assert page.is_disabled("button[data-mode=mip]")
    assert page.is_disabled("button[data-layout=mpr]")
    assert "single image" in (page.get_attribute("button[data-mode=mip]", "title") or "")
    page.screenshot(path=shots / "13-no-volume.png")


def test_read_a_ct_in_the_browser(
    live_server: str, stored_study: tuple[Account, list[Dataset]], artifacts: Path
) -> None:
    reader, stored = stored_study
    with browser_page(1280, 800) as (page, errors):
        _sign_in_and_find_the_study(page, live_server, reader, artifacts)
        steps = (_scroll, _window, _coronal_and_mip, _segmentation, _measure, _zoom_and_pan)
        for step in (*steps, _layouts):
            step(page, artifacts)
        _a_series_that_is_no_volume(page, live_server, stored[-1].StudyInstanceUID, artifacts)
        assert errors == [], f"the viewer raised JavaScript errors: {errors}"
