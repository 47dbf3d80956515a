"""Starting many jobs in one request: all of them in one transaction, or none."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
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


def _start_batch(client: TestClient, user: Account, jobs: list[dict[str, Any]]) -> Any:
    """The batch route's answer to `user` asking for `jobs`."""
    return client.post(
        "/api/v1/algorithms/echo/jobs/batch", json={"jobs": jobs}, headers=user.headers
    )


def _accepted_batch(
    client: TestClient, user: Account, count: int, job: Callable[[str, str, int], dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """`count` new cases of `user` and the jobs the batch route accepted for them, the
    request of each made by `job(archive_id, case_id, index)`."""
    archive_id, cases = _cases(client, user, count)
    answer = _start_batch(client, user, [job(archive_id, c, i) for i, c in enumerate(cases)])
    assert answer.status_code == 202, answer.text
    return cases, answer.json()


def _counts(database_url: str) -> tuple[int, int]:
    with session_scope(database_url) as db:
        jobs = db.scalar(select(func.count()).select_from(Job))
        audited = db.scalar(select(func.count()).where(AuditEvent.action == "job.create"))
    return int(jobs or 0), int(audited or 0)


def test_a_batch_starts_one_job_per_case_with_its_own_inputs(
    client: TestClient, make_user, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    cases, jobs = _accepted_batch(client, user, 3, lambda a, c, i: _job(a, c, {"n": i}))
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


def test_a_batch_stores_each_job_as_answered_with_one_audit_event_each(
    client: TestClient, make_user, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    cases, jobs = _accepted_batch(
        client, user, 2, lambda a, c, i: {**_job(a, c, [i]), "priority": 7 + i}
    )
    answered = {job["id"]: job for job in jobs}
    with session_scope(database_url) as db:
        rows = list(db.scalars(select(Job).where(Job.created_by == user.id)))
        events = list(db.scalars(select(AuditEvent).where(AuditEvent.action == "job.create")))
    assert {str(row.id) for row in rows} == set(answered)
    for row in rows:
        job = answered[str(row.id)]
        assert (row.case_id, row.priority, row.attempts, row.max_attempts) == (
            uuid.UUID(job["case_id"]),
            job["priority"],
            0,
            3,
        )
        assert row.inputs == job["inputs"] and row.outputs == {} and row.log == ""
        assert row.created_at == datetime.fromisoformat(job["created_at"])
        assert not row.cancel_requested and row.worker is None
    assert sorted((e.object_type, e.object_id, e.user_id, e.username) for e in events) == sorted(
        ("job", job_id, user.id, "rad") for job_id in answered
    )
    assert sorted(e.detail["case"] for e in events) == sorted(cases)
    assert {e.detail["algorithm"] for e in events} == {"echo"}
