"""`voxelhub verify`: every stored frame read back and decoded; the damaged ones listed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select
from typer.testing import CliRunner

from tests.store.conftest import to_bytes
from voxelhub.archives import service as archives
from voxelhub.auth.service import Principal
from voxelhub.cli import app
from voxelhub.core.db import session_scope
from voxelhub.core.objects import LocalObjectStore
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store import verify
from voxelhub.store.ingest import Ingest, Stored
from voxelhub.store.models import Instance
from voxelhub.store.verify import verify_imagesets

# Compressed (JPEG baseline and lossless, JPEG-LS, JPEG 2000, RLE), multi-frame, colour and
# 1-bit segmentation files, besides the ones stored as HTJ2K.
TEST_FILES = (
    "CT_small.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "emri_small.dcm",
    "SC_rgb_rle_2frame.dcm",
    "liver.dcm",
)

runner = CliRunner()


def _store(runtime: Runtime, make_user, name: str, bodies: list[bytes]) -> uuid.UUID:  # type: ignore[no-untyped-def]
    owner = make_user()
    principal = Principal(user_id=owner.id, username=owner.username, is_admin=False, via="token")
    with session_scope(runtime.database_url) as db:
        archive_id = archives.create_archive(db, principal, name).id
    with session_scope(runtime.database_url) as db:
        ingest = Ingest(db, runtime.store, archive_id)
        outcomes = ingest.add_many([split_instance(body) for body in bodies])
        ingest.finish()
    assert all(isinstance(o, Stored) for o in outcomes), outcomes
    return archive_id


def _object(runtime: Runtime, sop_instance_uid: str) -> tuple[Path, list[int]]:
    with session_scope(runtime.database_url) as db:
        row = db.scalars(
            select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
        ).one()
        key, offsets = row.object_key, list(row.frame_offsets)
    assert isinstance(runtime.store, LocalObjectStore)
    return runtime.store.path_of(key), offsets


def test_intact_files_of_every_kind_pass(runtime: Runtime, make_user) -> None:  # type: ignore[no-untyped-def]
    datasets = [dcmread(get_testdata_file(name)) for name in TEST_FILES]
    for ds in datasets:  # some files are one instance in several syntaxes
        ds.SOPInstanceUID = generate_uid()
    _store(runtime, make_user, "Kinds", [to_bytes(ds) for ds in datasets])
    with session_scope(runtime.database_url) as db:
        result = verify_imagesets(db, runtime.store)
    assert result.damaged == []
    assert result.instances == len(TEST_FILES)
    assert result.frames == len(TEST_FILES) + 9 + 1 + 2  # 10, 2 and 3 frames in three files


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("at_once", [verify._READ_AT_ONCE_BYTES, 0], ids=["whole", "by-frame"])
def test_damaged_truncated_and_missing_objects_are_listed(  # type: ignore[no-untyped-def]
    runtime: Runtime, make_user, monkeypatch: pytest.MonkeyPatch, at_once: int
) -> None:
    monkeypatch.setattr(verify, "_READ_AT_ONCE_BYTES", at_once)
    series = ct_phantom(slices=5, size=64)
    uids = [str(ds.SOPInstanceUID) for ds in series]
    _store(runtime, make_user, "CT", [to_bytes(ds) for ds in series])
    other = _store(runtime, make_user, "Other", [to_bytes(ds) for ds in ct_phantom(slices=2)])

    # An HTJ2K frame whose codestream header is overwritten, one cut short, one gone. (Damage
    # inside the coded data can decode to other values of the right size: not detectable.)
    path, offsets = _object(runtime, uids[1])
    data = bytearray(path.read_bytes())
    data[offsets[0] : offsets[0] + 48] = bytes(range(48))
    path.write_bytes(bytes(data))
    path, offsets = _object(runtime, uids[2])
    path.write_bytes(path.read_bytes()[: offsets[1] - 10])
    _object(runtime, uids[3])[0].unlink()

    result = runner.invoke(app, ["verify", "--archive", "CT"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("damaged:")]
    assert len(lines) == 3, result.output
    damaged = {uid: line for line in lines for uid in uids if uid in line}
    assert set(damaged) == {uids[1], uids[2], uids[3]}
    assert "does not decode" in damaged[uids[1]] or "decodes to" in damaged[uids[1]]
    assert "ends early" in damaged[uids[2]]
    assert "missing from the store" in damaged[uids[3]]
    assert "5 instances, 4 frames read and decoded; 3 damaged" in result.output

    # The other archive is intact; unknown names are refused.
    with session_scope(runtime.database_url) as db:
        assert verify_imagesets(db, runtime.store, archive_id=other).damaged == []
    assert runner.invoke(app, ["verify", "--archive", "Other"]).exit_code == 0
    unknown = runner.invoke(app, ["verify", "--archive", "Nope"])
    assert unknown.exit_code == 2 and "no archive named 'Nope'" in unknown.output
