"""`voxelhub serve`: database, object store, web server and workers in one process tree."""

from __future__ import annotations

import ctypes
import fcntl
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from rich.console import Console
from sqlalchemy import select
from uvicorn.supervisors import Multiprocess

from voxelhub import bootstrap
from voxelhub.api import build_app
from voxelhub.auth.models import User
from voxelhub.auth.service import Principal
from voxelhub.core import migrate
from voxelhub.core.db import engine_for, session_scope
from voxelhub.core.errors import ConfigurationError
from voxelhub.core.runtime import Runtime, build_runtime
from voxelhub.core.settings import Settings
from voxelhub.jobs import broker, celery_app
from voxelhub.jobs.celery_app import celery_for
from voxelhub.jobs.supervisor import Supervisor
from voxelhub.main import BodyChunksProtocol, tune_body_reading
from voxelhub.store.dimse import DimseConfig, DimseServer, start_dimse

logger = logging.getLogger(__name__)
console = Console(stderr=True)

_PR_SET_PDEATHSIG = 1
WORKER_STOP_TIMEOUT_S = 20


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    demo: bool = False
    workers: int = 1
    dimse_port: int | None = 11112
    ae_title: str = "VOXELHUB"
    web_processes: int = 1


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """One `serve` per home. The kernel drops the lock when the process dies, so a lock
    left by a killed run never blocks the next start."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "serve.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigurationError(
            f"another `voxelhub serve` (pid {holder}) is using {home}; stop it first "
            "or start this one with a different --home"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({err.strerror}); stop what uses it or pass --port"
            ) from err


def _die_with_parent() -> None:
    """In the child: receive SIGTERM when `serve` dies, even by SIGKILL."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def gpu_visible() -> bool:
    """Whether the NVIDIA driver shows a GPU to this machine (no CUDA library loaded)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def embedded_queues(settings: Settings) -> str:
    """The queues of the workers `serve` starts: `gpu` only where a GPU is there to serve
    it, so that a GPU-first algorithm (an MRI reconstruction) takes its `cpu` fallback on a
    machine without one instead of a `gpu` queue that only names it."""
    if settings.embedded_worker_queues:
        return settings.embedded_worker_queues
    return "cpu,gpu" if gpu_visible() else "cpu"


def start_workers(settings: Settings, count: int) -> Supervisor:
    """Start `count` worker processes, restarted with backoff whenever one dies."""
    env = {**os.environ, "VOXELHUB_HOME": str(settings.home)}
    queues = embedded_queues(settings)
    command = [sys.executable, "-m", "voxelhub.cli", "worker", "--queues", queues]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509

    supervisor = Supervisor(start, count, home=settings.home)
    supervisor.start()
    return supervisor


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in workers:
        try:
            proc.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("worker %d did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.wait()


def _first_admin(runtime: Runtime) -> Principal:
    with session_scope(runtime.database_url) as db:
        user = db.scalar(
            select(User)
            .where(User.is_admin.is_(True), User.is_active.is_(True))
            .order_by(User.created_at)
            .limit(1)
        )
        if user is None:
            raise ConfigurationError("no active administrator to own the demo archive")
        return Principal(user_id=user.id, username=user.username, is_admin=True, via="system")


def _ensure_archive(runtime: Runtime, name: str) -> None:
    from voxelhub.archives import service as archives
    from voxelhub.archives.models import Archive

    with session_scope(runtime.database_url) as db:
        if db.scalar(select(Archive.id).where(Archive.name == name)) is None:
            archives.create_archive(
                db,
                _first_admin(runtime),
                name,
                description="Where DIMSE and STOW-RS store by default",
            )


def _ensure_reconstruction(runtime: Runtime, archive_name: str, method: str) -> None:
    from voxelhub.algorithms import triggers
    from voxelhub.archives.models import Archive

    owner = _first_admin(runtime)
    with session_scope(runtime.database_url) as db:
        archive_id = db.scalar(select(Archive.id).where(Archive.name == archive_name))
        if archive_id is None:
            raise ConfigurationError(f"the default archive {archive_name!r} does not exist")
        created = triggers.ensure_reconstruction(db, owner, archive_id, method)
    for algorithm in created:
        logger.info("raw k-space arriving in %s: added a trigger for %s", archive_name, algorithm)
    console.print(
        f"raw k-space arriving in [cyan]{archive_name}[/] is reconstructed by [cyan]{method}[/]"
    )


def _sync_builtins(runtime: Runtime) -> None:
    from voxelhub.algorithms.catalog import sync_builtins

    with session_scope(runtime.database_url) as db:
        added = sync_builtins(db, _first_admin(runtime))
    if added:
        logger.info("registered %d built-in algorithm(s)", added)


def _remote_aes(settings: Settings) -> dict[str, tuple[str, int]]:
    remotes = {}
    for ae, address in settings.dicom_remote_aes.items():
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f'dicom_remote_aes[{ae!r}] is {address!r}; write it as "host:port"'
            )
        remotes[ae] = (host, int(port))
    return remotes


def start_dicom_service(runtime: Runtime, options: ServeOptions) -> DimseServer | None:
    if options.dimse_port is None or not runtime.settings.default_archive:
        return None
    config = DimseConfig.from_settings(
        runtime.settings,
        ae_title=options.ae_title,
        port=options.dimse_port,
        host=options.host,
        remote_aes=_remote_aes(runtime.settings),
        idle_timeout_s=runtime.settings.dicom_idle_timeout_s,
        commitment_same_association=runtime.settings.dicom_commitment_same_association,
        check_called_ae=runtime.settings.dicom_check_called_ae,
    )
    return start_dimse(runtime, config)


def start_drop_folder(runtime: Runtime) -> tuple[threading.Thread, threading.Event] | None:
    """Watch the configured drop folder in a thread until the returned event is set."""
    folder, archive = runtime.settings.drop_folder, runtime.settings.default_archive
    if folder is None or not archive:
        return None
    from voxelhub.ingest.dropfolder import DropFolder

    folder.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    watcher = DropFolder(
        folder, archive, runtime=runtime,
        settle_seconds=runtime.settings.drop_folder_settle_seconds,
        retry_seconds=runtime.settings.drop_folder_retry_seconds,
        give_up_seconds=runtime.settings.drop_folder_give_up_seconds,
    )  # fmt: skip
    thread = threading.Thread(
        target=watcher.run_forever, args=(stop,), name="drop-folder", daemon=True
    )
    thread.start()
    logger.info("watching the drop folder %s (into %s)", folder, archive)
    return thread, stop


def _prepare(settings: Settings, options: ServeOptions) -> Runtime:
    with console.status("starting the database…"):
        runtime = build_runtime(settings, start_database=True)
    with console.status("applying migrations…"):
        migrate.upgrade(runtime.database_url)
    password = bootstrap.ensure_admin(runtime)
    if password is not None:
        console.print(
            f"[bold]created the administrator:[/] user [cyan]admin[/], password "
            f"[cyan]{password}[/] (shown once; set VOXELHUB_ADMIN_PASSWORD to choose it)"
        )
    if settings.default_archive:
        _ensure_archive(runtime, settings.default_archive)
    _sync_builtins(runtime)
    if settings.recon_on_arrival and settings.default_archive:
        _ensure_reconstruction(runtime, settings.default_archive, settings.recon_on_arrival)
    # Before any worker starts: several creating the embedded broker's tables at once race.
    broker.prepare(
        celery_for(settings, runtime.database_url), runtime.database_url, celery_app.QUEUES
    )
    if options.demo:
        from voxelhub.demo import load_demo

        with (
            console.status("loading the demo data set…"),
            session_scope(runtime.database_url) as db,
        ):
            load_demo(db, runtime.store, _first_admin(runtime))
    return runtime


def serve_http(runtime: Runtime, options: ServeOptions) -> None:
    """Serve HTTP until stopped: in this process, or in several (ingest is CPU-bound)."""
    common = {
        "host": options.host,
        "port": options.port,
        "proxy_headers": False,
        "access_log": False,
        # Open keep-alive or streaming connections must not hold a shutdown forever.
        "timeout_graceful_shutdown": 10,
        "log_level": runtime.settings.log_level.lower(),
        "http": BodyChunksProtocol,
    }
    if options.web_processes <= 1:
        tune_body_reading()
        uvicorn.Server(uvicorn.Config(build_app(runtime), **common)).run()  # type: ignore[arg-type]
        return
    # Each process builds its own app from the same settings (home passed by environment).
    os.environ["VOXELHUB_HOME"] = str(runtime.settings.home)
    config = uvicorn.Config(
        "voxelhub.main:create_app",
        factory=True,
        workers=options.web_processes,
        **common,  # type: ignore[arg-type]
    )
    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_serve(settings: Settings, options: ServeOptions) -> None:
    """Start everything, serve until Ctrl-C or SIGTERM, then stop everything."""
    check_port_free(options.host, options.port)
    if options.dimse_port:
        check_port_free(options.host, options.dimse_port)
    with home_lock(settings.home):
        runtime = _prepare(settings, options)
        # What startup loaded lives as long as the process: keep it out of every collection.
        gc.collect()
        gc.freeze()
        dimse = start_dicom_service(runtime, options)
        workers = start_workers(settings, options.workers)
        drop = start_drop_folder(runtime)
        mode = "embedded" if runtime.embedded_pg else "external database"
        console.print(
            f"[bold green]voxelhub[/] on http://{options.host}:{options.port} "
            f"({mode}, home {settings.home}, {options.workers} worker(s)"
            + (f" on {embedded_queues(settings)}" if options.workers else "")
            + (f", DICOM {options.ae_title}@{options.host}:{dimse.port}" if dimse else "")
            + "); Ctrl-C stops"
        )
        # uvicorn re-raises the signal that stopped it; turn SIGTERM into the same clean
        # shutdown as Ctrl-C so the cleanup below always runs.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve_http(runtime, options)
        except KeyboardInterrupt:
            pass
        finally:
            console.print("stopping…")
            if dimse is not None:
                dimse.stop()
            if drop is not None:
                drop[1].set()
                drop[0].join(timeout=30)
            stop_workers(workers.stop())
            engine_for(runtime.database_url).dispose()
            if runtime.embedded_pg is not None:
                runtime.embedded_pg.stop()
            console.print("stopped")
