"""The `voxelhub` command line."""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from voxelhub import bootstrap
from voxelhub.algorithms.cli import run_command
from voxelhub.algorithms.training import train_app
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.settings import load_settings
from voxelhub.ingest.cli import upload_command
from voxelhub.jobs.scaler import autoscale_command
from voxelhub.recon.cli import recon_command
from voxelhub.segment.cli import segment_command

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from voxelhub.core.runtime import Runtime

app = typer.Typer(
    help="voxelhub: an open platform for medical imaging AI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
archive_app = typer.Typer(help="Manage archives.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(archive_app, name="archive")
app.add_typer(train_app, name="train")

console = Console(stderr=True)
out = Console()

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", envvar="VOXELHUB_HOME", help="Data directory [default: ~/.voxelhub]"),
]


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("alembic.runtime.migration", "urllib3", "botocore", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(err: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {err}")
    return typer.Exit(code=2)


def use_home(home: Path | None) -> None:
    """Make `--home` this process's home: code that reads the process's settings (ingest,
    built-ins) and child processes see the same one."""
    if home is not None:
        from voxelhub.core.settings import get_settings

        os.environ["VOXELHUB_HOME"] = str(home)
        get_settings.cache_clear()


@app.command()
def serve(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    demo: Annotated[bool, typer.Option(help="Load the demo archive on start")] = False,
    workers: Annotated[int, typer.Option(min=0, help="Worker processes to start")] = 1,
    dimse_port: Annotated[
        int, typer.Option(help="DICOM (DIMSE) port; 0 turns the DICOM service off")
    ] = 11112,
    ae_title: Annotated[str, typer.Option(help="AE title of the DICOM service")] = "VOXELHUB",
    web_processes: Annotated[
        int, typer.Option(min=1, help="HTTP server processes (more use more cores for ingest)")
    ] = 1,
) -> None:
    """Start the platform: database, object store, web server and a worker, in one command.

    Embedded by default (PostgreSQL and objects under --home); set VOXELHUB_DATABASE_URL and
    VOXELHUB_S3_* to use external services. Ctrl-C stops everything.
    """
    from voxelhub.serve import ServeOptions, run_serve

    try:
        use_home(home)
        settings = load_settings(home)
        setup_logging(settings.log_level)
        options = ServeOptions(
            host=host,
            port=port,
            demo=demo,
            workers=workers,
            dimse_port=dimse_port or None,
            web_processes=web_processes,
            ae_title=ae_title,
        )
        run_serve(settings, options)
    except VoxelhubError as err:
        raise fail(err) from err


@app.command()
def worker(
    home: HomeOption = None,
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume")] = "cpu",
    concurrency: Annotated[int, typer.Option(min=1, help="Parallel jobs")] = 1,
) -> None:
    """Run a worker that consumes job queues (any number of hosts may run one)."""
    from datetime import timedelta

    from voxelhub.algorithms import triggers
    from voxelhub.algorithms.catalog import register_builtins
    from voxelhub.algorithms.runner import run_algorithm_job
    from voxelhub.algorithms.webhooks import notify
    from voxelhub.core import migrate
    from voxelhub.core.runtime import build_runtime
    from voxelhub.jobs import engine, tasks
    from voxelhub.jobs.celery_app import make_celery
    from voxelhub.jobs.worker import run_worker

    try:
        use_home(home)
        settings = load_settings(home)
        setup_logging(settings.log_level)
        runtime = build_runtime(settings, start_database=False)
        if runtime.embedded_pg is not None:
            runtime.embedded_pg.start()
        migrate.upgrade(runtime.database_url)
    except VoxelhubError as err:
        raise fail(err) from err
    names = [q.strip() for q in queues.split(",") if q.strip()]
    send = tasks.sender(runtime)

    def reconcile(db: Session) -> None:
        stale = timedelta(seconds=settings.worker_stale_seconds)
        engine.reconcile(db, send, worker_stale_after=stale)

    def prune(db: Session) -> None:
        if not settings.broker_url:
            engine.prune_broker_messages(db)

    def fire_triggers(db: Session) -> None:
        # One job at a time runs in this very process: bundles started ahead serve it.
        triggers.evaluate(db, runtime.store, send, prewarm=concurrency == 1)

    def install(hostname: str) -> None:
        register_builtins()
        context = tasks.WorkerContext(
            runtime,
            hostname,
            run_algorithm_job,
            on_finish=notify,
            max_jobs_per_user=settings.max_jobs_per_user,
        )
        tasks.install(context)

    run_worker(
        make_celery(settings, runtime.database_url),
        runtime.database_url,
        queues=names,
        concurrency=concurrency,
        on_start=install,
        duties=[reconcile, fire_triggers, prune],
    )


@contextmanager
def _database(home: Path | None) -> Iterator[tuple[Runtime, Session]]:
    """The runtime of `home` (or of the environment) and a session committed at the end."""
    from voxelhub.core.db import session_scope

    settings = load_settings(home)
    setup_logging("WARNING")
    with bootstrap.opened(settings) as runtime, session_scope(runtime.database_url) as db:
        yield runtime, db


@app.command()
def migrate(home: HomeOption = None) -> None:
    """Apply database migrations (serve and worker do this on start too)."""
    from voxelhub.core import migrate as migrations

    try:
        settings = load_settings(home)
        setup_logging(settings.log_level)
        with bootstrap.opened(settings) as runtime:
            out.print(f"database schema at {migrations.current(runtime.database_url)}")
    except VoxelhubError as err:
        raise fail(err) from err


@app.command()
def sweep(
    home: HomeOption = None,
    grace_minutes: Annotated[
        float, typer.Option(help="Leave objects younger than this (in-flight uploads)")
    ] = 60,
    dry_run: Annotated[bool, typer.Option(help="Only count what would be removed")] = False,
) -> None:
    """Remove stored objects that no index row points to (left by crashes or failed writes)."""
    from datetime import timedelta

    from voxelhub.store.sweep import sweep_imagesets

    try:
        with _database(home) as (runtime, db):
            result = sweep_imagesets(
                db, runtime.store, grace=timedelta(minutes=grace_minutes), dry_run=dry_run
            )
    except VoxelhubError as err:
        raise fail(err) from err
    verb = "would remove" if dry_run else "removed"
    out.print(
        f"{result.examined} objects examined; {verb} {result.removed} "
        f"({result.bytes_removed} bytes)"
    )


@app.command()
def verify(
    home: HomeOption = None,
    archive: Annotated[
        str | None, typer.Option(help="Only this archive (by name); all archives by default")
    ] = None,
) -> None:
    """Read back and decode every stored frame; list the damaged ones (exit status 1)."""
    from sqlalchemy import select

    from voxelhub.archives.models import Archive
    from voxelhub.store.verify import verify_imagesets

    try:
        with _database(home) as (runtime, db):
            archive_id = None
            if archive is not None:
                archive_id = db.scalar(select(Archive.id).where(Archive.name == archive))
                if archive_id is None:
                    raise typer.BadParameter(f"no archive named {archive!r}")
            result = verify_imagesets(db, runtime.store, archive_id=archive_id)
    except VoxelhubError as err:
        raise fail(err) from err
    for damaged in result.damaged:
        where = f"frame {damaged.frame}" if damaged.frame is not None else "every frame"
        out.print(
            f"damaged: study {damaged.study_instance_uid} series "
            f"{damaged.series_instance_uid} instance {damaged.sop_instance_uid}, {where}: "
            f"{damaged.reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"{result.instances} instances, {result.frames} frames read and decoded; "
        f"{len(result.damaged)} damaged"
    )
    if result.damaged:
        raise typer.Exit(code=1)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat: "):
        raise typer.BadParameter("the passwords differ")
    return first


@user_app.command("create")
def user_create(
    username: str,
    home: HomeOption = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator")] = False,
    email: Annotated[str | None, typer.Option(help="E-mail address")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Create a user account (asks for the password)."""
    from voxelhub.auth import audit
    from voxelhub.auth import service as auth_service

    password = _read_password(password_stdin)
    try:
        with _database(home) as (_, db):
            user = auth_service.create_user(db, username, password, email=email, is_admin=admin)
            audit.record(
                db,
                None,
                "user.create",
                object_type="user",
                object_id=user.id,
                detail={"username": username, "via": "cli"},
            )
    except VoxelhubError as err:
        raise fail(err) from err
    out.print(f"created user {username}{' (administrator)' if admin else ''}")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option("--user", help="Whose token")],
    home: HomeOption = None,
    name: Annotated[str, typer.Option(help="What the token is for")] = "cli",
    expires_days: Annotated[
        float | None, typer.Option(help="Days until it expires (default: never)")
    ] = None,
) -> None:
    """Create an API token and print it (it is shown only this once)."""
    from datetime import timedelta

    from voxelhub.auth import audit
    from voxelhub.auth import service as auth_service

    try:
        with _database(home) as (_, db):
            account = auth_service.get_user(db, user)
            expires = timedelta(days=expires_days) if expires_days else None
            token, row = auth_service.create_token(db, account, name, expires_in=expires)
            audit.record(
                db,
                None,
                "token.create",
                object_type="token",
                object_id=row.id,
                detail={"username": user, "via": "cli"},
            )
    except VoxelhubError as err:
        raise fail(err) from err
    print(token)


@archive_app.command("create")
def archive_create(
    name: str,
    owner: Annotated[str, typer.Option(help="User who becomes its editor")] = bootstrap.ADMIN,
    home: HomeOption = None,
    description: Annotated[str, typer.Option(help="What the archive holds")] = "",
) -> None:
    """Create an archive; the owner becomes its editor."""
    from voxelhub.archives import service as archives
    from voxelhub.auth import audit
    from voxelhub.core.db import session_scope

    try:
        settings = load_settings(home)
        setup_logging("WARNING")
        with bootstrap.opened(settings) as runtime:
            principal = bootstrap.system_principal(runtime, owner)
            with session_scope(runtime.database_url) as db:
                archive = archives.create_archive(db, principal, name, description=description)
                audit.record(
                    db,
                    principal,
                    "archive.create",
                    object_type="archive",
                    object_id=archive.id,
                    detail={"via": "cli"},
                )
    except VoxelhubError as err:
        raise fail(err) from err
    out.print(f"created archive {name} ({archive.id}); {owner} is its editor")


app.command("upload")(upload_command)
app.command("autoscale")(autoscale_command)
app.command("run")(run_command)
app.command("recon")(recon_command)
app.command("segment")(segment_command)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
