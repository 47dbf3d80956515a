"""The raw-data tier: uploaded k-space is kept losslessly compressed under its own object-store
prefix; unusable files in the same upload are refused one by one, the rest stored."""

from __future__ import annotations

import io
import uuid
import zipfile
from pathlib import Path

import h5py
import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import Account
from tests.ingest.helpers import by_outcome, upload
from voxelhub.archives import values_service
from voxelhub.archives.models import Case, CaseValue
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.phantom import PhantomSpec, simulate
from voxelhub.recon.repack import same_content


def _kspace_file(path: Path) -> bytes:
    acquisition = simulate(
        PhantomSpec(readout=64, phase_encode=48, coils=4, slices=2, acceleration=3, acs_lines=12),
        seed=5,
    )
    write_fastmri(path, acquisition.kspace)
    return path.read_bytes()


def _single_coil_3d(path: Path) -> bytes:
    with h5py.File(path, "w") as handle:
        handle.create_dataset("kspace", data=np.ones((2, 64), np.complex64))
    return path.read_bytes()


def test_raw_kspace_is_kept_compressed_in_its_own_tier(  # type: ignore[no-untyped-def]
    client: TestClient, make_user, runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    user: Account = make_user("physicist")
    archive = client.post("/api/v1/archives", json={"name": "Raw"}, headers=user.headers).json()
    original = tmp_path / "knee.h5"
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive_zip:
        archive_zip.writestr("scans/knee.h5", _kspace_file(original))
        archive_zip.writestr("scans/readme.txt", "acquired on the 3T")
        archive_zip.writestr("scans/broken.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)
        archive_zip.writestr("scans/flat.h5", _single_coil_3d(tmp_path / "flat.h5"))
    report = upload(client, user, uuid.UUID(archive["id"]), {"scans.zip": bundle.getvalue()})
    outcomes = by_outcome(report)
    inside = "scans.zip/scans/"
    assert [f["path"] for f in outcomes["stored"]] == [inside + "knee.h5"]
    reasons = {f["path"]: f["reason"] for f in report["files"] if f["outcome"] != "stored"}
    assert "cannot be read" in reasons[inside + "broken.h5"]
    assert "expected slices x coils x readout x phase-encode" in reasons[inside + "flat.h5"]
    assert reasons[inside + "readme.txt"]

    with session_scope(database_url) as db:
        value = db.scalars(select(CaseValue).where(CaseValue.interface == "kspace")).one()
        key = value.object_keys[0]
        case = db.get(Case, value.case_id)
        assert case is not None
    assert key.startswith(f"raw/{archive['id']}/")
    stored = tmp_path / "stored.h5"
    stored.write_bytes(runtime.store.get(key))
    assert same_content(original, stored)
    assert stored.stat().st_size < original.stat().st_size  # two of three lines are zeros

    again = upload(client, user, uuid.UUID(archive["id"]), {"knee.h5": original.read_bytes()})
    assert again["files"][0]["outcome"] in ("stored", "duplicate")

    with session_scope(database_url) as db:
        case = db.get(Case, value.case_id)
        assert case is not None
        values_service.delete_case(db, runtime.store, case)
    assert not runtime.store.exists(key)
