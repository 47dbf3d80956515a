"""WADO-RS frame requests: bytes, permissions, deletion and the audit trail, request by request."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from sqlalchemy import func, select

from tests.conftest import Account, stow
from voxelhub.auth.models import AuditEvent
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.model import HTJ2K_LOSSLESS
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.imagesets import read_frames
from voxelhub.store.models import Instance

AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
NATIVE = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(part Content-Type, body) of a multipart/related response."""
    boundary = re.search(r"boundary=([^;\s]+)", response.headers["content-type"])
    assert boundary is not None, response.headers["content-type"]
    delimiter = b"--" + boundary.group(1).encode()
    parts = []
    for chunk in response.content.split(delimiter)[1:-1]:
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content_type = head.decode().partition(":")[2].strip()
        parts.append((content_type, body.removesuffix(b"\r\n")))
    return parts


def _frames_url(ds, archive_id: str | None = None) -> str:  # type: ignore[no-untyped-def]
    base = "/dicom-web" + (f"/archives/{archive_id}" if archive_id else "")
    return (
        f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames"
    )


def _frame_reads(database_url: str) -> int:
    with session_scope(database_url) as db:
        count = db.scalar(select(func.count()).where(AuditEvent.action == "dicom.frames"))
        return int(count or 0)


@pytest.fixture
def owner(make_user) -> Account:  # type: ignore[no-untyped-def]
    return make_user("owner")


def _archive(client: TestClient, owner: Account, name: str = "CT") -> str:
    response = client.post("/api/v1/archives", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    archive_id: str = response.json()["id"]
    return archive_id


def _stored(client: TestClient, owner: Account, *, slices: int) -> tuple[list[Dataset], str]:
    """A small CT series stored by `owner` in a new archive, and that archive's id."""
    series = ct_phantom(slices=slices, size=32)
    archive_id = _archive(client, owner)
    stow(client, owner, archive_id, series)
    return series, archive_id


def test_frames_are_the_stored_bytes_or_the_original_pixels(
    client: TestClient, owner: Account, runtime: Runtime, database_url: str
) -> None:
    original = dcmread(get_testdata_file("emri_small.dcm"))  # 10 native frames
    archive_id = _archive(client, owner)
    stow(client, owner, archive_id, [original])
    with session_scope(database_url) as db:
        instance = db.scalars(select(Instance)).one()
        stored = read_frames(runtime.store, instance, [2, 7, 10])
    frame_bytes = len(original.PixelData) // 10

    for url in (_frames_url(original), _frames_url(original, archive_id)):
        as_stored = client.get(f"{url}/2,7,10", headers={**owner.headers, "Accept": AS_STORED})
        assert as_stored.status_code == 200, as_stored.text
        parts = _parts(as_stored)
        assert [body for _, body in parts] == stored
        assert all(f"transfer-syntax={HTJ2K_LOSSLESS}" in kind for kind, _ in parts)
        # The body's type is its parts' (RFC 2387), not the octets asked for.
        assert 'multipart/related; type="image/jphc"' in as_stored.headers["content-type"]

        native = client.get(f"{url}/7,2", headers={**owner.headers, "Accept": NATIVE})
        assert native.status_code == 200, native.text
        assert 'type="application/octet-stream"' in native.headers["content-type"]
        assert [body for _, body in _parts(native)] == [
            original.PixelData[6 * frame_bytes : 7 * frame_bytes],
            original.PixelData[1 * frame_bytes : 2 * frame_bytes],
        ]


def test_lossless_jpeg_2000_comes_back_as_it_came(client: TestClient, owner: Account) -> None:
    original = dcmread(get_testdata_file("US1_J2KR.dcm"))
    archive_id = _archive(client, owner)
    stow(client, owner, archive_id, [original])
    response = client.get(
        f"{_frames_url(original)}/1", headers={**owner.headers, "Accept": AS_STORED}
    )
    assert response.status_code == 200, response.text
    [(kind, body)] = _parts(response)
    assert kind == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"  # kept as it came
    assert body == next(generate_frames(original.PixelData, number_of_frames=1))


def test_every_frame_read_is_audited_and_failed_ones_are_not(
    client: TestClient, owner: Account, database_url: str
) -> None:
    series, archive_id = _stored(client, owner, slices=2)
    url = _frames_url(series[0])
    headers = {**owner.headers, "Accept": AS_STORED}

    before = _frame_reads(database_url)
    assert client.get(f"{url}/1", headers=headers).status_code == 200
    assert client.get(f"{_frames_url(series[1], archive_id)}/1", headers=headers).status_code == 200
    assert _frame_reads(database_url) == before + 2

    too_far = client.get(f"{url}/2", headers=headers)
    assert too_far.status_code == 400
    assert "has 1 frame(s)" in too_far.text
    assert client.get(f"{url}/0", headers=headers).status_code == 400
    assert client.get(f"{url}/x", headers=headers).status_code == 400
    missing = url.replace(series[0].SOPInstanceUID, "1.2.3.4")
    assert client.get(f"{missing}/1", headers=headers).status_code == 404
    assert _frame_reads(database_url) == before + 2

    with session_scope(database_url) as db:
        event = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "dicom.frames")
            .order_by(AuditEvent.id.desc())
        ).first()
        assert event is not None
        assert (event.user_id, event.username) == (owner.id, owner.username)
        assert (event.object_type, event.object_id) == ("dicomweb", series[1].SOPInstanceUID)


@pytest.mark.parametrize("role", ["viewer", "uploader", "editor"])
def test_a_role_granted_or_revoked_takes_effect_on_the_next_request(
    client: TestClient, owner: Account, make_user, role: str
) -> None:  # type: ignore[no-untyped-def]
    series, archive_id = _stored(client, owner, slices=1)
    reader: Account = make_user("reader")
    headers = {**reader.headers, "Accept": AS_STORED}
    unscoped, scoped = _frames_url(series[0]), _frames_url(series[0], archive_id)

    assert client.get(f"{unscoped}/1", headers=headers).status_code == 404
    hidden = client.get(f"{scoped}/1", headers=headers)
    assert hidden.status_code == 404
    assert "no archive" in hidden.text

    members = f"/api/v1/archives/{archive_id}/members"
    granted = client.put(members, json={"username": "reader", "role": role}, headers=owner.headers)
    assert granted.status_code == 200, granted.text
    assert client.get(f"{unscoped}/1", headers=headers).status_code == 200
    assert client.get(f"{scoped}/1", headers=headers).status_code == 200

    assert client.delete(f"{members}/reader", headers=owner.headers).status_code == 204
    assert client.get(f"{unscoped}/1", headers=headers).status_code == 404
    assert client.get(f"{scoped}/1", headers=headers).status_code == 404


def test_admins_read_every_archive_and_anonymous_callers_none(
    client: TestClient, owner: Account, admin: Account
) -> None:
    series, archive_id = _stored(client, owner, slices=1)
    url = _frames_url(series[0], archive_id)
    assert client.get(f"{url}/1", headers={**admin.headers, "Accept": AS_STORED}).status_code == 200
    assert client.get(f"{url}/1", headers={"Accept": AS_STORED}).status_code == 401
    bad = client.get(url.replace(archive_id, "not-an-id") + "/1", headers=owner.headers)
    assert bad.status_code == 400


def test_a_deleted_series_is_gone_on_the_next_request(client: TestClient, owner: Account) -> None:
    series, archive_id = _stored(client, owner, slices=2)
    ds = series[0]
    headers = {**owner.headers, "Accept": AS_STORED}
    assert client.get(f"{_frames_url(ds)}/1", headers=headers).status_code == 200
    deleted = client.delete(
        f"/dicom-web/archives/{archive_id}/studies/{ds.StudyInstanceUID}"
        f"/series/{ds.SeriesInstanceUID}",
        headers=owner.headers,
    )
    assert deleted.status_code == 204
    assert client.get(f"{_frames_url(ds)}/1", headers=headers).status_code == 404
    assert client.get(f"{_frames_url(ds, archive_id)}/1", headers=headers).status_code == 404


@pytest.mark.parametrize("name", ["emri_small.dcm", "liver.dcm", "SC_rgb_small_odd.dcm"])
def test_uncompressed_pixel_bulk_data_is_its_whole_value_in_one_part(
    client: TestClient, owner: Account, name: str
) -> None:
    # 10 frames of 16 bits, 3 frames of 1 bit packed across frames, 27 bytes padded to 28.
    original = dcmread(get_testdata_file(name))
    stow(client, owner, _archive(client, owner), [original])
    url = _frames_url(original).removesuffix("/frames") + "/bulk/7FE00010"
    for accept in (NATIVE, 'multipart/related; type="application/octet-stream"'):
        response = client.get(url, headers={**owner.headers, "Accept": accept})
        assert response.status_code == 200, response.text
        [(kind, body)] = _parts(response)
        assert kind.startswith("application/octet-stream")
        assert body == original.PixelData


def test_compressed_pixel_bulk_data_is_a_part_per_frame(client: TestClient, owner: Account) -> None:
    original = dcmread(get_testdata_file("SC_rgb_rle_16bit_2frame.dcm"))
    stow(client, owner, _archive(client, owner), [original])
    url = _frames_url(original).removesuffix("/frames") + "/bulk/7FE00010"
    response = client.get(url, headers={**owner.headers, "Accept": AS_STORED})
    assert response.status_code == 200, response.text
    parts = _parts(response)
    assert [body for _, body in parts] == list(
        generate_frames(original.PixelData, number_of_frames=2)
    )
