"""A bundle whose trigger matches a series still arriving is started ahead of its job."""

from __future__ import annotations

import io
import json
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Account, needs_bwrap, stow
from tests.segment.bundles import SPLEEN_METADATA, spleen_inference, spleen_network, write_bundle
from voxelhub.algorithms import service, triggers
from voxelhub.algorithms.warm import WarmBundles
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.segment.synthetic import ct_case, dicom_series

pytestmark = [
    pytest.mark.slow,
    needs_bwrap,
]
SPEC = {
    "kind": "package",
    "inputs": [{"interface": "ct", "kind": "dicom_series"}],
    "outputs": [{"interface": "volumes", "kind": "json"}],
    "resources": {"memory_mb": 4096, "time_limit_s": 300},
}


@pytest.fixture
def bundles(monkeypatch: pytest.MonkeyPatch) -> Iterator[WarmBundles]:
    from voxelhub.algorithms import warm

    fresh = WarmBundles(capacity=2)
    monkeypatch.setattr(warm, "_warm", fresh)
    yield fresh
    fresh.close()


def bundle_zip() -> bytes:
    channels = [4, 8, 16]
    with tempfile.TemporaryDirectory() as scratch:
        root = write_bundle(
            Path(scratch) / "spleen",
            SPLEEN_METADATA,
            spleen_inference(channels=channels, roi=32),
            spleen_network(channels),
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    archive.write(path, f"spleen/{path.relative_to(root)}")
        return buffer.getvalue()


def setup_trigger(
    client: TestClient, runtime: Runtime, user: Account, modality: str
) -> tuple[str, str]:
    """An archive with a trigger of a bundle algorithm; its id and the package's key."""
    slug = f"spleen-{uuid.uuid4().hex[:6]}"
    client.post("/api/v1/algorithms", json={"slug": slug, "title": slug}, headers=user.headers)
    version = client.post(
        f"/api/v1/algorithms/{slug}/versions",
        data={"spec": json.dumps(SPEC)},
        files={"file": ("bundle.zip", bundle_zip())},
        headers=user.headers,
    )
    assert version.status_code == 201, version.text
    archive_id = client.post("/api/v1/archives", json={"name": slug}, headers=user.headers).json()[
        "id"
    ]
    made = client.post(
        f"/api/v1/archives/{archive_id}/triggers",
        json={"algorithm": slug, "input_interface": "ct", "modality": modality},
        headers=user.headers,
    )
    assert made.status_code == 201, made.text
    with session_scope(runtime.database_url) as db:
        version = service.latest_version(db, service.get_algorithm(db, slug))
        assert version is not None
        return archive_id, str(version.package_key)


def evaluate(runtime: Runtime, sent: list[uuid.UUID]) -> int:
    with session_scope(runtime.database_url) as db:
        return triggers.evaluate(
            db, runtime.store, lambda job_id, _q, _p: sent.append(job_id), prewarm=True
        )


def test_an_arriving_series_starts_its_bundle_before_the_trigger_fires(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    bundles: WarmBundles,
) -> None:
    user: Account = make_user("radiologist")
    archive_id, key = setup_trigger(client, runtime, user, "CT")
    case = ct_case(shape=(8, 24, 24), seed=5)
    stow(client, user, archive_id, dicom_series(case.image, case.geometry))

    sent: list[uuid.UUID] = []
    assert evaluate(runtime, sent) == 0 and not sent, "the series has not settled yet"
    deadline = time.monotonic() + 240
    started: list[str] = []
    while key not in started and time.monotonic() < deadline:
        time.sleep(0.2)
        started = bundles.keys()
    assert key in started and bundles.starts == 1, "the bundle started ahead"
    while bundles._starting and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a process tied to the ended start thread would be gone by now
    assert bundles._bundles[key].alive, "the process outlives the thread that started it"
    while not sent and time.monotonic() < deadline:
        time.sleep(0.5)
        evaluate(runtime, sent)
    assert len(sent) == 1, "the settled series fires the trigger once"
    evaluate(runtime, sent)
    assert bundles.starts == 1 and len(sent) == 1, "nothing arriving: nothing more started"


def test_a_series_the_rule_refuses_starts_nothing(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    bundles: WarmBundles,
) -> None:
    user: Account = make_user("radiologist")
    archive_id, _ = setup_trigger(client, runtime, user, "MR")
    case = ct_case(shape=(8, 24, 24), seed=6)
    stow(client, user, archive_id, dicom_series(case.image, case.geometry))
    evaluate(runtime, [])
    assert bundles.starts == 0 and not bundles._starting, "a CT does not start an MR bundle"
