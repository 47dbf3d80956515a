"""The raw-data tier on a store of its own: keys under the raw prefix live on another disk or
bucket (or S3 storage class), the rest on the main store, and callers see one store."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import SECRET, Account
from tests.fixtures.seaweed import SeaweedS3
from tests.ingest.helpers import upload
from voxelhub.api import build_app
from voxelhub.archives import values_service
from voxelhub.archives.models import Case, CaseValue
from voxelhub.core.db import session_scope
from voxelhub.core.errors import ConfigurationError
from voxelhub.core.objects import (
    LocalObjectStore,
    ObjectNotFound,
    S3ObjectStore,
    TieredObjectStore,
    open_store,
)
from voxelhub.core.runtime import Runtime
from voxelhub.core.settings import Settings, load_settings
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.phantom import PhantomSpec, simulate


@pytest.fixture
def stores(tmp_path: Path) -> tuple[LocalObjectStore, LocalObjectStore, TieredObjectStore]:
    main = LocalObjectStore(tmp_path / "main", secret_key=SECRET)
    cold = LocalObjectStore(tmp_path / "cold", secret_key=SECRET)
    return main, cold, TieredObjectStore(main, prefix="raw", tier=cold)


def test_keys_under_the_prefix_live_on_the_tier(stores) -> None:  # type: ignore[no-untyped-def]
    main, cold, store = stores
    store.put("raw/a/knee.h5", b"k-space")
    store.put("archives/a/image.mha", b"pixels")
    store.put("rawish/x", b"not the tier: only 'raw/' is")

    assert cold.get("raw/a/knee.h5") == b"k-space" and not main.exists("raw/a/knee.h5")
    assert main.get("archives/a/image.mha") == b"pixels" and not cold.exists("archives/a/image.mha")
    assert main.exists("rawish/x")
    assert store.get("raw/a/knee.h5") == b"k-space"
    assert b"".join(store.stream("raw/a/knee.h5", chunk_size=3)) == b"k-space"
    assert store.get_range("raw/a/knee.h5", 2, 5) == b"spa"
    assert store.stat("raw/a/knee.h5").size == 7
    assert [info.key for info in store.list()] == [
        "archives/a/image.mha",
        "raw/a/knee.h5",
        "rawish/x",
    ]
    assert [info.key for info in store.list("raw/")] == ["raw/a/knee.h5"]
    assert [info.key for info in store.list("archives/")] == ["archives/a/image.mha"]

    assert store.delete_prefix("raw/") == 1
    assert not store.exists("raw/a/knee.h5")
    with pytest.raises(ObjectNotFound):
        store.get("raw/a/knee.h5")
    store.check()


def test_objects_written_before_the_tier_stay_readable(stores) -> None:  # type: ignore[no-untyped-def]
    main, cold, store = stores
    main.put("raw/old/knee.h5", b"from before")
    store.put("raw/new/knee.h5", b"after")

    assert store.exists("raw/old/knee.h5")
    assert store.get("raw/old/knee.h5") == b"from before"
    assert store.holder("raw/old/knee.h5") is main
    assert store.holder("raw/new/knee.h5") is cold
    assert [info.key for info in store.list("raw/")] == ["raw/new/knee.h5", "raw/old/knee.h5"]
    assert "/objects/raw/old/knee.h5" in store.signed_url("raw/old/knee.h5", expires_in=60)

    store.delete("raw/old/knee.h5")
    assert not main.exists("raw/old/knee.h5")


def _settings(tmp_path: Path, **values: object) -> Settings:
    return load_settings(home=tmp_path / "home", secret_key=SECRET, **values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"raw_data_location": "cold/raw"}, "neither s3://BUCKET nor an absolute folder"),
        ({"raw_data_location": "s3://Bad_Bucket"}, "does not name an S3 bucket"),
        ({"raw_data_location": "s3://cold-raw"}, "the main object store is local"),
        ({"raw_data_storage_class": "STANDARD_IA"}, "applies to S3 only"),
        (
            {"raw_data_location": "/mnt/cold", "raw_data_storage_class": "GLACIER_IR"},
            "applies to S3 only",
        ),
    ],
)
def test_a_tier_that_cannot_work_is_refused_with_the_fix(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _settings(tmp_path, **values)


def test_open_store_builds_the_tier_the_settings_name(tmp_path: Path) -> None:
    assert isinstance(open_store(_settings(tmp_path)), LocalObjectStore)
    store = open_store(_settings(tmp_path, raw_data_location=str(tmp_path / "cold")))
    assert isinstance(store, TieredObjectStore) and isinstance(store.tier, LocalObjectStore)
    assert store.tier.root == tmp_path / "cold" and store.prefix == "raw/"


@pytest.mark.slow
def test_raw_data_goes_to_its_own_bucket_and_storage_class(
    tmp_path: Path, seaweed_s3: SeaweedS3
) -> None:
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    settings = _settings(
        tmp_path,
        s3_endpoint=seaweed_s3.endpoint,
        s3_bucket=bucket,
        s3_access_key=seaweed_s3.access_key,
        s3_secret_key=seaweed_s3.secret_key,
        s3_region=seaweed_s3.region,
        raw_data_location=f"s3://{bucket}-raw",
        raw_data_storage_class="STANDARD_IA",
    )
    store = open_store(settings)
    assert isinstance(store, TieredObjectStore)
    assert isinstance(store.main, S3ObjectStore) and isinstance(store.tier, S3ObjectStore)
    store.put("raw/a/knee.h5", io.BytesIO(b"k-space"))
    store.put("archives/a/image.mha", b"pixels")

    tier_client = store.tier.client
    head = tier_client.head_object(Bucket=f"{bucket}-raw", Key="raw/a/knee.h5")
    assert head.get("StorageClass", "STANDARD") == "STANDARD_IA"
    assert not store.main.exists("raw/a/knee.h5")
    assert store.get("raw/a/knee.h5") == b"k-space"
    assert [info.key for info in store.list()] == ["archives/a/image.mha", "raw/a/knee.h5"]
    assert store.delete_prefix("raw/") + store.delete_prefix("archives/") == 2


@pytest.fixture
def cold_runtime(tmp_path: Path, database_url: str) -> Runtime:
    settings = load_settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key=SECRET,
        raw_data_location=str(tmp_path / "cold"),
    )
    return Runtime(settings=settings, database_url=database_url, store=open_store(settings))


@pytest.fixture
def cold_client(cold_runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(build_app(cold_runtime), client=("127.0.0.1", 50000)) as test_client:
        yield test_client


def test_uploaded_kspace_lands_in_the_configured_location(  # type: ignore[no-untyped-def]
    cold_client: TestClient, cold_runtime: Runtime, make_user, database_url: str, tmp_path: Path
) -> None:
    user: Account = make_user("physicist")
    headers = user.headers
    archive = cold_client.post("/api/v1/archives", json={"name": "Raw"}, headers=headers).json()
    acquisition = simulate(
        PhantomSpec(readout=64, phase_encode=48, coils=4, slices=2, acceleration=3, acs_lines=12),
        seed=5,
    )
    source = tmp_path / "knee.h5"
    write_fastmri(source, acquisition.kspace)
    report = upload(cold_client, user, uuid.UUID(archive["id"]), {"knee.h5": source.read_bytes()})
    assert report["files"][0]["outcome"] == "stored", report

    with session_scope(database_url) as db:
        value = db.scalars(select(CaseValue).where(CaseValue.interface == "kspace")).one()
        key, case_id = value.object_keys[0], value.case_id
    assert (tmp_path / "cold" / key).is_file()
    assert not (tmp_path / "home" / "objects" / key).exists()

    link = cold_client.get(
        f"/api/v1/archives/{archive['id']}/cases/{case_id}/values/kspace/download",
        params={"redirect": "false"},
        headers=headers,
    )
    assert link.status_code == 200, link.text
    downloaded = cold_client.get(link.json()["url"])
    assert downloaded.status_code == 200
    assert downloaded.content == (tmp_path / "cold" / key).read_bytes()

    with session_scope(database_url) as db:
        case = db.get(Case, case_id)
        assert case is not None
        values_service.delete_case(db, cold_runtime.store, case)
    assert not (tmp_path / "cold" / key).exists()
