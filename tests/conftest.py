"""Test fixtures: one embedded PostgreSQL per session, a fresh database per test."""

from __future__ import annotations

import io
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.filewriter import dcmwrite

from voxelhub.api import build_app
from voxelhub.auth import service as auth_service
from voxelhub.auth.models import User
from voxelhub.core import migrate
from voxelhub.core.db import engine_for, session_scope
from voxelhub.core.objects.local import LocalObjectStore
from voxelhub.core.pg import EmbeddedPostgres
from voxelhub.core.runtime import Runtime
from voxelhub.core.settings import Settings, load_settings
from voxelhub.main import BodyChunksProtocol

pytest_plugins = ["tests.fixtures.seaweed"]

TEMPLATE_DB = "vxh_template"
SECRET = "test-secret-" + "k" * 40
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="bwrap is not installed (apt-get install bubblewrap)"
)


def server_home() -> Path:
    """A directory for a PostgreSQL home outside pytest's tmp root.

    As root the server runs as a system user that must traverse the path, and pytest keeps
    resetting its own tmp root to mode 0700.
    """
    return Path(tempfile.mkdtemp(prefix="vxh-test-"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL of the test session, with a migrated template database."""
    home = server_home()
    pg = EmbeddedPostgres.for_home(home)
    pg.start()
    with psycopg.connect(_dsn(pg, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    template_url = pg.url.replace("/voxelhub?", f"/{TEMPLATE_DB}?")
    migrate.upgrade(template_url)
    engine_for(template_url).dispose()
    yield pg
    pg.stop(mode="immediate")
    shutil.rmtree(home, ignore_errors=True)


def _dsn(pg: EmbeddedPostgres, dbname: str) -> str:
    return f"host={pg.socket_dir} port={pg.port} user=postgres dbname={dbname}"


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, migrated database for one test (copied from the template in milliseconds)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_dsn(pg_server, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    url = pg_server.url.replace("/voxelhub?", f"/{name}?")
    yield url
    engine_for(url).dispose()
    with psycopg.connect(_dsn(pg_server, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(home=tmp_path / "home", database_url=database_url, secret_key=SECRET)


@pytest.fixture
def runtime(settings: Settings, database_url: str) -> Runtime:
    store = LocalObjectStore(settings.home / "objects", secret_key=settings.key())
    return Runtime(settings=settings, database_url=database_url, store=store)


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return build_app(runtime)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, client=("127.0.0.1", 50000)) as test_client:
        yield test_client


def stow(client: TestClient, account: Account, archive_id: str, datasets: list[Any]) -> None:
    """Store `datasets` in an archive with one STOW-RS request (as a viewer or script would)."""
    body = b""
    for ds in datasets:
        buffer = io.BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        body += b"--b\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue() + b"\r\n"
    body += b"--b--\r\n"
    response = client.post(
        f"/dicom-web/archives/{archive_id}/studies",
        content=body,
        headers={
            **account.headers,
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
        },
    )
    assert response.status_code == 200, response.text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[str]:
    """The app served by a real uvicorn on a free local port, in a background thread."""
    config = uvicorn.Config(
        build_app(runtime), host="127.0.0.1", port=free_port(), log_level="warning",
        lifespan="on", http=BodyChunksProtocol,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@dataclass(frozen=True)
class Account:
    """A user made for a test, with a valid API token."""

    id: uuid.UUID
    username: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(database_url: str):  # type: ignore[no-untyped-def]
    def make(username: str | None = None, *, is_admin: bool = False) -> Account:
        name = username or f"user{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        with session_scope(database_url) as db:
            user: User = auth_service.create_user(db, name, password, is_admin=is_admin)
            token, _ = auth_service.create_token(db, user, "test", expires_in=None)
            user_id = user.id
        return Account(id=user_id, username=name, password=password, token=token)

    return make


@pytest.fixture
def admin(make_user) -> Account:  # type: ignore[no-untyped-def]
    return make_user("admin", is_admin=True)


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXELHUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VOXELHUB_DATABASE_URL", database_url)
    monkeypatch.setenv("VOXELHUB_SECRET_KEY", SECRET)
