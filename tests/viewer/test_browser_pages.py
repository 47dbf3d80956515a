"""The viewer's pages and static modules as the server delivers them (no browser needed)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import Account, stow
from tests.web.test_pages import sign_in
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.viewer.page import STATIC_DIR


def test_pages_need_a_session(client: TestClient) -> None:
    for path in ("/viewer", "/viewer/studies/1.2.3"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={path}"


def test_study_browser_page(client: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    reader: Account = make_user("reader")
    sign_in(client, reader)
    page = client.get("/viewer")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert 'id="study-browser"' in page.text
    assert '<a href="/viewer" aria-current="page">Viewer</a>' in page.text
    assert re.search(r'<script type="module" src="/viewer/static/browser\.js\?v=[^"]+">', page.text)
    # The page's content security policy allows no inline script.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)


def test_study_page_and_archive_link(client: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    reader: Account = make_user("reader")
    archive = client.post("/api/v1/archives", json={"name": "CT"}, headers=reader.headers).json()
    series = ct_phantom(slices=2, size=16)
    stow(client, reader, archive["id"], series)
    csrf = sign_in(client, reader)
    study_uid = series[0].StudyInstanceUID

    listing = client.get(f"/archives/{archive['id']}")
    assert f'href="/viewer/studies/{study_uid}">Open in viewer</a>' in listing.text

    page = client.get(f"/viewer/studies/{study_uid}")
    assert page.status_code == 200
    assert f'data-study-uid="{study_uid}"' in page.text
    # The session's CSRF token, which the module sends with POST .../load.
    assert f'data-csrf="{csrf}"' in page.text
    presets = {
        name: (int(width), int(center))
        for name, width, center in re.findall(
            r'data-preset="(\w+)" data-ww="(-?\d+)" data-wc="(-?\d+)"', page.text
        )
    }
    assert presets == {
        "lung": (1500, -600),
        "mediastinum": (350, 50),
        "bone": (2000, 300),
        "brain": (80, 40),
        "abdomen": (400, 50),
    }


def test_a_malformed_study_uid_is_a_clear_404(client: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, make_user("reader"))
    page = client.get("/viewer/studies/not-a-uid")
    assert page.status_code == 404
    assert "is not a study instance UID" in page.text
    assert "/viewer" in page.text


def test_every_module_and_its_imports_are_served(client: TestClient) -> None:
    modules = sorted(Path(STATIC_DIR).glob("*.js"))
    assert {m.name for m in modules} >= {"viewer.js", "browser.js", "viewport.js", "cache.js"}
    for module in modules:
        response = client.get(f"/viewer/static/{module.name}")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]
        for imported in re.findall(r'from "\./([\w-]+\.js)"', response.text):
            assert (Path(STATIC_DIR) / imported).is_file(), f"{module.name} imports {imported}"
    css = client.get("/viewer/static/viewer.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
