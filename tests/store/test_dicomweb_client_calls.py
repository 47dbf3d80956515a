"""Every call of dicomweb-client against a real server, on real files of every kind."""

from __future__ import annotations

import inspect

import httpx
import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from tests.store.conftest import ArchiveClient
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom

# Methods that talk to no server.
LOCAL = {"lookup_keyword", "lookup_tag", "set_chunk_size", "set_http_retry_params"}
# A compressed single frame, a multi-frame, an RGB image and a non-image object.
FILES = ["JPEG2000.dcm", "emri_small.dcm", "SC_rgb.dcm", "test-SR.dcm"]
PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8"


def _split(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The (content type, body) parts of a multipart/related response."""
    boundary = content_type.split("boundary=")[1].split(";", maxsplit=1)[0].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        head, _, part = chunk.strip(b"\r\n").partition(b"\r\n\r\n")
        kind = head.decode().split(":", 1)[1].strip()
        parts.append((kind, part))
    return parts


@pytest.fixture
def stored(make_archive) -> tuple[ArchiveClient, list[Dataset], list[Dataset]]:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    ct = ct_phantom(slices=3, size=32, patient=PatientInfo(patient_name="Calls^All"))
    files = [dcmread(get_testdata_file(name)) for name in FILES]
    response = archive.scoped.store_instances(ct)
    assert "FailedSOPSequence" not in response
    for ds in files:  # each file is a study of its own
        assert "FailedSOPSequence" not in archive.scoped.store_instances([ds])
    return archive, ct, files


def test_every_dicomweb_client_call_works(stored, live_server: str) -> None:  # type: ignore[no-untyped-def]
    archive, ct, files = stored
    client: DICOMwebClient = archive.scoped
    called: set[str] = set()

    def call(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        called.add(name)
        return getattr(client, name)(*args, **kwargs)

    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    middle = ct[1]
    mr = files[1]  # emri_small: 10 frames of 64x64 MR

    # QIDO-RS
    found = call("search_for_studies", search_filters={"PatientName": "calls*"})
    assert [s["0020000D"]["Value"][0] for s in found] == [study]
    assert len(call("search_for_series", study)) == 1
    assert len(call("search_for_instances", study, series)) == 3

    # WADO-RS: whole objects, as lists and as iterators
    assert sorted(ds.SOPInstanceUID for ds in call("retrieve_study", study)) == sorted(
        ds.SOPInstanceUID for ds in ct
    )
    assert len(list(call("iter_study", study))) == 3
    back = call("retrieve_series", study, series)
    assert {ds.SOPInstanceUID: ds.pixel_array.sum() for ds in back} == {
        ds.SOPInstanceUID: ds.pixel_array.sum() for ds in ct
    }
    assert len(list(call("iter_series", study, series))) == 3
    one = call(
        "retrieve_instance",
        mr.StudyInstanceUID,
        mr.SeriesInstanceUID,
        mr.SOPInstanceUID,
        media_types=(("application/dicom", EXPLICIT_VR_LITTLE_ENDIAN),),
    )
    assert np.array_equal(one.pixel_array, mr.pixel_array)

    # Metadata at every level
    assert len(call("retrieve_study_metadata", study)) == 3
    series_metadata = call("retrieve_series_metadata", study, series)
    assert len(series_metadata) == 3
    instance_metadata = call("retrieve_instance_metadata", study, series, middle.SOPInstanceUID)
    assert instance_metadata["00080018"]["Value"] == [middle.SOPInstanceUID]

    # Frames of a multi-frame instance, in native form
    mr_uids = (mr.StudyInstanceUID, mr.SeriesInstanceUID, mr.SOPInstanceUID)
    frames = call("retrieve_instance_frames", *mr_uids, frame_numbers=[2, 10])
    assert [np.frombuffer(f, "<i2").reshape(64, 64).tolist() for f in frames] == [
        mr.pixel_array[1].tolist(),
        mr.pixel_array[9].tolist(),
    ]
    assert len(list(call("iter_instance_frames", *mr_uids, frame_numbers=[1, 2, 3]))) == 3

    # Bulk data, by the BulkDataURI the metadata gives
    uri = live_server + instance_metadata["7FE00010"]["BulkDataURI"]
    bulk = call("retrieve_bulkdata", uri)
    assert b"".join(bulk) == middle.PixelData
    assert b"".join(call("iter_bulkdata", uri)) == middle.PixelData

    # Rendered instances, frames and series
    png = call("retrieve_instance_rendered", *mr_uids, media_types=("image/png",))
    assert png.startswith(PNG)
    jpeg = call(
        "retrieve_instance_frames_rendered",
        *mr_uids,
        frame_numbers=[5],
        media_types=("image/jpeg",),
        params={"quality": 80},
    )
    assert jpeg.startswith(JPEG)
    rendered = call("retrieve_series_rendered", study, series, media_types=("image/png",))
    assert rendered.count(PNG) == 3

    # Deletion at every level
    doc = files[3]
    call("delete_instance", doc.StudyInstanceUID, doc.SeriesInstanceUID, doc.SOPInstanceUID)
    rgb = files[2]
    call("delete_series", rgb.StudyInstanceUID, rgb.SeriesInstanceUID)
    call("delete_study", mr.StudyInstanceUID)
    left = {s["0020000D"]["Value"][0] for s in call("search_for_studies")}
    assert left == {study, files[0].StudyInstanceUID}

    call("store_instances", [doc])  # and stored again after deletion
    assert len(call("search_for_studies")) == 3

    everything = {
        name
        for name, _ in inspect.getmembers(DICOMwebClient, inspect.isfunction)
        if not name.startswith("_")
    }
    assert everything - LOCAL - called == set(), "a dicomweb-client call is not tried here"


def test_series_and_study_rendered_are_multipart(stored, live_server: str) -> None:  # type: ignore[no-untyped-def]
    archive, ct, files = stored
    headers = {"Authorization": f"Bearer {archive.owner.token}"}
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    base = f"{live_server}/dicom-web/archives/{archive.archive_id}/studies"

    response = httpx.get(
        f"{base}/{study}/series/{series}/rendered",
        params={"window": "40,400", "viewport": "16,16"},
        headers={**headers, "Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
    parts = _split(response.content, response.headers["content-type"])
    assert [kind for kind, _ in parts] == ["image/jpeg"] * 3
    assert all(body.startswith(JPEG) for _, body in parts)

    # A study: every frame of every image instance, here the 10 frames of one MR.
    mr = files[1]
    response = httpx.get(f"{base}/{mr.StudyInstanceUID}/rendered", headers=headers)
    assert response.status_code == 200
    parts = _split(response.content, response.headers["content-type"])
    # No Accept: JPEG, the default of PS3.18 Table 8.7.4-1.
    assert len(parts) == 10 and all(body.startswith(JPEG) for _, body in parts)

    # Nothing to render, a type that cannot be made, a malformed window: before any body.
    sr = files[3]
    nothing = httpx.get(f"{base}/{sr.StudyInstanceUID}/rendered", headers=headers)
    assert nothing.status_code == 400 and "no images" in nothing.text
    webp = httpx.get(f"{base}/{study}/rendered", headers={**headers, "Accept": "image/webp"})
    assert webp.status_code == 406 and "image/gif" in webp.text
    bad = httpx.get(f"{base}/{study}/rendered", params={"window": "nan,1"}, headers=headers)
    assert bad.status_code == 400 and "finite" in bad.text


def test_a_frame_list_renders_as_multipart(stored, live_server: str) -> None:  # type: ignore[no-untyped-def]
    # PS3.18 §10.4.1.1.3: rendered frames take a frame list, as frames do.
    archive, _, files = stored
    mr = files[1]
    headers = {"Authorization": f"Bearer {archive.owner.token}"}
    instance = (
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies/{mr.StudyInstanceUID}"
        f"/series/{mr.SeriesInstanceUID}/instances/{mr.SOPInstanceUID}"
    )
    jpeg_parts = {**headers, "Accept": 'multipart/related; type="image/jpeg"'}
    response = httpx.get(f"{instance}/frames/2,5,3/rendered", headers=jpeg_parts)
    assert response.status_code == 200
    parts = _split(response.content, response.headers["content-type"])
    assert [kind for kind, _ in parts] == ["image/jpeg"] * 3
    singles = [
        httpx.get(f"{instance}/frames/{n}/rendered", headers={**headers, "Accept": "image/jpeg"})
        for n in (2, 5, 3)
    ]
    assert [body for _, body in parts] == [single.content for single in singles]
    thumbnail = httpx.get(f"{instance}/frames/4,2/thumbnail", headers=headers)
    assert thumbnail.status_code == 200 and thumbnail.content.startswith(JPEG)
    for frames, message in [("1,11", "frame 11 does not exist"), ("1,x", "comma-separated")]:
        refused = httpx.get(f"{instance}/frames/{frames}/rendered", headers=headers)
        assert refused.status_code == 400 and message in refused.json()["message"], frames


def test_deleting_instances_keeps_counts_and_metadata_right(stored, runtime) -> None:  # type: ignore[no-untyped-def]
    archive, ct, _ = stored
    client: DICOMwebClient = archive.scoped
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    before = {info.key for info in runtime.store.list("imagesets/")}
    assert len(client.retrieve_series_metadata(study, series)) == 3  # the document is built

    client.delete_instance(study, series, ct[0].SOPInstanceUID)
    found = client.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert found[0]["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances
    assert client.search_for_series(study)[0]["00201209"]["Value"] == [2]
    metadata = client.retrieve_series_metadata(study, series)
    assert {m["00080018"]["Value"][0] for m in metadata} == {
        ct[1].SOPInstanceUID,
        ct[2].SOPInstanceUID,
    }
    gone = before - {info.key for info in runtime.store.list("imagesets/")}
    assert any(ct[0].SOPInstanceUID in key for key in gone)

    for ds in ct[1:]:
        client.delete_instance(study, series, ds.SOPInstanceUID)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    with pytest.raises(requests.HTTPError) as raised:
        client.retrieve_series_metadata(study, series)
    assert raised.value.response.status_code == 404
    left = {info.key for info in runtime.store.list("imagesets/")}
    assert not any(ds.SOPInstanceUID in key for ds in ct for key in left)
