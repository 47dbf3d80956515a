"""The compute pages: algorithms, the run form, jobs, cancelling, CSRF; and once in Chromium."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.browser import browser_page, needs_chromium
from tests.conftest import Account
from tests.web.test_pages import audit_actions, browser, make_archive, sign_in
from voxelhub.algorithms.catalog import register_builtins
from voxelhub.archives import service as archive_service
from voxelhub.archives import values_service
from voxelhub.auth.models import User
from voxelhub.auth.roles import ArchiveRole
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.jobs.models import Job

MakeUser = Callable[..., Account]

ECHO_SPEC: dict[str, object] = {
    "kind": "builtin",
    "entrypoint": "echo",
    "inputs": [{"interface": "payload", "kind": "json"}],
    "outputs": [{"interface": "payload", "kind": "json"}],
}


@pytest.fixture(autouse=True)
def builtins() -> None:
    register_builtins()


def make_algorithm(
    client: TestClient,
    owner: Account,
    slug: str = "echo-test",
    spec: Mapping[str, object] | None = None,
) -> None:
    """An algorithm and one version, made through the JSON API the way editors do."""
    body = {"slug": slug, "title": "Echo <test>", "description": "Gives back its payload."}
    created = client.post("/api/v1/algorithms", json=body, headers=owner.headers)
    assert created.status_code == 201, created.text
    version = client.post(
        f"/api/v1/algorithms/{slug}/versions",
        data={"spec": json.dumps(spec or ECHO_SPEC)},
        headers=owner.headers,
    )
    assert version.status_code == 201, version.text


def make_case(runtime: Runtime, archive_id: uuid.UUID, title: str = "patient-0042") -> uuid.UUID:
    """A case holding a JSON value `payload` and a file value `scan`."""
    with session_scope(runtime.database_url) as db:
        case = archive_service.create_case(db, archive_id, title)
        document: dict[str, object] = {"kind": "json", "value": {"threshold": 7}}
        values_service.set_scalar(db, runtime.store, case, "payload", document)
        values_service.put_file(db, runtime.store, case, "scan", filename="scan.bin",
                                data=io.BytesIO(b"\x00" * 64))  # fmt: skip
        return case.id


def add_archive_member(runtime: Runtime, archive_id: uuid.UUID, account: Account) -> None:
    with session_scope(runtime.database_url) as db:
        user = db.get(User, account.id)
        assert user is not None
        archive_service.set_member(db, archive_id, user, ArchiveRole.viewer)


def start_from_page(
    client: TestClient, csrf: str, archive_id: uuid.UUID, case_id: uuid.UUID, payload: str
) -> str:
    """Run echo-test through the run form; returns the job page's path."""
    response = client.post(
        "/algorithms/echo-test/run",
        data={
            "csrf_token": csrf,
            "archive_id": str(archive_id),
            "case_id": str(case_id),
            "input.payload": payload,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    location = str(response.headers["location"])
    assert re.fullmatch(r"/jobs/[0-9a-f-]{36}", location)
    return location


@pytest.fixture
def setup(
    client: TestClient, runtime: Runtime, make_user: MakeUser
) -> tuple[Account, str, uuid.UUID, uuid.UUID]:
    """Alice, signed in (her CSRF token), with an algorithm, an archive and a case."""
    alice = make_user("alice")
    make_algorithm(client, alice)
    archive_id = make_archive(runtime.database_url, alice, "Chest CT")
    case_id = make_case(runtime, archive_id)
    return alice, sign_in(client, alice), archive_id, case_id


Setup = tuple[Account, str, uuid.UUID, uuid.UUID]


def test_the_algorithms_page_lists_what_you_may_run(
    client: TestClient, setup: Setup, app: FastAPI, make_user: MakeUser
) -> None:
    page = client.get("/algorithms")
    assert page.status_code == 200
    assert 'href="/algorithms/echo-test"' in page.text
    assert "Echo &lt;test&gt;" in page.text  # escaped
    assert "payload" in page.text and "builtin" in page.text
    assert 'aria-current="page">Algorithms' in page.text

    bob, _ = browser(app, make_user("bob"))
    assert "echo-test" not in bob.get("/algorithms").text
    hidden = bob.get("/algorithms/echo-test")
    assert hidden.status_code == 404
    assert "Not found" in hidden.text


def test_the_algorithm_page_shows_inputs_versions_members_and_the_picker(
    client: TestClient, setup: Setup
) -> None:
    _, _, archive_id, case_id = setup
    page = client.get("/algorithms/echo-test")
    assert page.status_code == 200
    text = page.text
    assert "Gives back its payload." in text
    assert "Inputs and outputs" in text and 'class="interface">payload' in text
    assert "2048 MB" in text  # the default resources
    assert 'class="badge role-editor">editor' in text  # alice, its creator
    assert f'<option value="{archive_id}">Chest CT</option>' in text
    assert 'name="case"' not in text  # no archive chosen yet

    with_archive = client.get(f"/algorithms/echo-test?archive={archive_id}").text
    assert f'<option value="{case_id}">patient-0042</option>' in with_archive
    assert 'action="/algorithms/echo-test/run"' not in with_archive

    with_case = client.get(f"/algorithms/echo-test?archive={archive_id}&case={case_id}").text
    assert 'action="/algorithms/echo-test/run"' in with_case
    assert 'name="input.payload"' in with_case
    assert "Leave empty to use the case" in with_case


def test_a_file_input_offers_the_values_of_its_kind(client: TestClient, setup: Setup) -> None:
    alice, _, archive_id, case_id = setup
    spec = {**ECHO_SPEC, "inputs": [{"interface": "image", "kind": "file"}]}
    make_algorithm(client, alice, "file-test", spec)
    page = client.get(f"/algorithms/file-test?archive={archive_id}&case={case_id}").text
    select_html = page.split('name="input.image"', 1)[1].split("</select>", 1)[0]
    assert '<option value="scan"' in select_html
    assert "payload" not in select_html  # a json value is not a file


def test_an_archive_you_cannot_upload_to_is_not_offered(
    client: TestClient, setup: Setup, runtime: Runtime, app: FastAPI, make_user: MakeUser
) -> None:
    alice, _, archive_id, _ = setup
    viewer = make_user("viewer")
    add_archive_member(runtime, archive_id, viewer)
    other, _ = browser(app, viewer)
    assert other.get("/algorithms/echo-test").status_code == 404  # not theirs to use yet
    grant = client.put(
        "/api/v1/algorithms/echo-test/members/viewer", params={"role": "user"},
        headers=alice.headers,
    )  # fmt: skip
    assert grant.status_code == 200, grant.text
    page = other.get("/algorithms/echo-test")
    assert page.status_code == 200
    assert 'class="badge role-user">user' in page.text
    assert "There is no archive you can upload to" in page.text
    chosen = other.get(f"/algorithms/echo-test?archive={archive_id}")
    assert chosen.status_code == 404
    assert "that you can upload to" in chosen.text
    assert 'name="case"' not in chosen.text


def test_run_follow_and_cancel_a_job(client: TestClient, setup: Setup) -> None:
    _, csrf, archive_id, case_id = setup
    location = start_from_page(client, csrf, archive_id, case_id, '{"threshold": 9}')
    job_id = location.rsplit("/", 1)[1]

    page = client.get(location)
    assert page.status_code == 200
    # Sent to its queue after the commit, by a background sender: pending until then.
    assert re.search(r"badge state-(pending|queued)", page.text)
    assert "Echo &lt;test&gt; on patient-0042" in page.text
    assert "{&#34;threshold&#34;: 9}" in page.text  # the inline input, escaped
    assert page.headers["refresh"] == "3"  # it follows itself while not finished
    assert f'action="/jobs/{job_id}/cancel"' in page.text
    assert "job.read" in audit_actions_of(client, job_id)

    jobs = client.get("/jobs")
    assert jobs.status_code == 200
    assert f'href="{location}"' in jobs.text
    assert "patient-0042" in jobs.text and "echo-test" in jobs.text
    deadline = time.monotonic() + 30  # the background sender marks it queued once sent
    while f'href="{location}"' not in client.get("/jobs?state=queued").text:
        assert time.monotonic() < deadline, "the job was never sent to its queue"
        time.sleep(0.2)
    assert f'href="{location}"' not in client.get("/jobs?state=failed").text
    assert client.get("/jobs?state=nonsense").status_code == 400

    cancelled = client.post(
        f"/jobs/{job_id}/cancel", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == location
    page = client.get(location)
    assert "badge state-cancelled" in page.text
    assert "refresh" not in page.headers
    assert f'action="/jobs/{job_id}/cancel"' not in page.text

    again = client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409
    assert "nothing to cancel" in again.text


def audit_actions_of(client: TestClient, job_id: str) -> list[str]:
    app = client.app
    assert isinstance(app, FastAPI)
    return audit_actions(app.state.runtime.database_url, uuid.UUID(job_id))


def test_an_empty_input_takes_the_case_value(client: TestClient, setup: Setup) -> None:
    _, csrf, archive_id, case_id = setup
    page = client.get(start_from_page(client, csrf, archive_id, case_id, ""))
    assert 'the case\'s <span class="interface">payload</span>' in page.text


def test_another_user_cannot_see_or_cancel_the_job(
    client: TestClient, setup: Setup, app: FastAPI, make_user: MakeUser
) -> None:
    _, csrf, archive_id, case_id = setup
    location = start_from_page(client, csrf, archive_id, case_id, "1")
    bob, bob_csrf = browser(app, make_user("bob"))
    assert bob.get(location).status_code == 404
    refused = bob.post(f"{location}/cancel", data={"csrf_token": bob_csrf})
    assert refused.status_code == 404
    assert location not in bob.get("/jobs").text
    missing = bob.get(f"/jobs/{uuid.uuid4()}")
    assert missing.status_code == 404
    hidden = bob.get(location)
    assert hidden.text.replace(location.rsplit("/", 1)[1], "") == missing.text.replace(
        str(missing.url).rsplit("/", 1)[1], ""
    )  # the same answer: job ids cannot be probed
    assert re.search(r"badge state-(pending|queued)", client.get(location).text)


def test_a_viewer_of_the_archive_sees_the_job_but_cannot_cancel_it(
    client: TestClient, setup: Setup, app: FastAPI, runtime: Runtime, make_user: MakeUser
) -> None:
    _, csrf, archive_id, case_id = setup
    location = start_from_page(client, csrf, archive_id, case_id, "1")
    viewer = make_user("viewer")
    add_archive_member(runtime, archive_id, viewer)
    other, other_csrf = browser(app, viewer)
    page = other.get(location)
    assert page.status_code == 200
    assert "/cancel" not in page.text
    assert other.post(f"{location}/cancel", data={"csrf_token": other_csrf}).status_code == 403


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"threshold": ', "takes JSON, and what you entered does not parse"),
        ("NaN", "takes JSON, and what you entered does not parse"),
    ],
)
def test_a_bad_run_shows_the_error_on_the_page(
    client: TestClient, setup: Setup, runtime: Runtime, payload: str, message: str
) -> None:
    _, csrf, archive_id, case_id = setup
    response = client.post(
        "/algorithms/echo-test/run",
        data={
            "csrf_token": csrf,
            "archive_id": str(archive_id),
            "case_id": str(case_id),
            "input.payload": payload,
        },
    )
    assert response.status_code == 400
    assert message in response.text
    assert 'role="alert"' in response.text
    assert 'action="/algorithms/echo-test/run"' in response.text  # the form, to try again
    assert payload.replace('"', "&#34;") in response.text  # what was entered is kept
    with session_scope(runtime.database_url) as db:
        assert db.scalar(select(func.count()).select_from(Job)) == 0


def test_a_wrong_kind_shows_the_service_message(client: TestClient, setup: Setup) -> None:
    alice, csrf, archive_id, case_id = setup
    spec = {**ECHO_SPEC, "inputs": [{"interface": "image", "kind": "file"}]}
    make_algorithm(client, alice, "file-test", spec)
    response = client.post(
        "/algorithms/file-test/run",
        data={
            "csrf_token": csrf,
            "archive_id": str(archive_id),
            "case_id": str(case_id),
            "input.image": "payload",
        },
    )
    assert response.status_code == 400
    assert "takes a file, but the case&#39;s &#39;payload&#39; is a json" in response.text


def test_a_run_on_an_archive_you_cannot_see_is_refused(
    client: TestClient, setup: Setup, runtime: Runtime, make_user: MakeUser
) -> None:
    _, csrf, _, _ = setup
    elsewhere = make_archive(runtime.database_url, make_user("carol"), "Private")
    case_id = make_case(runtime, elsewhere)
    response = client.post(
        "/algorithms/echo-test/run",
        data={
            "csrf_token": csrf,
            "archive_id": str(elsewhere),
            "case_id": str(case_id),
            "input.payload": "1",
        },
    )
    assert response.status_code == 404
    assert "that you can see" in response.text


def test_forms_without_csrf_are_refused(client: TestClient, setup: Setup) -> None:
    _, csrf, archive_id, case_id = setup
    fields = {"archive_id": str(archive_id), "case_id": str(case_id), "input.payload": "1"}
    run = client.post("/algorithms/echo-test/run", data=fields)
    assert run.status_code == 403
    forged = client.post("/algorithms/echo-test/run", data={**fields, "csrf_token": "forged"})
    assert forged.status_code == 403
    location = start_from_page(client, csrf, archive_id, case_id, "1")
    assert client.post(f"{location}/cancel", data={}).status_code == 403
    assert re.search(r"badge state-(pending|queued)", client.get(location).text)


def test_signed_out_pages_redirect_to_login(client: TestClient) -> None:
    for path in ("/algorithms", "/algorithms/echo-test", "/jobs", f"/jobs/{uuid.uuid4()}"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture
def compute_server(live_server: str) -> str:
    return live_server


@pytest.mark.slow
@needs_chromium
def test_run_and_cancel_in_a_browser(
    compute_server: str, client: TestClient, setup: Setup, tmp_path: Path
) -> None:
    alice = setup[0]
    with browser_page(1280, 900) as (page, errors):
        page.goto(f"{compute_server}/login?next=/algorithms")
        page.fill("input[name=username]", alice.username)
        page.fill("input[name=password]", alice.password)
        page.click("button:has-text('Sign in')")
        page.wait_for_url(f"{compute_server}/algorithms")
        page.screenshot(path=tmp_path / "algorithms.png", full_page=True)

        page.click("table >> text=Echo <test>")
        page.wait_for_url(f"{compute_server}/algorithms/echo-test")
        assert page.is_hidden("button[data-autosubmit-fallback]")  # app.js ran
        page.select_option("select[name=archive]", label="Chest CT")  # reloads the page
        page.wait_for_selector("select[name=case]")
        page.select_option("select[name=case]", label="patient-0042")
        page.wait_for_selector("textarea[name='input.payload']")
        page.fill("textarea[name='input.payload']", '{"threshold": 9}')
        page.screenshot(path=tmp_path / "algorithm.png", full_page=True)
        page.click("button:has-text('Run on patient-0042')")
        page.wait_for_url(re.compile(r".*/jobs/[0-9a-f-]{36}$"))
        assert page.inner_text("h1") == "Echo <test> on patient-0042"
        page.screenshot(path=tmp_path / "job.png", full_page=True)

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("button:has-text('Cancel job')")
        page.wait_for_selector(".pagehead .badge.state-cancelled")
        page.click("nav >> text=Jobs")
        page.wait_for_url(f"{compute_server}/jobs")
        assert "cancelled" in page.inner_text("table.jobs")
        page.screenshot(path=tmp_path / "jobs.png", full_page=True)
        assert errors == [], "the pages raised JavaScript errors"
