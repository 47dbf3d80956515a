"""Settings: environment over voxelhub.toml, insecure defaults refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxelhub.core.errors import ConfigurationError
from voxelhub.core.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOXELHUB_HOME", "VOXELHUB_DATABASE_URL", "VOXELHUB_SECRET_KEY",
                 "VOXELHUB_S3_ENDPOINT", "VOXELHUB_S3_BUCKET", "VOXELHUB_PUBLIC_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


def test_embedded_default_generates_and_keeps_a_key(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.embedded and not settings.uses_s3
    key = settings.key()
    assert len(key) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert load_settings(tmp_path).key() == key


def test_toml_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "voxelhub.toml").write_text(
        'public_url = "https://from-toml.example"\nsession_hours = 2\n'
    )
    assert load_settings(tmp_path).session_hours == 2
    monkeypatch.setenv("VOXELHUB_PUBLIC_URL", "https://from-env.example")
    assert load_settings(tmp_path).public_url == "https://from-env.example"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database_url": "postgresql+psycopg://db/x"}, "VOXELHUB_SECRET_KEY must be set"),
        ({"secret_key": "short"}, "shorter than 32"),
        ({"s3_bucket": "b"}, "VOXELHUB_S3_ACCESS_KEY"),
        ({"unknown_option": 1}, "unknown_option"),
        ({"recon_on_arrival": "raki", "default_archive": ""}, "VOXELHUB_DEFAULT_ARCHIVE is empty"),
        ({"recon_on_arrival": "sense"}, "recon_on_arrival"),
    ],
)
def test_insecure_or_wrong_settings_are_refused(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(tmp_path, **values)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "voxelhub.toml").write_text("this is = = not toml")
    with pytest.raises(ConfigurationError, match=r"voxelhub\.toml is not valid TOML"):
        load_settings(tmp_path)
