"""Starting and stopping the two servers inside the namespace, and sampling their memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ORTHANC_BINARY = "Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
VOXELHUB = str(Path(sys.executable).with_name("voxelhub"))
ADMIN_PASSWORD = "bench-admin-password"
ARCHIVE = "Bench"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
POLL_S = 0.25


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{what} did not answer {url} in {START_TIMEOUT_S} s; see {log}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Orthanc:
    """Orthanc from Debian with the DICOMweb plugin, its storage and index in `folder`."""

    folder: Path
    netns: list[str]
    http_port: int = 8042
    dicom_port: int = 4242
    ae_title: str = "ORTHANC"
    name: str = "orthanc"
    proc: subprocess.Popen[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def stow_url(self) -> str:
        return f"{self.dicomweb}/studies"

    def root_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def start(self) -> None:
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "vxhbench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=1))
        log = self.folder / "orthanc.log"
        env = {**os.environ, "TCP_NODELAY": "1"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*self.netns, ORTHANC_BINARY, str(path)], env=env, stdout=out, stderr=out
            )
        _wait_http(f"{self.base}/system", self.proc, log, "Orthanc")

    def version(self) -> str:
        system = httpx.get(f"{self.base}/system", timeout=10).json()
        plugin = httpx.get(f"{self.base}/plugins/dicom-web", timeout=10).json()
        return f"Orthanc {system['Version']}, DICOMweb plugin {plugin.get('Version', '?')}"

    def instance_count(self) -> int:
        return int(httpx.get(f"{self.base}/statistics", timeout=60).json()["CountInstances"])

    def stop(self) -> None:
        _stop(self.proc)


@dataclass
class Voxelhub:
    """`voxelhub serve` in embedded mode with its home in `folder`."""

    folder: Path
    netns: list[str]
    http_port: int = 8000
    dimse_port: int = 11112
    ae_title: str = "VOXELHUB"
    name: str = "voxelhub"
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    archive_id: str = ""
    dimse_enabled: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    # More `voxelhub serve` options, for a variant of its configuration.
    serve_args: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicom-web/archives/{self.archive_id}"

    @property
    def stow_url(self) -> str:
        return f"{self.dicomweb}/studies"

    def root_pids(self) -> list[int]:
        """serve (with its workers) and the embedded PostgreSQL, which pg_ctl detaches."""
        pids = [self.proc.pid] if self.proc else []
        with contextlib.suppress(OSError, IndexError, ValueError):
            pids.append(int((self.folder / "pg" / "postmaster.pid").read_text().split()[0]))
        return pids

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "VOXELHUB_HOME": str(self.folder),
            "VOXELHUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VOXELHUB_DEFAULT_ARCHIVE": ARCHIVE,
            "VOXELHUB_LOG_LEVEL": "WARNING",
            "TCP_NODELAY": "1",
        }

    def _cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*self.netns, VOXELHUB, *args, "--home", str(self.folder)],
            env=self._env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"voxelhub {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def supports_dimse(self) -> bool:
        return "--dimse-port" in self._cli_help()

    def _cli_help(self) -> str:
        done = subprocess.run(
            [VOXELHUB, "serve", "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=120,
            check=False,
        )
        return done.stdout + done.stderr

    def start(self, *, dimse: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # The archive must exist before serve starts, as DIMSE stores into it by name.
        # Newer CLIs make the admin (VOXELHUB_ADMIN_PASSWORD) on first use; older ones
        # need it made first.
        try:
            self._cli("archive", "create", ARCHIVE)
        except RuntimeError as first:
            try:
                self._cli(
                    "user", "create", "admin", "--admin", "--password-stdin",
                    stdin=ADMIN_PASSWORD + "\n",
                )  # fmt: skip
                self._cli("archive", "create", ARCHIVE)
            except RuntimeError as second:
                raise RuntimeError(f"{first}\nthen {second}") from second
        command = [
            *self.netns,
            VOXELHUB,
            "serve",
            "--home",
            str(self.folder),
            "--port",
            str(self.http_port),
            *self.serve_args,
        ]
        self.dimse_enabled = dimse and self.supports_dimse()
        if self.dimse_enabled:
            command += ["--dimse-port", str(self.dimse_port)]
        log = self.folder / "serve.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(command, env=self._env(), stdout=out, stderr=out)
        _wait_http(f"{self.base}/healthz", self.proc, log, "voxelhub serve")
        self._login()

    def _login(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            login = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            login.raise_for_status()
            csrf = login.json()["csrf_token"]
            made = client.post(
                "/api/v1/tokens", json={"name": "bench"}, headers={"X-CSRF-Token": csrf}
            )
            made.raise_for_status()
            self.token = made.json()["token"]
            self.headers = {"Authorization": f"Bearer {self.token}"}
            listed = client.get("/api/v1/archives", headers=self.headers)
            listed.raise_for_status()
            self.archive_id = next(a["id"] for a in listed.json() if a["name"] == ARCHIVE)

    def version(self) -> str:
        from importlib.metadata import version

        return f"voxelhub {version('voxelhub')} (embedded mode)"

    def stop(self) -> None:
        _stop(self.proc)


Server = Orthanc | Voxelhub


def _tree(roots: list[int]) -> list[psutil.Process]:
    procs: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(procs.values())


def tree_cpu(roots: list[int], names: dict[int, str] | None = None) -> dict[int, float]:
    """CPU seconds (user + system, children reaped included) of each process in the trees;
    `names` gets each process's kind (`process_kind`)."""
    out = {}
    for proc in _tree(roots):
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system + t.children_user + t.children_system
            if names is not None and proc.pid not in names:
                names[proc.pid] = process_kind(proc.cmdline())
        except psutil.Error:
            pass
    return out


def process_kind(command: list[str]) -> str:
    """A short name for a server process: "serve", "worker", a module run with -m, or the
    program (PostgreSQL backends by their title)."""
    if not command:
        return "?"
    if "-m" in command[:-1]:
        return command[command.index("-m") + 1].rsplit(".", 1)[-1]
    if "serve" in command[1:3]:
        return "serve"
    if command[0].startswith("postgres"):
        return "postgres"
    return Path(command[0]).name


class CpuMeter:
    """CPU seconds the server trees spent between enter and exit (processes that start
    in between count from zero; ones that end in between are lost)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.seconds = 0.0
        self.by_kind: dict[str, float] = {}
        self._names: dict[int, str] = {}

    def __enter__(self) -> CpuMeter:
        self._before = tree_cpu(self.roots, self._names)
        return self

    def __exit__(self, *exc: object) -> None:
        after = tree_cpu(self.roots, self._names)
        spent = {pid: v - self._before.get(pid, 0.0) for pid, v in after.items()}
        self.seconds = sum(spent.values())
        for pid, seconds in spent.items():
            kind = self._names.get(pid, "?")
            self.by_kind[kind] = round(self.by_kind.get(kind, 0.0) + seconds, 3)


def tree_rss(roots: list[int]) -> tuple[int, int]:
    """Resident memory of processes and all their descendants, in bytes (each process
    counted once; pages shared between them are counted in each), and how many there are."""
    total, count = 0, 0
    for proc in _tree(roots):
        try:
            total += proc.memory_info().rss
            count += 1
        except psutil.NoSuchProcess:
            pass
    return total, count


def tree_pss(roots: list[int]) -> int:
    """Proportional set size of the trees: shared pages split between their users, so
    summing over processes counts each page once."""
    total = 0
    for proc in _tree(roots):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            total += proc.memory_full_info().pss
    return total


class RssSampler:
    """Samples the RSS of process trees every `interval_s` in a thread and keeps the peak;
    every `pss_every`-th sample also reads the PSS (slower), keeping its peak too."""

    def __init__(
        self, roots: list[int], interval_s: float = 0.05, max_samples: int = 200_000
    ) -> None:
        self.roots, self.interval_s, self.max_samples = roots, interval_s, max_samples
        self.peak = 0
        self.peak_pss = 0
        self.pss_every = 10
        self.samples = 0
        self.baseline, self.processes = tree_rss(roots)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.samples < self.max_samples:
            rss, count = tree_rss(self.roots)
            self.peak = max(self.peak, rss)
            self.processes = max(self.processes, count)
            if self.samples % self.pss_every == 0:
                self.peak_pss = max(self.peak_pss, tree_pss(self.roots))
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
