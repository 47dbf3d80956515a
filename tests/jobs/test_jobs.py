"""Jobs end to end: real workers, the embedded broker and Redis, faults and triggers."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.conftest import Account
from tests.dicom.helpers import enhanced
from tests.jobs.conftest import CaseWithSeries, Worker, stow, wait_for_job
from voxelhub.algorithms import service
from voxelhub.algorithms.models import Algorithm
from voxelhub.algorithms.schemas import InputRef
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.jobs.models import Job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("builtins_registered")]


def _start(
    client: TestClient, account: Account, slug: str, case: CaseWithSeries, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/algorithms/{slug}/jobs",
        json={"archive_id": case.archive_id, "case_id": case.case_id, **extra},
        headers=account.headers,
    )
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_builtin_job_runs_and_stores_its_outputs(
    client: TestClient, make_user, case_with_series, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user, interface="image")
    start_worker()
    job = wait_for_job(client, user, _start(client, user, "series-statistics", case)["id"])
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 1
    assert job["resources"]["duration_s"] >= 0
    values = client.get(
        f"/api/v1/archives/{case.archive_id}/cases/{case.case_id}", headers=user.headers
    ).json()["values"]
    stats = {v["interface"]: v for v in values}["series-statistics.statistics"]
    assert stats["kind"] == "json"


def test_segmentation_is_written_back_as_dicom_seg(
    client: TestClient, make_user, case_with_series, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user, slices=8, interface="ct")
    start_worker()
    job = wait_for_job(
        client, user, _start(client, user, "threshold-segmentation", case)["id"], timeout=180
    )
    assert job["state"] == "succeeded", job
    seg_uids = job["outputs"]["segmentation"]["series_instance_uids"]
    series = client.get(
        f"/dicom-web/archives/{case.archive_id}/studies/{case.study_uid}/series",
        headers=user.headers,
    ).json()
    modalities = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in series}
    assert modalities[seg_uids[0]] == "SEG"
    assert job["outputs"]["measurements"]["kind"] == "json"


def test_invalid_inputs_are_refused_before_a_job_exists(
    client: TestClient, make_user, case_with_series, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    other: Account = make_user("other")
    case = case_with_series(user, interface="ct")  # the algorithm wants "image"
    wrong = client.post(
        "/api/v1/algorithms/series-statistics/jobs",
        json={"archive_id": case.archive_id, "case_id": case.case_id},
        headers=user.headers,
    )
    assert wrong.status_code == 400 and "has no value 'image'" in wrong.json()["message"]
    kind = client.post(
        "/api/v1/algorithms/echo/jobs",
        json={
            "archive_id": case.archive_id,
            "case_id": case.case_id,
            "inputs": {"payload": {"from_case": "ct"}},
        },
        headers=user.headers,
    )
    assert kind.status_code == 400 and "takes a json" in kind.json()["message"]
    unknown = client.post(
        "/api/v1/algorithms/echo/jobs",
        json={
            "archive_id": case.archive_id,
            "case_id": case.case_id,
            "inputs": {"nope": {"value": 1}},
        },
        headers=user.headers,
    )
    assert unknown.status_code == 400
    not_theirs = client.post(
        "/api/v1/algorithms/echo/jobs",
        json={
            "archive_id": case.archive_id,
            "case_id": case.case_id,
            "inputs": {"payload": {"value": {}}},
        },
        headers=other.headers,
    )
    assert not_theirs.status_code == 404
    with session_scope(database_url) as db:
        assert db.scalar(select(func.count()).select_from(Job)) == 0


def test_a_job_never_sent_is_sent_by_the_reconciler(
    client: TestClient,
    make_user,
    case_with_series,
    database_url: str,
    start_worker: Callable[..., Worker],
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user)

    def died_before_sending(job_id: uuid.UUID, queue: str, priority: int) -> None:
        raise ConnectionError("the API process died before it could send the message")

    principal = Principal(user_id=user.id, username=user.username, is_admin=False, via="token")
    with session_scope(database_url) as db:
        algorithm = db.scalar(select(Algorithm).where(Algorithm.slug == "echo"))
        assert algorithm is not None
        job = service.start_job(
            db,
            principal,
            algorithm,
            archive_id=uuid.UUID(case.archive_id),
            case_id=uuid.UUID(case.case_id),
            inputs={"payload": InputRef(value={"hello": 1})},
            send=died_before_sending,
        )
        job_id = str(job.id)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()["state"] == "pending"
    start_worker()
    assert wait_for_job(client, user, job_id, timeout=120)["state"] == "succeeded"


def test_cancelling_a_queued_job(
    client: TestClient, make_user, case_with_series, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user)
    job = _start(client, user, "echo", case, inputs={"payload": {"value": {"a": 1}}})
    cancelled = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers).json()
    assert cancelled["state"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=user.headers)
    assert again.status_code == 409
    start_worker()
    time.sleep(3)
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=user.headers).json()["state"] == (
        "cancelled"
    )


def test_trigger_runs_the_algorithm_once_per_new_series(
    client: TestClient, make_user, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    archive, _ = _statistics_trigger(client, user, "Triggered", min_instances=3)
    start_worker()
    small = ct_phantom(slices=2, size=16)
    big = ct_phantom(slices=4, size=16)
    stow(client, user, archive["id"], small)
    stow(client, user, archive["id"], big)
    jobs = _jobs_once_ended(client, user)
    assert len(jobs) == 1, "only the series with at least 3 slices matches"
    assert jobs[0]["state"] == "succeeded"
    stow(client, user, archive["id"], big)  # the same series again: no second job
    time.sleep(8)
    assert len(client.get("/api/v1/jobs", headers=user.headers).json()) == 1


def test_a_trigger_counts_the_frames_of_an_enhanced_image_as_images(
    client: TestClient, make_user, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    archive, trigger = _statistics_trigger(client, user, "Frames", min_images=4)
    assert trigger["rule"]["min_images"] == 4
    start_worker()
    image = enhanced(ct_phantom(slices=6, size=16))  # one instance of 6 frames
    stow(client, user, archive["id"], ct_phantom(slices=3, size=16))  # 3 images
    stow(client, user, archive["id"], [image])
    jobs = _jobs_once_ended(client, user)
    assert len(jobs) == 1, "only the Enhanced image of 6 frames has 4 images"
    assert jobs[0]["state"] == "succeeded", jobs[0]
    time.sleep(6)
    assert len(client.get("/api/v1/jobs", headers=user.headers).json()) == 1


def _statistics_trigger(
    client: TestClient, user: Account, archive_name: str, **rule: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new archive, and a trigger there running series-statistics on CT series by `rule`."""
    archive = client.post(
        "/api/v1/archives", json={"name": archive_name}, headers=user.headers
    ).json()
    made = client.post(
        f"/api/v1/archives/{archive['id']}/triggers",
        json={
            "algorithm": "series-statistics",
            "input_interface": "image",
            "modality": "CT",
            **rule,
        },
        headers=user.headers,
    )
    assert made.status_code == 201, made.text
    return archive, made.json()


def _jobs_once_ended(client: TestClient, user: Account) -> list[dict[str, Any]]:
    """The user's jobs once there are some and all have ended (or after 90 s)."""
    deadline = time.monotonic() + 90
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = client.get("/api/v1/jobs", headers=user.headers).json()
        if jobs and all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs):
            break
        time.sleep(0.5)
    return jobs


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_asynchronous_job_calls_its_webhook(
    client: TestClient, make_user, case_with_series, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received.clear()
    try:
        start_worker()
        job = _start(
            client,
            user,
            "echo",
            case,
            inputs={"payload": {"value": [1, 2]}},
            webhook=f"http://127.0.0.1:{server.server_port}/done",
        )
        wait_for_job(client, user, job["id"])
        deadline = time.monotonic() + 20
        while not _Hook.received and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _Hook.received and _Hook.received[0]["id"] == job["id"]
        assert _Hook.received[0]["state"] == "succeeded"
    finally:
        server.shutdown()


def test_real_time_invoke(client: TestClient, make_user, case_with_series) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    answer = client.post(
        "/api/v1/algorithms/echo/invoke",
        json={"inputs": {"payload": {"x": [1, 2, 3]}}},
        headers=user.headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"]["payload"] == {"x": [1, 2, 3]}
    assert "total;dur=" in answer.headers["server-timing"]
    case = case_with_series(user)
    stats = client.post(
        "/api/v1/algorithms/series-statistics/invoke",
        json={
            "inputs": {
                "image": {"archive_id": case.archive_id, "series_instance_uid": case.series_uid}
            }
        },
        headers=user.headers,
    )
    assert stats.status_code == 200, stats.text
    seg = client.post(
        "/api/v1/algorithms/threshold-segmentation/invoke",
        json={"inputs": {}},
        headers=user.headers,
    )
    assert seg.status_code == 400 and "start a job" in seg.json()["message"]


def test_a_worker_killed_mid_job_is_replaced_and_nothing_is_duplicated(
    client: TestClient,
    make_user,
    case_with_series,
    start_worker: Callable[..., Worker],
    database_url: str,
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    case = case_with_series(user, slices=48, interface="ct")
    first = start_worker()
    job_id = _start(client, user, "threshold-segmentation", case)["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()["state"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    first.kill()
    start_worker()
    job = wait_for_job(client, user, job_id, timeout=180)
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2
    series = client.get(
        f"/dicom-web/archives/{case.archive_id}/studies/{case.study_uid}/series",
        headers=user.headers,
    ).json()
    segs = [s for s in series if s["00080060"]["Value"] == ["SEG"]]
    assert len(segs) == 1, "the killed attempt must leave no output behind"


def test_voxelhub_run_waits_for_the_job(
    live_server: str,
    client: TestClient,
    make_user,
    case_with_series,
    start_worker: Callable[..., Worker],
) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from voxelhub.cli import app

    user: Account = make_user("rad")
    case = case_with_series(user)
    start_worker()
    args = [
        "run",
        "echo",
        "--archive",
        case.archive_id,
        "--case",
        case.case_id,
        "--input",
        'payload:={"hello": "world"}',
        "--wait",
        "--server",
        live_server,
        "--token",
        user.token,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    assert "echo.payload" in result.output
    bad = CliRunner().invoke(
        app,
        [
            "run",
            "echo",
            "--archive",
            case.archive_id,
            "--case",
            case.case_id,
            "--input",
            "payload:={oops",
            "--server",
            live_server,
            "--token",
            user.token,
        ],
    )
    assert bad.exit_code == 2 and "must be JSON" in bad.output


def test_a_worker_with_a_pool_of_processes_runs_jobs_cleanly(
    client: TestClient, make_user, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    """--concurrency 2 forks pool processes: none may share the parent's connections."""
    user: Account = make_user("rad")
    archive = client.post("/api/v1/archives", json={"name": "Pool"}, headers=user.headers).json()
    worker = start_worker(args=("--concurrency", "2"))
    ids = []
    for n in range(6):
        case = client.post(
            f"/api/v1/archives/{archive['id']}/cases", json={"title": f"c{n}"}, headers=user.headers
        ).json()
        body = {
            "archive_id": archive["id"],
            "case_id": case["id"],
            "inputs": {"payload": {"value": {"n": n}}},
        }
        created = client.post("/api/v1/algorithms/echo/jobs", json=body, headers=user.headers)
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    jobs = [wait_for_job(client, user, job_id) for job_id in ids]
    assert [(j["state"], j["attempts"]) for j in jobs] == [("succeeded", 1)] * 6
    log = worker.log.read_text()
    assert "ERROR" not in log and "Traceback" not in log, log[-4000:]
