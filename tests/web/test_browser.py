"""The pages in a real browser: headless Chromium against a real uvicorn server."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.browser import browser_page, needs_chromium
from tests.conftest import Account
from voxelhub.archives import service as archive_service
from voxelhub.archives import values_service
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime

pytestmark = [
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture
def server(live_server: str) -> str:
    return live_server


def _archive_with_a_case(runtime: Runtime, owner: Account) -> None:
    principal = Principal(user_id=owner.id, username=owner.username, is_admin=False, via="system")
    with session_scope(runtime.database_url) as db:
        archive = archive_service.create_archive(db, principal, "Chest CT", description="screening")
        case = archive_service.create_case(db, archive.id, "patient-0042")
        report = {"kind": "report", "text": "No focal consolidation.", "language": "en"}
        values_service.set_scalar(db, runtime.store, case, "report", report)


def _sign_in(page: Page, server: str, account: Account, shots: Path) -> None:
    page.goto(f"{server}/tokens")
    assert page.url.startswith(f"{server}/login?next=/tokens")
    page.screenshot(path=shots / "login.png")
    page.fill("input[name=username]", account.username)
    page.fill("input[name=password]", "a wrong password")
    page.click("button:has-text('Sign in')")
    assert "wrong username or password" in page.inner_text("[role=alert]")
    page.fill("input[name=username]", account.username)
    page.fill("input[name=password]", account.password)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{server}/tokens")


def _browse_to_the_archive(page: Page, server: str, shots: Path) -> None:
    page.click("nav >> text=Archives")
    page.wait_for_url(f"{server}/")
    page.screenshot(path=shots / "archives.png")
    page.fill("input[name=name]", "Chest CT")
    page.click("button:has-text('Create archive')")
    assert "exists already" in page.inner_text("[role=alert]")
    assert page.input_value("input[name=name]") == "Chest CT"
    page.screenshot(path=shots / "archives-error.png")

    page.click("table >> text=Chest CT")
    page.wait_for_url(re.compile(r".*/archives/[0-9a-f-]+$"))
    assert page.inner_text(".case-title") == "patient-0042"
    assert "No focal consolidation." in page.inner_text("table.cases")
    assert "alice" in page.inner_text("table.members")
    page.screenshot(path=shots / "archive.png", full_page=True)


def _create_use_and_revoke_a_token(page: Page, server: str, shots: Path) -> None:
    page.click("nav >> text=Tokens")
    page.fill("input[name=name]", "notebook")
    page.fill("input[name=expires_in_days]", "7")
    page.click("button:has-text('Create token')")
    token = page.inner_text("#new-token").strip()
    assert token.startswith("vxh_")
    assert page.is_visible("button[data-copy]")  # the module ran and revealed it
    page.screenshot(path=shots / "tokens.png", full_page=True)

    bearer = {"Authorization": f"Bearer {token}"}
    me = httpx.get(f"{server}/api/v1/auth/me", headers=bearer)
    assert me.status_code == 200
    assert me.json()["username"] == "alice"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button[aria-label='Revoke notebook']")
    page.wait_for_selector("tr.revoked")
    assert 'id="new-token"' not in page.content()
    assert httpx.get(f"{server}/api/v1/auth/me", headers=bearer).status_code == 401


def test_sign_in_browse_an_archive_and_create_a_token(
    server: str, runtime: Runtime, make_user: Callable[..., Account], tmp_path: Path
) -> None:
    alice = make_user("alice")
    _archive_with_a_case(runtime, alice)

    with browser_page(1280, 800) as (page, errors):
        _sign_in(page, server, alice, tmp_path)
        _browse_to_the_archive(page, server, tmp_path)
        _create_use_and_revoke_a_token(page, server, tmp_path)

        page.goto(f"{server}/archives/00000000-0000-0000-0000-000000000000")
        assert "Not found" in page.inner_text("h1")
        page.screenshot(path=tmp_path / "error.png")

        page.click("button:has-text('Sign out')")
        page.wait_for_url(f"{server}/login")
        assert errors == [], "the pages raised JavaScript errors"
