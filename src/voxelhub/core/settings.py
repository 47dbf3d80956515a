"""The one place configuration comes from: environment (`VOXELHUB_*`) and `voxelhub.toml`.

Environment variables win over the TOML file in the home directory. `get_settings()` is
cached and is what every dependency uses; nothing reads the environment at import time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from voxelhub.core.errors import ConfigurationError

DEFAULT_HOME = Path("~/.voxelhub")
SECRET_KEY_FILE = "secret_key"
MIN_SECRET_KEY_LENGTH = 32
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def resolve_home(home: Path | str | None = None) -> Path:
    """The platform's home directory: the argument, `$VOXELHUB_HOME`, or `~/.voxelhub`."""
    if home is None:
        home = os.environ.get("VOXELHUB_HOME") or DEFAULT_HOME
    return Path(home).expanduser().resolve()


class Settings(BaseSettings):
    """All settings of a voxelhub deployment."""

    model_config = SettingsConfigDict(
        env_prefix="VOXELHUB_", extra="forbid", frozen=True, validate_default=True
    )

    home: Path = Field(default_factory=resolve_home)
    database_url: str | None = Field(
        default=None,
        description="External PostgreSQL (then nothing is embedded), e.g. "
        "postgresql+psycopg://user:pass@db:5432/voxelhub",
    )
    secret_key: SecretStr | None = None
    admin_password: SecretStr | None = None

    s3_endpoint: str | None = None
    s3_bucket: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    broker_url: str | None = Field(
        default=None, description="Redis/RabbitMQ/SQS URL; default: the database itself"
    )
    worker_stale_seconds: float = Field(
        default=30, gt=0, description="A worker silent this long is dead: its jobs run again"
    )
    embedded_worker_queues: str | None = Field(
        default=None,
        pattern=r"^(cpu|gpu|realtime)(,(cpu|gpu|realtime))*$",
        description="Queues of the workers `serve` starts, e.g. cpu,gpu; default: cpu, and gpu "
        "too where an NVIDIA GPU is visible (so GPU-first algorithms fall back to cpu "
        "on a machine without one)",
    )
    max_jobs_per_user: int = Field(default=8, ge=1, description="Running jobs per user")
    public_url: str | None = Field(
        default=None, description="Base URL the platform is reached at, for links it hands out"
    )
    default_archive: str | None = Field(
        default="Incoming",
        description="Archive that STOW-RS without ?archive= and DIMSE C-STORE store into "
        "(created on start when missing)",
    )
    drop_folder: Path | None = Field(
        default=None,
        description="A folder `serve` watches: files and archives put there are ingested "
        "into the default archive",
    )
    drop_folder_settle_seconds: float = Field(
        default=2.0,
        gt=0,
        description="A drop-folder entry is taken once it has stayed unchanged this long; a "
        "complete entry that cannot be read then goes to failed/. Writers on other hosts "
        "(a share served elsewhere) are judged by this alone: set it above their longest stall",
    )
    drop_folder_retry_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A drop-folder entry that cannot be read completely while it is still "
        "being written (it changed while read, or a process on this host holds it open for "
        "writing) is left in place and tried again after this long, or when it changes",
    )
    drop_folder_give_up_seconds: float = Field(
        default=600.0,
        gt=0,
        description="Such an entry goes to failed/ with the reason once unchanged this long, "
        "even if still open",
    )
    dicom_check_called_ae: bool = Field(
        default=False,
        description="Reject DIMSE associations whose Called AE Title is not the service's own "
        "AE title (A-ASSOCIATE-RJ: called AE title not recognised)",
    )
    dicom_remote_aes: dict[str, str] = Field(
        default_factory=dict,
        description='C-MOVE destinations: AE title → "host:port"',
    )
    dicom_commitment_same_association: bool = Field(
        default=False,
        description="Send a storage commitment report on the modality's own association "
        "while it is still open (else, and when it is closed, on a new association to its "
        "address in dicom_remote_aes); for modalities that wait for the report there",
    )
    dicom_idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A DIMSE peer that sends nothing for this long is aborted",
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed to call the APIs from a browser"
    )
    max_upload_part_mb: int = Field(default=2048, gt=0)
    recon_on_arrival: Literal["zero-filled", "grappa", "raki", "rraki"] | None = Field(
        default=None,
        description="Reconstruct raw k-space that arrives in the default archive (drop "
        "folder, upload) with this method, without further action: `serve` wires the "
        "triggers mri-preprocess on `kspace` and mri-recon-METHOD on its output",
    )
    recon_outbox: Path | None = Field(
        default=None,
        description="A folder every reconstructed MR series is also written to, one "
        "sub-folder per series (for the hospital to collect)",
    )
    raw_data_prefix: str = Field(
        default="raw",
        pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$",
        description="Object-store prefix raw k-space is kept under (a tier of its own: "
        "give it its own lifecycle or storage class)",
    )
    raw_data_location: str | None = Field(
        default=None,
        description="Where the raw-data tier lives when not in the main object store: a "
        "folder (e.g. a larger, slower disk) or s3://BUCKET (on the S3 server and with the "
        "credentials of the main store)",
    )
    raw_data_storage_class: str | None = Field(
        default=None,
        pattern=r"^[A-Z][A-Z_]{1,40}$",
        description="S3 storage class for raw k-space (e.g. STANDARD_IA, GLACIER_IR, "
        "INTELLIGENT_TIERING), when the raw-data tier is on S3",
    )
    raw_data_compression: Literal["gzip", "lzf", "none"] = Field(
        default="gzip", description="How raw k-space (HDF5) is compressed when stored"
    )
    viewer_cache_mb: int = Field(
        default=2048,
        gt=0,
        description="Memory for decoded series in the viewer, per web process (least "
        "recently used series are dropped first)",
    )
    endpoint_memory_mb: int = Field(
        default=4096,
        gt=0,
        description="Memory for the loaded models of multi-model endpoints, per web process "
        "(least recently used models are unloaded first; a bundle's process counts whole)",
    )
    session_hours: float = Field(default=12.0, gt=0)
    signed_url_seconds: int = Field(default=300, gt=0, le=7 * 24 * 3600)
    cookie_secure: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over values read from voxelhub.toml (passed as init values).
        return env_settings, init_settings

    @property
    def embedded(self) -> bool:
        """True when voxelhub runs its own PostgreSQL (no external database configured)."""
        return self.database_url is None

    @property
    def uses_s3(self) -> bool:
        return self.s3_endpoint is not None or self.s3_bucket is not None

    @property
    def raw_data_on_s3(self) -> bool:
        if self.raw_data_location is None:
            return self.uses_s3
        return self.raw_data_location.startswith("s3://")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.uses_s3:
            missing = [
                name
                for name, value in (
                    ("VOXELHUB_S3_BUCKET", self.s3_bucket),
                    ("VOXELHUB_S3_ACCESS_KEY", self.s3_access_key),
                    ("VOXELHUB_S3_SECRET_KEY", self.s3_secret_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"S3 storage is configured but {', '.join(missing)} is not set; "
                    "set all of VOXELHUB_S3_ENDPOINT, _BUCKET, _ACCESS_KEY and _SECRET_KEY, "
                    "or none of them for the local object store"
                )
        if self.raw_data_location is not None:
            self._check_raw_data_location(self.raw_data_location)
        if self.raw_data_storage_class is not None and not self.raw_data_on_s3:
            raise ValueError(
                "VOXELHUB_RAW_DATA_STORAGE_CLASS applies to S3 only, but the raw-data tier is "
                f"the folder {self.raw_data_location or self.home / 'objects'}"
            )
        if self.recon_on_arrival is not None and not self.default_archive:
            raise ValueError(
                "VOXELHUB_RECON_ON_ARRIVAL reconstructs what arrives in the default archive, "
                "but VOXELHUB_DEFAULT_ARCHIVE is empty; name an archive or unset it"
            )
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < (
            MIN_SECRET_KEY_LENGTH
        ):
            raise ValueError(
                f"VOXELHUB_SECRET_KEY is shorter than {MIN_SECRET_KEY_LENGTH} characters; "
                'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        if not self.embedded and self.secret_key is None:
            raise ValueError(
                "VOXELHUB_SECRET_KEY must be set when VOXELHUB_DATABASE_URL points at an "
                "external database (a generated key is only used in embedded mode); "
                'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return self

    def _check_raw_data_location(self, location: str) -> None:
        if location.startswith("s3://"):
            bucket = location.removeprefix("s3://").rstrip("/")
            if not _BUCKET_NAME.fullmatch(bucket):
                raise ValueError(
                    f"VOXELHUB_RAW_DATA_LOCATION {location!r} does not name an S3 bucket; "
                    "write s3://BUCKET with a bucket name of 3-63 lowercase letters, digits, "
                    "dots and hyphens"
                )
            if not self.uses_s3:
                raise ValueError(
                    f"VOXELHUB_RAW_DATA_LOCATION {location!r} is an S3 bucket but the main "
                    "object store is local; configure VOXELHUB_S3_* (the tier uses the same "
                    "server and credentials) or give a folder instead"
                )
        elif not Path(location).is_absolute():
            raise ValueError(
                f"VOXELHUB_RAW_DATA_LOCATION {location!r} is neither s3://BUCKET nor an "
                "absolute folder path"
            )

    def key(self) -> str:
        """The secret key for signing sessions and URLs (generated once in embedded mode)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        return _embedded_secret_key(self.home)


def _embedded_secret_key(home: Path) -> str:
    path = home / SECRET_KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
        # A concurrent first start may have won; either key is fine, the first link stays.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text().strip()


def load_settings(home: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings for `home`, reading `home/voxelhub.toml` when it exists."""
    resolved = resolve_home(home)
    values: dict[str, Any] = {}
    toml_path = resolved / "voxelhub.toml"
    if toml_path.exists():
        try:
            values = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigurationError(f"{toml_path} is not valid TOML: {err}") from err
    values.update(overrides)
    values["home"] = resolved
    try:
        settings = Settings(**values)
    except ValueError as err:
        raise ConfigurationError(_first_message(err)) from err
    if home is not None and settings.home != resolved:
        # An explicit home (a --home flag) wins over $VOXELHUB_HOME.
        settings = settings.model_copy(update={"home": resolved})
    return settings


def _first_message(err: ValueError) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            first = items[0]
            loc = ".".join(str(part) for part in first.get("loc", ()))
            msg = str(first.get("msg", err)).removeprefix("Value error, ")
            return f"{loc}: {msg}" if loc else msg
    return str(err)


@functools.cache
def get_settings() -> Settings:
    """The settings of this process (cached); tests call `get_settings.cache_clear()`."""
    return load_settings()
