"""A trigger waits while a store request into its archive is still in flight."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.conftest import Account
from tests.jobs.conftest import stow
from voxelhub.algorithms import triggers
from voxelhub.core.db import session_scope, utcnow
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store import ingest_guard
from voxelhub.store.models import Series

pytestmark = pytest.mark.usefixtures("builtins_registered")


def test_trigger_waits_for_a_store_request_in_flight(
    client: TestClient, runtime: Runtime, make_user
) -> None:  # type: ignore[no-untyped-def]
    user: Account = make_user("rad")
    archive = client.post("/api/v1/archives", json={"name": "Busy"}, headers=user.headers).json()
    made = client.post(
        f"/api/v1/archives/{archive['id']}/triggers",
        json={"algorithm": "series-statistics", "input_interface": "image", "modality": "CT"},
        headers=user.headers,
    )
    assert made.status_code == 201, made.text
    stow(client, user, archive["id"], ct_phantom(slices=3, size=16))
    with session_scope(runtime.database_url) as db:  # quiet for longer than the settle time
        db.execute(update(Series).values(updated_at=utcnow() - timedelta(seconds=30)))

    sent: list[uuid.UUID] = []
    archive_id = uuid.UUID(archive["id"])
    with session_scope(runtime.database_url) as busy:  # the next part of it is arriving
        ingest_guard.hold_during_transaction(busy, archive_id)
        with session_scope(runtime.database_url) as db:
            assert ingest_guard.in_flight(db, archive_id)
            assert triggers.evaluate(db, runtime.store, lambda j, q, p: sent.append(j)) == 0
    with session_scope(runtime.database_url) as db:
        assert not ingest_guard.in_flight(db, archive_id)
        assert triggers.evaluate(db, runtime.store, lambda j, q, p: sent.append(j)) == 1
    assert len(sent) == 1
