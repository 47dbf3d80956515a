"""Per-user and per-algorithm limits on running jobs, under claims by several real workers.

Three worker processes with a pool of two each (six jobs could run at once) take jobs of
three users. The algorithm may run three jobs at a time, a user two. Each run writes the
wall-clock span of its own sleep, measured inside the sandbox, which lies within the time
its job was claimed: if more runs' spans overlap than a limit allows, more jobs were
claimed at once than it allows. The check counts overlaps; nothing is timed.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Account
from tests.jobs.conftest import Worker, wait_for_job

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("builtins_registered")]

ALGORITHM_LIMIT = 3
USER_LIMIT = 2
USERS = ("alice", "bob", "carol")
JOBS_PER_USER = 4

NAPPER = """
import json, pathlib, time
started = time.time()
time.sleep(0.4)
span = {"start": started, "end": time.time()}
pathlib.Path("/output/span.json").write_text(json.dumps(span))
"""
SPEC = {
    "kind": "package",
    "entrypoint": "",
    "inputs": [{"interface": "payload", "kind": "json"}],
    "outputs": [{"interface": "span", "kind": "json"}],
    "resources": {"memory_mb": 256, "time_limit_s": 60},
}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans that overlap at one moment (touching ends do not)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([(0, 1), (1, 2), (2, 3)], 1),
        ([(0, 3), (1, 2), (1.5, 4)], 3),
        ([(0, 2), (1, 3), (2.5, 4)], 2),
    ],
)
def test_most_at_once_counts_overlaps(spans: list[tuple[float, float]], expected: int) -> None:
    assert most_at_once(spans) == expected


def _napper(client: TestClient, owner: Account, users: list[Account]) -> None:
    made = client.post(
        "/api/v1/algorithms",
        json={"slug": "napper", "title": "Napper", "max_concurrent_jobs": ALGORITHM_LIMIT},
        headers=owner.headers,
    )
    assert made.status_code == 201, made.text
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("main.py", NAPPER)
    version = client.post(
        "/api/v1/algorithms/napper/versions",
        data={"spec": json.dumps(SPEC)},
        files={"file": ("napper.zip", buffer.getvalue())},
        headers=owner.headers,
    )
    assert version.status_code == 201, version.text
    for user in users:
        granted = client.put(
            f"/api/v1/algorithms/napper/members/{user.username}",
            params={"role": "user"},
            headers=owner.headers,
        )
        assert granted.status_code == 200, granted.text


def _start_jobs(client: TestClient, user: Account) -> list[tuple[str, str, str]]:
    """JOBS_PER_USER jobs of the user, each on a case of its own: (archive, case, job)."""
    archive = client.post(
        "/api/v1/archives", json={"name": f"Naps of {user.username}"}, headers=user.headers
    ).json()
    started = []
    for n in range(JOBS_PER_USER):
        case = client.post(
            f"/api/v1/archives/{archive['id']}/cases", json={"title": f"c{n}"}, headers=user.headers
        ).json()
        response = client.post(
            "/api/v1/algorithms/napper/jobs",
            json={
                "archive_id": archive["id"],
                "case_id": case["id"],
                "inputs": {"payload": {"value": {"n": n}}},
            },
            headers=user.headers,
        )
        assert response.status_code == 202, response.text
        started.append((archive["id"], case["id"], response.json()["id"]))
    return started


def _span(client: TestClient, user: Account, archive_id: str, case_id: str) -> tuple[float, float]:
    case = client.get(f"/api/v1/archives/{archive_id}/cases/{case_id}", headers=user.headers)
    value = next(v for v in case.json()["values"] if v["interface"] == "napper.span")
    return float(value["value"]["value"]["start"]), float(value["value"]["value"]["end"])


def test_limits_hold_under_concurrent_claims_by_several_workers(
    client: TestClient, make_user, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    owner: Account = make_user("dev")
    users: list[Account] = [make_user(name) for name in USERS]
    _napper(client, owner, users)
    limit = {"VOXELHUB_MAX_JOBS_PER_USER": str(USER_LIMIT)}
    workers = [start_worker(env=limit, args=("--concurrency", "2")) for _ in range(3)]
    started = {user.username: _start_jobs(client, user) for user in users}

    spans: dict[str, list[tuple[float, float]]] = {}
    for user in users:
        for archive_id, case_id, job_id in started[user.username]:
            job = wait_for_job(client, user, job_id, timeout=240)
            # Claimed once, run once: a refused claim leaves no attempt behind.
            assert (job["state"], job["attempts"]) == ("succeeded", 1), job
            spans.setdefault(user.username, []).append(_span(client, user, archive_id, case_id))

    everyone = [span for user_spans in spans.values() for span in user_spans]
    assert len(everyone) == len(USERS) * JOBS_PER_USER
    assert most_at_once(everyone) <= ALGORITHM_LIMIT, sorted(everyone)
    for username, user_spans in spans.items():
        assert most_at_once(user_spans) <= USER_LIMIT, (username, sorted(user_spans))
    for worker in workers:
        log = worker.log.read_text()
        assert "Traceback" not in log, log[-4000:]
