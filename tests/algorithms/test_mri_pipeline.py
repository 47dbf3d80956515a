"""The two-stage reconstruction pipeline with a real worker: raw k-space uploaded →
`mri-preprocess` (trigger on the raw value) → `mri-recon-grappa` (trigger on the preprocessed
value) → an MR series in the store, linked to its raw data and delivered to the outbox; then
the stored raw value reconstructed again with other settings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Account
from tests.ingest.helpers import upload
from tests.jobs.conftest import (  # noqa: F401 - fixtures
    Worker,
    builtins_registered,
    start_worker,
    worker_env,
)
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.phantom import PhantomSpec, simulate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("builtins_registered")]


def _trigger(client: TestClient, user: Account, archive_id: str, body: dict[str, str]) -> None:
    response = client.post(
        f"/api/v1/archives/{archive_id}/triggers", json=body, headers=user.headers
    )
    assert response.status_code == 201, response.text


def _jobs_done(client: TestClient, user: Account, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 180
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = client.get("/api/v1/jobs", headers=user.headers).json()
        if len(jobs) >= count and all(j["state"] in ("succeeded", "failed") for j in jobs):
            return jobs
        time.sleep(0.5)
    pytest.fail(f"jobs did not finish: {jobs}")


def _algorithm_of(job: dict[str, Any]) -> str:
    return str(job.get("algorithm") or job.get("algorithm_slug") or "")


def test_drop_to_series_in_two_stages(  # type: ignore[no-untyped-def]
    client: TestClient,
    make_user,
    start_worker: Callable[..., Worker],  # noqa: F811
    tmp_path: Path,
) -> None:
    user: Account = make_user("physicist")
    archive = client.post("/api/v1/archives", json={"name": "MRI"}, headers=user.headers).json()
    _trigger(
        client,
        user,
        archive["id"],
        {"algorithm": "mri-preprocess", "input_interface": "kspace", "value_interface": "kspace"},
    )
    _trigger(
        client,
        user,
        archive["id"],
        {
            "algorithm": "mri-recon-grappa",
            "input_interface": "kspace",
            "value_interface": "mri-preprocess.kspace-preprocessed",
        },
    )
    acquisition = simulate(
        PhantomSpec(readout=64, phase_encode=48, coils=4, slices=3, acceleration=2, acs_lines=12),
        seed=6,
    )
    raw = tmp_path / "knee_scan.h5"
    write_fastmri(raw, acquisition.kspace)
    outbox = tmp_path / "outbox"
    start_worker(env={"VOXELHUB_RECON_OUTBOX": str(outbox)})
    report = upload(client, user, uuid.UUID(archive["id"]), {"knee_scan.h5": raw.read_bytes()})
    assert report["files"][0]["outcome"] == "stored", report

    jobs = _jobs_done(client, user, 2)
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
    recon = next(j for j in jobs if "images" in (j.get("outputs") or {}))
    assert recon["queue"] == "gpu"  # the worker serves gpu, so the GPU queue is used
    series_uid = recon["outputs"]["images"]["series_instance_uids"][0]
    found = client.get(
        "/dicom-web/series",
        params={"SeriesInstanceUID": series_uid, "includefield": "all"},
        headers=user.headers,
    ).json()
    assert found and found[0]["00080060"]["Value"] == ["MR"]
    assert found[0]["00201209"]["Value"] == [3]
    instances = client.get(
        f"/dicom-web/studies/{found[0]['0020000D']['Value'][0]}/series/{series_uid}/metadata",
        headers=user.headers,
    ).json()
    comments = instances[0]["00204000"]["Value"][0]
    assert comments.startswith("raw data: knee_scan.h5 sha256:")
    assert sorted(p.name for p in outbox.iterdir()) == [series_uid]
    assert len(list((outbox / series_uid).iterdir())) == 3

    # The stored raw value, reconstructed again with other settings.
    again = client.post(
        "/api/v1/algorithms/mri-recon/jobs",
        json={
            "archive_id": archive["id"],
            "case_id": recon["case_id"],
            "inputs": {
                "kspace": {"from_case": "kspace"},
                "parameters": {"value": {"method": "grappa", "kernel": [3, 2]}},
            },
        },
        headers=user.headers,
    )
    assert again.status_code == 202, again.text
    jobs = _jobs_done(client, user, 3)
    rerun = next(j for j in jobs if j["id"] == again.json()["id"])
    assert rerun["state"] == "succeeded", rerun
    settings = client.get(f"/api/v1/jobs/{rerun['id']}", headers=user.headers).json()
    assert settings["outputs"]["settings"]["kind"] == "json"
