"""The platform's object store: where pixels and uploaded files live.

`open_store(settings)` picks the backend: S3 (AWS, SeaweedFS, MinIO) when S3 is configured,
else a directory under the platform's home. The raw-data tier (raw MRI k-space, under the
`raw_data_prefix` keys) can live on a store of its own: another folder, another bucket, or an
S3 storage class (`TieredObjectStore`).

>>> store = open_store(settings)  # doctest: +SKIP
>>> store.put("uploads/42/scan.nii.gz", open("scan.nii.gz", "rb")).size  # doctest: +SKIP
73400320
"""

from __future__ import annotations

from pathlib import Path

from voxelhub.core.errors import ConfigurationError
from voxelhub.core.objects.base import (
    InvalidArgument,
    InvalidKey,
    InvalidRange,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
)
from voxelhub.core.objects.local import LocalObjectStore
from voxelhub.core.objects.s3 import S3ObjectStore
from voxelhub.core.objects.tiered import TieredObjectStore
from voxelhub.core.settings import Settings

__all__ = [
    "InvalidArgument",
    "InvalidKey",
    "InvalidRange",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "TieredObjectStore",
    "open_store",
]


def open_store(settings: Settings) -> ObjectStore:
    """The object store the settings describe: S3 when configured, else `home/objects`;
    with the raw-data tier on a store of its own when `raw_data_location` or
    `raw_data_storage_class` asks for one."""
    main = _main_store(settings)
    location, storage_class = settings.raw_data_location, settings.raw_data_storage_class
    if location is None and storage_class is None:
        return main
    tier: ObjectStore
    if location is not None and not location.startswith("s3://"):
        tier = LocalObjectStore(Path(location), secret_key=settings.key())
    else:
        bucket = location.removeprefix("s3://").rstrip("/") if location else None
        tier = _s3_store(settings, bucket=bucket, storage_class=storage_class)
    return TieredObjectStore(main, prefix=settings.raw_data_prefix, tier=tier)


def _main_store(settings: Settings) -> ObjectStore:
    if not settings.uses_s3:
        return LocalObjectStore(settings.home / "objects", secret_key=settings.key())
    return _s3_store(settings)


def _s3_store(
    settings: Settings, *, bucket: str | None = None, storage_class: str | None = None
) -> S3ObjectStore:
    if not (settings.s3_bucket and settings.s3_access_key and settings.s3_secret_key):
        raise ConfigurationError(
            "S3 storage needs VOXELHUB_S3_BUCKET, VOXELHUB_S3_ACCESS_KEY and "
            "VOXELHUB_S3_SECRET_KEY; set them all, or none for the local object store"
        )
    return S3ObjectStore(
        endpoint=settings.s3_endpoint,
        bucket=bucket or settings.s3_bucket,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
        storage_class=storage_class,
    )
