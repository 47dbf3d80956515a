"""Jobs sent together run by real workers, on the embedded broker and on Redis: claimed
group by group, re-run once each when their worker is killed mid-group, cancellable one by
one while their group runs. (The same, run in this process: test_groups.py.)"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SECRET, Account
from tests.jobs.conftest import CaseWithSeries, Worker, wait_for_job
from tests.jobs.test_groups import _jobs
from voxelhub.archives import values_service
from voxelhub.archives.models import Case, CaseValue
from voxelhub.core.db import session_scope
from voxelhub.core.settings import Settings, load_settings
from voxelhub.jobs import tasks

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("builtins_registered")]

# Real workers, on the embedded broker and on Redis.

TRANSPORTS: dict[str, Callable[[], str | None]] = {
    "embedded": lambda: None,
    "redis": lambda: f"redis://127.0.0.1:6379/{random.randint(1, 15)}",
}


@pytest.fixture(params=sorted(TRANSPORTS))
def broker_url(request: pytest.FixtureRequest) -> str | None:
    return TRANSPORTS[request.param]()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, broker_url: str | None) -> Settings:
    return load_settings(
        home=tmp_path / "home", database_url=database_url, secret_key=SECRET, broker_url=broker_url
    )


def _worker_env(broker_url: str | None) -> dict[str, str]:
    return {"VOXELHUB_BROKER_URL": broker_url} if broker_url else {}


def _batch(
    client: TestClient,
    user: Account,
    slug: str,
    cases: list[tuple[str, str]],
    inputs: dict[str, Any],
) -> list[str]:
    answer = client.post(
        f"/api/v1/algorithms/{slug}/jobs/batch",
        json={
            "jobs": [
                {"archive_id": archive_id, "case_id": case_id, "inputs": inputs}
                for archive_id, case_id in cases
            ]
        },
        headers=user.headers,
    )
    assert answer.status_code == 202, answer.text
    return [job["id"] for job in answer.json()]


def test_workers_run_a_batch_in_groups(
    client: TestClient,
    make_user: Callable[..., Account],
    start_worker: Callable[..., Worker],
    broker_url: str | None,
    database_url: str,
) -> None:
    user: Account = make_user("rad")
    archive = client.post("/api/v1/archives", json={"name": "A"}, headers=user.headers).json()
    cases = [
        (
            archive["id"],
            client.post(
                f"/api/v1/archives/{archive['id']}/cases", json={"title": f"c{i}"},
                headers=user.headers,
            ).json()["id"],
        )
        for i in range(10)
    ]  # fmt: skip
    start_worker(env=_worker_env(broker_url))
    ids = _batch(client, user, "echo", cases, {"payload": {"value": {"hello": 1}}})
    for job_id in ids:
        assert wait_for_job(client, user, job_id)["state"] == "succeeded"
    jobs = _jobs(database_url, [uuid.UUID(job_id) for job_id in ids])
    claims = Counter(job.started_at for job in jobs)
    # Claimed group by group (one claim: one timestamp), never more than a group at once.
    assert max(claims.values()) > 1
    assert max(claims.values()) <= tasks.GROUP_SIZE


def _running_together(database_url: str, ids: list[str], timeout: float = 60) -> None:
    """Until the jobs run, claimed together (one worker, one claim)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = _jobs(database_url, [uuid.UUID(job_id) for job_id in ids])
        if all(job.state == "running" for job in jobs):
            assert len({(job.worker, job.started_at) for job in jobs}) == 1
            return
        assert time.monotonic() < deadline, f"the group never ran: {[j.state for j in jobs]}"
        time.sleep(0.02)


def _cases_of_one_series(
    client: TestClient, user: Account, case_with_series: Callable[..., CaseWithSeries], count: int
) -> tuple[CaseWithSeries, list[tuple[str, str]]]:
    """`count` cases of one archive whose `ct` is the same series (48 slices: a run of
    threshold-segmentation takes a while)."""
    made = case_with_series(user, slices=48, interface="ct")
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    cases = [(made.archive_id, made.case_id)]
    with session_scope(runtime.database_url) as db:
        source = db.scalar(
            select(CaseValue).where(
                CaseValue.case_id == uuid.UUID(made.case_id), CaseValue.interface == "ct"
            )
        )
        assert source is not None
        for n in range(count - 1):
            case = Case(archive_id=uuid.UUID(made.archive_id), title=f"more-{n}")
            db.add(case)
            db.flush()
            values_service.set_series(db, runtime.store, case, "ct", dict(source.value))
            cases.append((made.archive_id, str(case.id)))
    return made, cases


def _segs(client: TestClient, user: Account, made: CaseWithSeries) -> int:
    series = client.get(
        f"/dicom-web/archives/{made.archive_id}/studies/{made.study_uid}/series",
        headers=user.headers,
    ).json()
    return len([s for s in series if s["00080060"]["Value"] == ["SEG"]])


def test_a_worker_killed_mid_group_leaves_every_job_to_run_once_more(
    client: TestClient,
    make_user: Callable[..., Account],
    case_with_series: Callable[..., CaseWithSeries],
    start_worker: Callable[..., Worker],
    broker_url: str | None,
    database_url: str,
) -> None:
    user: Account = make_user("rad")
    made, cases = _cases_of_one_series(client, user, case_with_series, 3)
    first = start_worker(env=_worker_env(broker_url))
    ids = _batch(client, user, "threshold-segmentation", cases, {})
    _running_together(database_url, ids)
    first.kill()
    start_worker(env=_worker_env(broker_url))
    for job_id in ids:
        job = wait_for_job(client, user, job_id, timeout=180)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2, job
    assert _segs(client, user, made) == 3, "the killed attempts must leave no output behind"


def test_jobs_of_a_group_can_be_cancelled_before_their_turn(
    client: TestClient,
    make_user: Callable[..., Account],
    case_with_series: Callable[..., CaseWithSeries],
    start_worker: Callable[..., Worker],
    broker_url: str | None,
    database_url: str,
) -> None:
    user: Account = make_user("rad")
    made, cases = _cases_of_one_series(client, user, case_with_series, 3)
    start_worker(env=_worker_env(broker_url))
    ids = _batch(client, user, "threshold-segmentation", cases, {})
    _running_together(database_url, ids)
    for job_id in ids[1:]:
        answer = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=user.headers)
        assert answer.status_code == 200, answer.text
    ended = [wait_for_job(client, user, job_id) for job_id in ids]
    assert ended[0]["state"] == "succeeded", ended[0]
    for job in ended[1:]:
        assert job["state"] == "cancelled", job
        assert job["outputs"] == {}, job
    assert _segs(client, user, made) == 1
