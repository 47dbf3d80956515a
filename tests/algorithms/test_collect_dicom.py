"""DICOM outputs of an algorithm: stored, and described by the case value truthfully."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from tests.conftest import Account
from voxelhub.algorithms.io import collect
from voxelhub.archives import values_service
from voxelhub.archives.models import Case
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import ct_phantom


def test_an_output_of_several_series_is_described_by_its_first_alone(
    client: TestClient,
    runtime: Runtime,
    make_user,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    # Two echoes of an MR reconstruction, say: 2 and 3 slices, one study.
    account: Account = make_user("writer")
    archive_id = client.post(
        "/api/v1/archives", json={"name": "Out"}, headers=account.headers
    ).json()["id"]
    made = client.post(
        f"/api/v1/archives/{archive_id}/cases", json={"title": "c"}, headers=account.headers
    ).json()
    study = generate_uid()
    folder = tmp_path / "images"
    folder.mkdir()
    uids = sorted(generate_uid() for _ in range(2))
    for uid, count, description in ((uids[1], 3, "echo 2"), (uids[0], 2, "echo 1")):
        for index, ds in enumerate(ct_phantom(slices=count, size=8)):
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, uid
            ds.SeriesDescription = description
            (folder / f"{description}-{index}.dcm").write_bytes(write_part10(ds))
    with session_scope(runtime.database_url) as db:
        case = db.get(Case, uuid.UUID(made["id"]))
        assert case is not None
        out = collect(
            db,
            runtime.store,
            case,
            algorithm="recon",
            outputs=[{"interface": "images", "kind": "dicom_series"}],
            output_dir=tmp_path,
        )
        value = values_service.get_value(db, case, "recon.images").value
    assert out["images"]["series_instance_uids"] == uids
    assert value["series_instance_uid"] == uids[0]
    assert value["number_of_instances"] == 2
    assert value["series_description"] == "echo 1"
