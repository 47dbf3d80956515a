"""`voxelhub serve` as a user runs it: a real process tree, killed and restarted."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import SECRET
from tests.fixtures.seaweed import SeaweedS3
from voxelhub.core.pg import EmbeddedPostgres
from voxelhub.core.settings import Settings
from voxelhub.serve import embedded_queues, gpu_visible

pytestmark = pytest.mark.slow

PASSWORD = "demo-admin-password"
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def no_leftover_servers() -> Iterator[None]:
    """Whatever a test leaves running (a failed assertion) is killed with it."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class Serve:
    """One `voxelhub serve` child process."""

    def __init__(self, home: Path, env: dict[str, str], *args: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"serve-{self.port}.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("VOXELHUB_")}
        self.dimse_port = _free_port()
        command = [
            sys.executable,
            "-m",
            "voxelhub.cli",
            "serve",
            "--home",
            str(home),
            "--port",
            str(self.port),
            "--dimse-port",
            str(self.dimse_port),
            *args,
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                env={**clean, "VOXELHUB_ADMIN_PASSWORD": PASSWORD, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _started.append(self.proc)

    def wait_healthy(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                body = self.get("/healthz")
                if body["status"] == "ok":
                    return body
                last = body
            except (OSError, urllib.error.URLError) as err:
                last = err
            time.sleep(0.3)
        pytest.fail(f"serve not healthy in {START_TIMEOUT_S}s ({last}):\n{self.log.read_text()}")

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str, token: str | None = None) -> Any:
        return self.request("GET", path, token=token)

    def admin_token(self) -> str:
        """A token made the way a user would: log in, then create one."""
        login = urllib.request.Request(
            self.base + "/api/v1/auth/login",
            method="POST",
            data=json.dumps({"username": "admin", "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(login, timeout=30) as response:
            cookie = response.headers["set-cookie"].split(";")[0]
            csrf = json.loads(response.read())["csrf_token"]
        create = urllib.request.Request(
            self.base + "/api/v1/tokens",
            method="POST",
            data=b'{"name": "test"}',
            headers={"Content-Type": "application/json", "Cookie": cookie, "X-CSRF-Token": csrf},
        )
        with urllib.request.urlopen(create, timeout=30) as response:
            return str(json.loads(response.read())["token"])

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def home() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vxh-serve-"))
    yield root / "home"
    pg = EmbeddedPostgres.for_home(root / "home")
    pg.stop(mode="immediate")
    shutil.rmtree(root, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    out = found.stdout
    return [int(p) for p in out.split()]


def test_embedded_serve_survives_sigkill_and_stops_cleanly(home: Path) -> None:
    first = Serve(home, {}, "--demo")
    health = first.wait_healthy()
    assert health["parts"]["database"]["embedded"] is True
    assert health["parts"]["workers"]["live"] == 1
    if shutil.which("echoscu"):
        echo = subprocess.run(
            ["echoscu", "-aec", "VOXELHUB", "127.0.0.1", str(first.dimse_port)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert echo.returncode == 0, echo.stderr
    token = first.admin_token()
    archives = first.get("/api/v1/archives", token=token)
    assert [(a["name"], a["case_count"]) for a in archives] == [("Demo", 1), ("Incoming", 0)]
    first.request("POST", "/api/v1/archives", {"name": "committed"}, token=token)
    workers = _children(first.proc.pid)

    # A hard crash: serve killed, then its PostgreSQL too (as after a power loss).
    first.stop(signal.SIGKILL)
    pg = EmbeddedPostgres.for_home(home)
    pid = pg.running_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "workers outlived a killed serve"

    second = Serve(home, {})
    second.wait_healthy()
    names = [a["name"] for a in second.get("/api/v1/archives", token=token)]
    assert names == ["Demo", "Incoming", "committed"]
    assert "created the administrator" not in second.log.read_text()
    assert second.stop(signal.SIGINT) == 0
    assert pg.running_pid() is None, "PostgreSQL still running after Ctrl-C"
    assert "stopped" in second.log.read_text()


def test_second_serve_refused_and_drop_folder_watched(home: Path) -> None:
    from pydicom.filewriter import dcmwrite

    from voxelhub.dicom.synthetic import ct_phantom

    drop = home.parent / "drop"
    first = Serve(home, {"VOXELHUB_DROP_FOLDER": str(drop)})
    first.wait_healthy()
    token = first.admin_token()
    ds = ct_phantom(slices=1, size=32)[0]
    dcmwrite(drop / "from-modality.dcm", ds, enforce_file_format=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not first.get("/dicom-web/studies", token=token):
        time.sleep(0.5)
    studies = first.get("/dicom-web/studies", token=token)
    assert [s["0020000D"]["Value"][0] for s in studies] == [ds.StudyInstanceUID]
    assert (drop / "done").exists() and any((drop / "done").iterdir())
    second = Serve(home, {})
    assert second.proc.wait(timeout=60) == 2
    assert "another `voxelhub serve`" in second.log.read_text()
    assert first.stop(signal.SIGTERM) == 0


def test_raw_kspace_dropped_is_reconstructed_without_further_action(home: Path) -> None:
    """A scanner writes a fastMRI file to the drop folder of a `serve` configured with
    VOXELHUB_RECON_ON_ARRIVAL; the MR series appears in the store, nothing else done."""
    from voxelhub.recon.io_fastmri import write_fastmri
    from voxelhub.recon.phantom import PhantomSpec, simulate

    drop = home.parent / "drop"
    env = {"VOXELHUB_DROP_FOLDER": str(drop), "VOXELHUB_RECON_ON_ARRIVAL": "grappa"}
    serve = Serve(home, env, "--workers", "1")
    serve.wait_healthy()
    token = serve.admin_token()
    spec = PhantomSpec(readout=64, phase_encode=48, coils=4, slices=2, acceleration=2, acs_lines=12)
    staged = home.parent / "knee_scan.h5.part"
    write_fastmri(staged, simulate(spec, seed=3).kspace)
    staged.rename(drop / "knee_scan.h5")  # as a modality finishes a file: renamed when whole
    deadline = time.monotonic() + 180
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not found:
        time.sleep(1)
        found = serve.get("/dicom-web/series?Modality=MR&includefield=all", token=token)
    assert found, f"no MR series in 180 s:\n{serve.log.read_text()[-4000:]}"
    assert found[0]["00201209"]["Value"] == [2]
    jobs = serve.get("/api/v1/jobs", token=token)
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
    recon = next(j for j in jobs if "images" in j["outputs"])
    assert recon["outputs"]["images"]["series_instance_uids"] == [found[0]["0020000E"]["Value"][0]]
    # The embedded worker serves `gpu` only where there is a GPU; else the job takes `cpu`.
    assert recon["queue"] == ("gpu" if gpu_visible() else "cpu"), recon
    # A restart keeps the two triggers, not two more.
    assert serve.stop(signal.SIGTERM) == 0
    again = Serve(home, env, "--workers", "1")
    again.wait_healthy()
    archives = again.get("/api/v1/archives", token=token)
    incoming = next(a for a in archives if a["name"] == "Incoming")
    triggers = again.get(f"/api/v1/archives/{incoming['id']}/triggers", token=token)
    assert len(triggers) == 2, triggers
    assert again.stop(signal.SIGTERM) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_serve_on_external_postgres_and_s3(
    home: Path, database_url: str, seaweed_s3: SeaweedS3
) -> None:
    env = {
        "VOXELHUB_DATABASE_URL": database_url,
        "VOXELHUB_SECRET_KEY": SECRET,
        "VOXELHUB_S3_ENDPOINT": seaweed_s3.endpoint,
        "VOXELHUB_S3_BUCKET": "voxelhub-serve-test",
        "VOXELHUB_S3_ACCESS_KEY": seaweed_s3.access_key,
        "VOXELHUB_S3_SECRET_KEY": seaweed_s3.secret_key,
    }
    serve = Serve(home, env, "--demo")
    health = serve.wait_healthy()
    assert health["parts"]["database"]["embedded"] is False
    assert health["parts"]["objects"]["backend"] == "S3ObjectStore"
    assert not (home / "pg").exists(), "nothing may be embedded with an external database"
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweed_s3.endpoint,
        aws_access_key_id=seaweed_s3.access_key,
        aws_secret_access_key=seaweed_s3.secret_key,
        region_name=seaweed_s3.region,
    )
    listed = s3.list_objects_v2(Bucket="voxelhub-serve-test", Prefix="imagesets/")
    assert listed["KeyCount"] == 32, "the demo CT series should be in S3"
    token = serve.admin_token()
    studies = serve.get("/dicom-web/studies", token=token)
    assert studies[0]["00201208"]["Value"] == [32]
    assert serve.stop() == 0


def test_killed_during_stow_leaves_nothing_visible(home: Path) -> None:
    import threading

    import httpx
    from pydicom.filewriter import dcmwrite

    from voxelhub.dicom.synthetic import ct_phantom

    first = Serve(home, {})
    first.wait_healthy()
    token = first.admin_token()
    archive = first.request("POST", "/api/v1/archives", {"name": "Killed"}, token=token)
    boundary = "killtest"

    def body() -> Iterator[bytes]:
        # More than one indexing batch (64 instances), so objects are written mid-request.
        for ds in ct_phantom(slices=70, size=32):
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield buffer.getvalue() + b"\r\n"
        time.sleep(30)  # the closing boundary never comes: the server dies first
        yield f"--{boundary}--\r\n".encode()

    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{first.base}/dicom-web/archives/{archive['id']}/studies",
                content=body(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                    f"boundary={boundary}",
                },
                timeout=60,
            )

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    objects = home / "objects" / "imagesets"
    deadline = time.monotonic() + 30
    written: list[Path] = []
    while time.monotonic() < deadline and len(written) < 3:
        time.sleep(0.1)
        written = [p for p in objects.rglob("*") if p.is_file()]
    time.sleep(0.5)
    written = [p for p in objects.rglob("*") if p.is_file()]
    assert written, "the server should have stored some instances' objects before the kill"
    first.stop(signal.SIGKILL)

    second = Serve(home, {})
    second.wait_healthy()
    assert second.get("/dicom-web/studies", token=token) == []
    swept = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxelhub.cli",
            "sweep",
            "--home",
            str(home),
            "--grace-minutes",
            "0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"removed {len(written)} " in swept.stdout, swept.stdout + swept.stderr
    assert [p for p in objects.rglob("*") if p.is_file()] == []
    assert second.stop() == 0


def _wait_for(serve: Serve, ready: Any, what: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if serve.proc.poll() is not None:
            pytest.fail(f"serve exited with {serve.proc.returncode}:\n{serve.log.read_text()}")
        health = serve.get("/healthz")
        if ready(health["parts"]["workers"]):
            return health
        time.sleep(0.3)
    pytest.fail(f"{what} not seen in {timeout}s ({health}):\n{serve.log.read_text()}")


def test_two_workers_on_a_fresh_home_and_a_killed_worker_is_restarted(home: Path) -> None:
    serve = Serve(home, {}, "--workers", "2")
    serve.wait_healthy()
    # Both workers of a fresh home come up: neither loses a race for the broker's tables.
    health = _wait_for(serve, lambda w: w.get("live") == 2, "two live workers")
    slots = health["parts"]["workers"]["supervised"]
    assert [(s["running"], s["restarts"], s["last_exit"]) for s in slots] == [
        (True, 0, None),
        (True, 0, None),
    ]
    assert "stopped after" not in serve.log.read_text()

    victim = slots[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced(workers: dict[str, Any]) -> bool:
        slot = workers.get("supervised", [{}])[0]
        hosts = workers.get("hosts", [])
        return bool(
            slot.get("restarts") == 1
            and slot.get("pid") != victim
            and any(h.endswith(f":{slot.get('pid')}") for h in hosts)
        )

    health = _wait_for(serve, replaced, "the killed worker replaced")
    slot = health["parts"]["workers"]["supervised"][0]
    assert slot["last_exit"] == "killed by SIGKILL"
    # The console handler wraps long lines: compare with the whitespace collapsed.
    assert "restarting it in" in " ".join(serve.log.read_text().split())

    # Jobs still run (on both the survivor and the replacement).
    token = serve.admin_token()
    archive = serve.request("POST", "/api/v1/archives", {"name": "Restarted"}, token=token)
    ids = []
    for n in range(4):
        case = serve.request(
            "POST", f"/api/v1/archives/{archive['id']}/cases", {"title": f"c{n}"}, token=token
        )
        job = serve.request(
            "POST",
            "/api/v1/algorithms/echo/jobs",
            {
                "archive_id": archive["id"],
                "case_id": case["id"],
                "inputs": {"payload": {"value": {"n": n}}},
            },
            token=token,
        )
        ids.append(job["id"])
    deadline = time.monotonic() + 60
    states: list[str] = []
    while time.monotonic() < deadline:
        states = [serve.get(f"/api/v1/jobs/{i}", token=token)["state"] for i in ids]
        if all(s in ("succeeded", "failed", "cancelled") for s in states):
            break
        time.sleep(0.3)
    assert states == ["succeeded"] * 4
    assert serve.stop() == 0
    assert not (home / "run" / "workers.json").exists()


def test_embedded_worker_queues_follow_the_gpu_unless_set(tmp_path: Path) -> None:
    found = embedded_queues(Settings(home=tmp_path))
    assert found == ("cpu,gpu" if gpu_visible() else "cpu")
    assert embedded_queues(Settings(home=tmp_path, embedded_worker_queues="gpu,cpu")) == "gpu,cpu"
    with pytest.raises(ValueError, match="embedded_worker_queues"):
        Settings(home=tmp_path, embedded_worker_queues="cpu;rm")
