"""WADO-URI (PS3.18 §9): objects by their UIDs in the query string, as files or images."""

from __future__ import annotations

import io

import httpx
import imagecodecs
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.store.conftest import ArchiveClient
from voxelhub.dicom.model import HTJ2K_LOSSLESS


@pytest.fixture
def stored(make_archive, live_server: str):  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    files = {
        name: dcmread(get_testdata_file(name, download=False))
        for name in ("CT_small.dcm", "emri_small.dcm", "test-SR.dcm")
    }
    archive.scoped.store_instances(list(files.values()))
    auth = {"Authorization": f"Bearer {archive.owner.token}"}

    def get(name: str, scoped: bool = False, **params: str) -> httpx.Response:
        ds = files[name]
        query = {
            "requestType": "WADO",
            "studyUID": ds.StudyInstanceUID,
            "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID,
            **params,
        }
        base = f"{live_server}/wado" + (f"/archives/{archive.archive_id}" if scoped else "")
        return httpx.get(base, params=query, headers=auth, timeout=60)

    return files, get, archive


def _image(response: httpx.Response, media: str) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    if media == "image/png":
        return np.asarray(imagecodecs.png_decode(response.content))
    return np.asarray(imagecodecs.jpeg8_decode(response.content))


def test_the_file_comes_back_whole(stored) -> None:  # type: ignore[no-untyped-def]
    files, get, _ = stored
    for name, original in files.items():
        for scoped in (False, True):
            answer = get(name, scoped, contentType="application/dicom")
            assert answer.status_code == 200, answer.text
            back = dcmread(io.BytesIO(answer.content))
            assert back.SOPInstanceUID == original.SOPInstanceUID
            assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            if "PixelData" in original:
                assert np.array_equal(back.pixel_array, original.pixel_array)
    # As stored (HTJ2K here), and a syntax the frames cannot be sent in refused with 406.
    as_stored = get("CT_small.dcm", contentType="application/dicom", transferSyntax="*")
    assert dcmread(io.BytesIO(as_stored.content)).file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    refused = get("CT_small.dcm", contentType="application/dicom", transferSyntax="1.2.3")
    assert refused.status_code == 406
    # A structured report has no image: without a contentType its file is sent.
    report = get("test-SR.dcm")
    assert report.headers["content-type"].startswith("application/dicom")
    assert get("test-SR.dcm", contentType="image/jpeg").status_code == 400


def test_images_are_rendered_as_asked(stored) -> None:  # type: ignore[no-untyped-def]
    _, get, _ = stored
    default = _image(get("CT_small.dcm"), "image/jpeg")
    assert default.shape == (128, 128)
    png = _image(get("CT_small.dcm", contentType="image/png"), "image/png")
    assert png.shape == (128, 128)
    assert _image(get("CT_small.dcm", contentType="image/png", rows="64"), "image/png").shape == (
        64,
        64,
    )
    half = get("CT_small.dcm", contentType="image/png", region="0,0,0.5,0.25")
    assert _image(half, "image/png").shape == (32, 64)
    assert np.array_equal(_image(half, "image/png"), png[:32, :64])
    narrow = get("CT_small.dcm", contentType="image/png", windowCenter="40", windowWidth="80")
    assert not np.array_equal(_image(narrow, "image/png"), png)
    # Frame 5 of a 10-frame MR is not frame 1.
    first = _image(get("emri_small.dcm", contentType="image/png"), "image/png")
    fifth = _image(get("emri_small.dcm", contentType="image/png", frameNumber="5"), "image/png")
    assert first.shape == fifth.shape and not np.array_equal(first, fifth)


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"requestType": "OTHER"}, 400, "requestType=WADO"),
        ({"objectUID": ""}, 400, "objectUID"),
        ({"objectUID": "1.2.3.4"}, 404, "1.2.3.4"),
        ({"frameNumber": "11"}, 400, "frameNumber must be a whole number from 1 to 10"),
        ({"windowCenter": "40"}, 400, "give both or neither"),
        ({"region": "0.5,0,0.2,1"}, 400, "0 <= x1 < x2 <= 1"),
        ({"contentType": "video/mpeg"}, 406, "image/png"),
        ({"anonymize": "maybe"}, 400, "yes or no"),
        ({"presentationUID": "1.2.3"}, 400, "presentation state"),
    ],
)
def test_bad_requests_say_what_is_wrong(stored, params, status, says) -> None:  # type: ignore[no-untyped-def]
    _, get, _ = stored
    answer = get("emri_small.dcm", **params)
    assert answer.status_code == status, answer.text
    assert says in answer.text


def test_anonymized_files_follow_the_basic_profile(stored) -> None:  # type: ignore[no-untyped-def]
    files, get, _ = stored
    original = files["CT_small.dcm"]
    answers = [
        dcmread(io.BytesIO(get("CT_small.dcm", contentType="application/dicom",
                               anonymize="yes").content))
        for _ in range(2)
    ]  # fmt: skip
    first, second = answers
    assert str(first.PatientName) != str(original.PatientName)
    assert first.PatientID != original.PatientID
    assert first.SOPInstanceUID != original.SOPInstanceUID
    assert first.SOPInstanceUID == second.SOPInstanceUID  # remapped the same way each time
    assert "InstitutionName" not in first or first.InstitutionName != original.InstitutionName
    assert np.array_equal(first.pixel_array, original.pixel_array)


def test_only_readers_of_the_archive_get_the_object(stored, make_user, live_server: str) -> None:  # type: ignore[no-untyped-def]
    files, _, archive = stored
    ds = files["CT_small.dcm"]
    stranger = make_user()
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
    }
    for base in (f"{live_server}/wado", f"{live_server}/wado/archives/{archive.archive_id}"):
        answer = httpx.get(
            base, params=query, headers={"Authorization": f"Bearer {stranger.token}"}, timeout=60
        )
        assert answer.status_code == 404, answer.text
    assert httpx.get(f"{live_server}/wado", params=query, timeout=60).status_code == 401
