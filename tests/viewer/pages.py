"""Where the viewer draws images and cross-hairs on the page, for the browser tests."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.conftest import Account

WAIT_MS = 30_000


def viewport(index: int) -> str:
    """The selector of viewport `index` (0: top left)."""
    return f'.vx-viewport[data-viewport="{index}"]'


def open_study(page: Page, server: str, reader: Account, study_uid: str) -> None:
    """Sign `reader` in and open the study in the viewer."""
    page.goto(f"{server}/viewer")
    page.fill("input[name=username]", reader.username)
    page.fill("input[name=password]", reader.password)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{server}/viewer")
    page.goto(f"{server}/viewer/studies/{study_uid}")


def image_box(page: Page, selector: str) -> tuple[float, float, float, float, float]:
    """The page position of the image drawn in the viewport (zoom 1, no pan): its left and
    top edges, and how many page pixels one pixel of the rendered image covers; and that
    image's width and height."""
    box = page.locator(selector).bounding_box()
    assert box is not None
    width = float(page.get_attribute(selector, "data-image-width") or "nan")
    height = float(page.get_attribute(selector, "data-image-height") or "nan")
    scale = min(box["width"] / width, box["height"] / height)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    return left, top, scale, width, height


def page_point(
    page: Page, selector: str, at: tuple[float, float], *, shape: tuple[int, int]
) -> tuple[float, float]:
    """Where (column, row) of the `shape` image that the viewport shows lies on the page."""
    left, top, scale, width, height = image_box(page, selector)
    x = (at[0] + 0.5) / shape[1] * width
    y = (at[1] + 0.5) / shape[0] * height
    return left + x * scale, top + y * scale


def crosshair(page: Page, selector: str, *, shape: tuple[int, int]) -> tuple[float, float]:
    """The (column, row) of the `shape` image that the viewport's cross-hair lines cross at."""
    lines = page.locator(f"{selector} .vx-crosshair line")
    assert lines.count() == 2
    y = float(lines.nth(0).get_attribute("y1") or "nan")
    x = float(lines.nth(1).get_attribute("x1") or "nan")
    left, top, scale, width, height = image_box(page, selector)
    box = page.locator(selector).bounding_box()
    assert box is not None
    column = (box["x"] + x - left) / scale / width * shape[1] - 0.5
    row = (box["y"] + y - top) / scale / height * shape[0] - 0.5
    return column, row


def wait_ready(page: Page, selector: str, **data: str | int) -> None:
    """Wait until the viewport shows the image it wants, with these data attributes."""
    checks = "".join(f"[data-{name}='{value}']" for name, value in data.items())
    page.wait_for_selector(f"{selector}[data-state='ready']{checks}", timeout=WAIT_MS)
