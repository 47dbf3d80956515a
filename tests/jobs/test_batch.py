"""Starting many jobs in one request: all of them in one transaction, or none."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.conftest import Account
from voxelhub.auth.models import AuditEvent
from voxelhub.core.db import session_scope
from voxelhub.jobs.models import Job

pytestmark = pytest.mark.usefixtures("builtins_registered")


def _cases(client: TestClient, user: Account, count: int) -> tuple[str, list[str]]:
    archive = client.post(
        "/api/v1/archives", json={"name": f"A-{user.username}"}, headers=user.headers
    ).json()
    cases = [
        client.post(
            f"/api/v1/archives/{archive['id']}/cases", json={"title": f"c{i}"}, headers=user.headers
        ).json()["id"]
        for i in range(count)
    ]
    return archive["id"], cases


def _job(archive_id: str, case_id: str, value: Any) -> dict[str, Any]:
    return {"archive_id": archive_id, "case_id": case_id, "inputs": {"payload": {"value": value}}}


def _counts(database_url: str) -> tuple[int, int]:
    with session_scope(database_url) as db:
        jobs = db.scalar(select(func.count()).select_from(Job))
        audited = db.scalar(select(func.count()).where(AuditEvent.action == "job.create"))
    return int(jobs or 0), int(audited or 0)


def test_a_batch_starts_one_job_per_case_with_its_own_inputs(
    client: TestClient, make_user, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    archive_id, cases = _cases(client, user, 3)
    answer = client.post(
        "/api/v1/algorithms/echo/jobs/batch",
        json={"jobs": [_job(archive_id, case_id, {"n": i}) for i, case_id in enumerate(cases)]},
        headers=user.headers,
    )
    assert answer.status_code == 202, answer.text
    jobs = answer.json()
    assert [job["case_id"] for job in jobs] == cases
    assert [job["inputs"]["values"]["payload"]["value"] for job in jobs] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    assert {job["state"] for job in jobs} <= {"pending", "queued"}
    assert _counts(database_url) == (3, 3)
    one = client.get(f"/api/v1/jobs/{jobs[1]['id']}", headers=user.headers)
    assert one.status_code == 200 and one.json()["case_id"] == cases[1]


def test_one_refused_job_refuses_the_whole_batch(
    client: TestClient, make_user, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    other: Account = make_user("other")
    archive_id, cases = _cases(client, user, 2)
    bad_input = [_job(archive_id, cases[0], {}), {**_job(archive_id, cases[1], 1), "inputs": {}}]
    refused = client.post(
        "/api/v1/algorithms/echo/jobs/batch", json={"jobs": bad_input}, headers=user.headers
    )
    assert refused.status_code == 400
    assert f"job 1 (case {cases[1]})" in refused.json()["message"]
    _, elsewhere = _cases(client, other, 1)
    foreign_case = [_job(archive_id, cases[0], {}), _job(archive_id, elsewhere[0], {})]
    missing = client.post(
        "/api/v1/algorithms/echo/jobs/batch", json={"jobs": foreign_case}, headers=user.headers
    )
    assert missing.status_code == 404
    not_theirs = client.post(
        "/api/v1/algorithms/echo/jobs/batch",
        json={"jobs": [_job(archive_id, cases[0], {})]},
        headers=other.headers,
    )
    assert not_theirs.status_code == 404
    empty = client.post(
        "/api/v1/algorithms/echo/jobs/batch", json={"jobs": []}, headers=user.headers
    )
    assert empty.status_code == 422
    assert _counts(database_url) == (0, 0)
