"""`voxelhub serve` for the job benchmarks: start it, log in, add workers, meter CPU by role."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import func, select

from voxelhub.auth.models import User
from voxelhub.auth.service import Principal
from voxelhub.core.db import engine_for, session_scope
from voxelhub.core.runtime import Runtime, build_runtime
from voxelhub.core.settings import load_settings
from voxelhub.jobs.models import WorkerHeartbeat

VOXELHUB = str(Path(sys.executable).with_name("voxelhub"))
ADMIN_PASSWORD = "bench-admin-password"
ARCHIVE = "Bench"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
POLL_S = 0.2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def flush_redis(url: str) -> None:
    """Empty the benchmark's own Redis database (the number in the URL), before and after."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def redis_pid(url: str) -> int | None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("server")["process_id"])
    except Exception:  # only used to meter CPU; the figure is left out without it
        return None
    finally:
        client.close()


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Platform:
    """One `voxelhub serve` (embedded PostgreSQL) with `serve_workers` workers of its own,
    plus any `voxelhub worker` processes added with `add_worker`."""

    home: Path
    broker_url: str | None = None
    serve_workers: int = 2
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    archive_id: str = ""
    runtime: Runtime | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rt(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the platform is not started")
        return self.runtime

    @property
    def database_url(self) -> str:
        return self.rt.database_url

    @property
    def transport(self) -> str:
        return "redis" if self.broker_url else "embedded"

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("VOXELHUB_")}
        env = {
            **clean,
            "VOXELHUB_HOME": str(self.home),
            "VOXELHUB_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VOXELHUB_DEFAULT_ARCHIVE": ARCHIVE,
            "VOXELHUB_LOG_LEVEL": "WARNING",
        }
        if self.broker_url:
            env["VOXELHUB_BROKER_URL"] = self.broker_url
        return env

    def start(self) -> float:
        """Start serve and wait for its HTTP answer and its workers; the seconds it took."""
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home.parent / f"{self.home.name}-serve.log"
        command = [
            VOXELHUB, "serve", "--home", str(self.home), "--port", str(self.port),
            "--workers", str(self.serve_workers), "--dimse-port", "0",
        ]  # fmt: skip
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, env=self.env(), stdout=out, stderr=out)
        try:
            self._wait_http(log)
            overrides: dict[str, Any] = {"log_level": "WARNING"}
            if self.broker_url:
                overrides["broker_url"] = self.broker_url
            settings = load_settings(self.home, **overrides)
            self.runtime = build_runtime(settings, start_database=False)
            self._login()
            self.wait_for_workers(self.serve_workers)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def create_broker_tables(self) -> None:
        """Make the embedded broker's tables and queue rows now (`voxelhub serve` does so
        itself before its workers start; this is for workers the benchmark adds)."""
        from voxelhub.jobs import broker
        from voxelhub.jobs.celery_app import QUEUES, celery_for

        broker.prepare(celery_for(self.rt.settings, self.database_url), self.database_url, QUEUES)

    def _wait_http(self, log: Path) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"voxelhub serve exited with {self.proc.returncode}:\n{_tail(log)}"
                )
            try:
                httpx.get(f"{self.base}/healthz", timeout=5)
                return
            except httpx.TransportError:
                time.sleep(POLL_S)
        raise RuntimeError(f"voxelhub serve did not answer in {START_TIMEOUT_S} s; see {log}")

    def _login(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as client:
            login = client.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
            login.raise_for_status()
            made = client.post(
                "/api/v1/tokens",
                json={"name": f"bench-{uuid.uuid4().hex[:8]}"},
                headers={"X-CSRF-Token": login.json()["csrf_token"]},
            )
            made.raise_for_status()
            self.headers = {"Authorization": f"Bearer {made.json()['token']}"}
            listed = client.get("/api/v1/archives", headers=self.headers)
            listed.raise_for_status()
            self.archive_id = next(a["id"] for a in listed.json() if a["name"] == ARCHIVE)

    def principal(self) -> Principal:
        with session_scope(self.database_url) as db:
            user = db.scalar(select(User).where(User.username == "admin"))
            if user is None:
                raise RuntimeError("no admin user")
            return Principal(user_id=user.id, username=user.username, is_admin=True, via="token")

    def live_workers(self) -> int:
        with session_scope(self.database_url) as db:
            return int(db.scalar(select(func.count()).select_from(WorkerHeartbeat)) or 0)

    def wait_for_workers(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.live_workers() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} worker(s) reported in {timeout:g} s")
            time.sleep(POLL_S)

    def add_worker(self, *, concurrency: int = 1, wait: bool = True) -> subprocess.Popen[bytes]:
        """`voxelhub worker --queues cpu,gpu --concurrency N` on the same home."""
        before = self.live_workers()
        log = self.home.parent / f"{self.home.name}-worker{len(self.workers)}.log"
        command = [
            VOXELHUB, "worker", "--home", str(self.home), "--queues", "cpu,gpu",
            "--concurrency", str(concurrency),
        ]  # fmt: skip
        with log.open("ab") as out:
            proc = subprocess.Popen(command, env=self.env(), stdout=out, stderr=out)
        self.workers.append(proc)
        if wait:
            self.wait_for_workers(before + 1)
        return proc

    def stop_workers(self) -> None:
        """Stop the workers added with add_worker (serve's own keep running)."""
        for proc in self.workers:
            _stop(proc)
        self.workers.clear()

    def worker_pids(self) -> list[int]:
        """Top-level worker processes: serve's children and the added ones."""
        pids = [p.pid for p in self.workers if p.poll() is None]
        if self.proc is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                pids += [c.pid for c in psutil.Process(self.proc.pid).children()]
        return pids

    def roles(self) -> dict[str, list[int]]:
        """Process trees by role, for CPU metering."""
        roles: dict[str, list[int]] = {
            "api": [self.proc.pid] if self.proc else [],
            "workers": self.worker_pids(),
            "bench": [os.getpid()],
        }
        pg = self.home / "pg" / "postmaster.pid"
        try:
            roles["postgres"] = [int(pg.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            roles["postgres"] = []
        if self.broker_url:
            pid = redis_pid(self.broker_url)
            roles["redis"] = [pid] if pid else []
        return roles

    def stop(self) -> None:
        self.stop_workers()
        if self.runtime is not None:
            engine_for(self.runtime.database_url).dispose()
        _forget_broker_clients()
        _stop(self.proc)


def _forget_broker_clients() -> None:
    """Drop this process's Celery apps and kombu's cached engines: they hold connections to
    a database about to stop, and the next serve's would fail once on each."""
    from kombu.transport.sqlalchemy import Channel

    from voxelhub.jobs import celery_app, tasks

    for engine, _ in list(Channel._engines.values()):
        engine.dispose()
    Channel._engines.clear()
    celery_app._cached.cache_clear()
    tasks._dispatchers.clear()


def _cpu(pid: int, *, tree: bool) -> dict[int, float]:
    out: dict[int, float] = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *(root.children(recursive=True) if tree else [])]
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


class RoleCpu:
    """CPU seconds spent by each role between enter and exit. The API is serve's own
    process (its worker children count as workers), the bench its own process only;
    processes that end in between are lost. `others` is the machine's busy CPU time not
    spent by any role (other people's work on a shared machine, py-spy), and `steal` what
    the hypervisor took."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self.seconds: dict[str, float] = {}
        self.others = 0.0
        self.steal = 0.0

    def _snapshot(self) -> dict[str, dict[int, float]]:
        snap: dict[str, dict[int, float]] = {}
        for role, pids in self.roles.items():
            merged: dict[int, float] = {}
            for pid in pids:
                merged.update(_cpu(pid, tree=role in ("workers", "postgres")))
            snap[role] = merged
        return snap

    def __enter__(self) -> RoleCpu:
        self._machine = psutil.cpu_times()
        self._before = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        after = self._snapshot()
        machine = psutil.cpu_times()
        for role, now in after.items():
            before = self._before.get(role, {})
            self.seconds[role] = sum(v - before.get(pid, 0.0) for pid, v in now.items())
        busy = sum(
            getattr(machine, f) - getattr(self._machine, f)
            for f in ("user", "nice", "system", "irq", "softirq")
        )
        self.others = max(0.0, busy - sum(self.seconds.values()))
        self.steal = getattr(machine, "steal", 0.0) - getattr(self._machine, "steal", 0.0)


DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_fetched", "tup_inserted", "tup_updated",
               "tup_deleted")  # fmt: skip


def database_counters(database_url: str) -> dict[str, int]:
    """PostgreSQL's cumulative counters of the platform's database (flushed about once a
    second by each backend, so read them after a pause)."""
    from sqlalchemy import text

    with session_scope(database_url) as db:
        row = db.execute(
            text(
                f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        ).one()
    return dict(zip(DB_COUNTERS, (int(v) for v in row), strict=True))
