"""Fixtures of the job tests: real `voxelhub worker` processes on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SECRET, Account, stow
from voxelhub.algorithms.catalog import sync_builtins
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.jobs.models import WorkerHeartbeat

STALE_SECONDS = 6


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def worker_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VOXELHUB_")}
    return {
        **clean,
        "VOXELHUB_HOME": str(tmp_path / "home"),
        "VOXELHUB_DATABASE_URL": database_url,
        "VOXELHUB_SECRET_KEY": SECRET,
        "VOXELHUB_WORKER_STALE_SECONDS": str(STALE_SECONDS),
    }


@pytest.fixture
def start_worker(
    worker_env: dict[str, str], database_url: str, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(
        *, env: dict[str, str] | None = None, wait: bool = True, args: tuple[str, ...] = ()
    ) -> Worker:
        log = tmp_path / f"worker-{len(workers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "voxelhub.cli", "worker", "--queues", "cpu,gpu", *args],
                env={**worker_env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        workers.append(worker)
        if wait:
            _wait_for_heartbeat(database_url, worker)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()


def _wait_for_heartbeat(database_url: str, worker: Worker) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited:\n{worker.log.read_text()}")
        with session_scope(database_url) as db:
            beats = list(db.scalars(select(WorkerHeartbeat.pid)))
        if worker.proc.pid in beats:
            return
        time.sleep(0.2)
    pytest.fail(f"the worker did not start:\n{worker.log.read_text()}")


@pytest.fixture
def builtins_registered(database_url: str, admin: Account) -> None:
    principal = Principal(user_id=admin.id, username="admin", is_admin=True, via="system")
    with session_scope(database_url) as db:
        sync_builtins(db, principal)


@dataclass(frozen=True)
class CaseWithSeries:
    archive_id: str
    case_id: str
    study_uid: str
    series_uid: str


@pytest.fixture
def case_with_series(client: TestClient, make_user) -> Callable[..., CaseWithSeries]:  # type: ignore[no-untyped-def]
    def make(account: Account, *, slices: int = 4, interface: str = "ct") -> CaseWithSeries:
        archive = client.post(
            "/api/v1/archives", json={"name": f"A-{account.username}"}, headers=account.headers
        ).json()
        series = ct_phantom(slices=slices, size=32)
        stow(client, account, archive["id"], series)
        case = client.post(
            f"/api/v1/archives/{archive['id']}/cases", json={"title": "c1"}, headers=account.headers
        ).json()
        ds = series[0]
        value = {
            "kind": "dicom_series",
            "study_instance_uid": ds.StudyInstanceUID,
            "series_instance_uid": ds.SeriesInstanceUID,
            "modality": "CT",
            "number_of_instances": slices,
        }
        from voxelhub.archives import values_service
        from voxelhub.archives.models import Case

        with session_scope(client.app.state.runtime.database_url) as db:  # type: ignore[attr-defined]
            row = db.get(Case, __import__("uuid").UUID(case["id"]))
            assert row is not None
            values_service.set_series(db, client.app.state.runtime.store, row, interface, value)  # type: ignore[attr-defined]
        return CaseWithSeries(archive["id"], case["id"], ds.StudyInstanceUID, ds.SeriesInstanceUID)

    return make


def wait_for_job(client: TestClient, account: Account, job_id: str, timeout: float = 90) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    job: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=account.headers).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")
