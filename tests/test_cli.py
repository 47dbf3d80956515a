"""The command line against a real database: users, tokens, archives, migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from voxelhub.cli import app
from voxelhub.core import migrate

runner = CliRunner()


def test_help_explains_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "worker", "migrate", "user", "token", "archive"):
        assert command in result.output
    serve_help = runner.invoke(app, ["serve", "--help"])
    assert "--home" in serve_help.output and "--port" in serve_help.output


@pytest.mark.usefixtures("cli_env")
def test_user_token_archive_round_trip(client: TestClient) -> None:
    made = runner.invoke(app, ["user", "create", "rad1", "--password-stdin", "--admin"],
                         input="a-long-password\n")  # fmt: skip
    assert made.exit_code == 0, made.output
    token_run = runner.invoke(app, ["token", "create", "--user", "rad1", "--expires-days", "30"])
    assert token_run.exit_code == 0, token_run.output
    token = token_run.stdout.strip().splitlines()[-1]
    assert token.startswith("vxh_")
    archive = runner.invoke(app, ["archive", "create", "Neuro", "--owner", "rad1"])
    assert archive.exit_code == 0, archive.output
    listed = client.get("/api/v1/archives", headers={"Authorization": f"Bearer {token}"})
    assert [a["name"] for a in listed.json()] == ["Neuro"]


@pytest.mark.usefixtures("cli_env")
def test_cli_errors_are_clear() -> None:
    missing = runner.invoke(app, ["token", "create", "--user", "nobody"])
    assert missing.exit_code == 2
    assert "no user named 'nobody'" in missing.output
    short = runner.invoke(app, ["user", "create", "x", "--password-stdin"], input="short\n")
    assert short.exit_code == 2
    assert "too short" in short.output


@pytest.mark.usefixtures("cli_env")
def test_migrate_reports_the_schema() -> None:
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert f"schema at {migrate.head()}" in result.output


def test_insecure_configuration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXELHUB_DATABASE_URL", "postgresql+psycopg://x@127.0.0.1:1/x")
    monkeypatch.delenv("VOXELHUB_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["migrate", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "VOXELHUB_SECRET_KEY must be set" in result.output
