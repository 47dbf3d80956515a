"""A job's outputs and its end are recorded together: all of them with its success, or none
of them with its failure."""

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

# `count` must be a number: when asked, it writes a string there, after a good `first`.
WRITER = """
import json, pathlib
inputs = json.loads(pathlib.Path("/input/inputs.json").read_text())
payload = {i["interface"]: i["value"] for i in inputs["inputs"]}["payload"]
pathlib.Path("/output/first.json").write_text(json.dumps({"n": payload["n"]}))
count = "many" if payload.get("break") else payload["n"] * 10
pathlib.Path("/output/count.json").write_text(json.dumps(count))
"""
SPEC = {
    "kind": "package",
    "entrypoint": "",
    "inputs": [{"interface": "payload", "kind": "json"}],
    "outputs": [
        {"interface": "first", "kind": "json"},
        {"interface": "count", "kind": "number"},
    ],
    "resources": {"memory_mb": 256, "time_limit_s": 60},
}


def _values(client: TestClient, user: Account, archive_id: str, case_id: str) -> dict:  # type: ignore[type-arg]
    case = client.get(f"/api/v1/archives/{archive_id}/cases/{case_id}", headers=user.headers)
    assert case.status_code == 200, case.text
    return {v["interface"]: v["value"] for v in case.json()["values"]}


def test_unusable_outputs_leave_nothing_behind(
    client: TestClient, make_user, start_worker: Callable[..., Worker]
) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    user: Account = make_user("dev")
    assert (
        client.post(
            "/api/v1/algorithms", json={"slug": "writer", "title": "Writer"}, headers=user.headers
        ).status_code
        == 201
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("main.py", WRITER)
    version = client.post(
        "/api/v1/algorithms/writer/versions",
        data={"spec": json.dumps(SPEC)},
        files={"file": ("writer.zip", buffer.getvalue())},
        headers=user.headers,
    )
    assert version.status_code == 201, version.text
    archive = client.post("/api/v1/archives", json={"name": "W"}, headers=user.headers).json()
    start_worker()

    def run(payload: dict) -> tuple[dict, dict]:  # type: ignore[type-arg]
        case = client.post(
            f"/api/v1/archives/{archive['id']}/cases",
            json={"title": f"case {payload['n']}"},
            headers=user.headers,
        ).json()
        created = client.post(
            "/api/v1/algorithms/writer/jobs",
            json={
                "archive_id": archive["id"],
                "case_id": case["id"],
                "inputs": {"payload": {"value": payload}},
            },
            headers=user.headers,
        )
        assert created.status_code == 202, created.text
        job = wait_for_job(client, user, created.json()["id"], timeout=120)
        return job, _values(client, user, archive["id"], case["id"])

    good, values = run({"n": 4})
    assert good["state"] == "succeeded", good
    assert values["writer.first"]["value"] == {"n": 4}
    assert values["writer.count"]["value"] == 40
    assert set(good["outputs"]) == {"first", "count"}

    bad, values = run({"n": 5, "break": True})
    assert bad["state"] == "failed", bad
    assert "count.json must hold a number" in bad["message"], bad
    # `first` was good and stored before `count` was found unusable: it is gone with it.
    assert "writer.first" not in values and "writer.count" not in values, values
    assert not bad["outputs"], bad
