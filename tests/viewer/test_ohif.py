"""OHIF against voxelhub's DICOMweb: the requests OHIF's DICOMweb data source sends for one study.

OHIF (extensions/default DicomWebDataSource, through dicomweb-client and the Cornerstone DICOM
image loader) is configured with `qidoRoot = wadoRoot = <server>/dicom-web` and a bearer token
in its request headers. It then asks, from its own origin: QIDO studies (its includefield list,
limit/offset paging, a StudyDate range), QIDO series of the study, WADO series metadata, frames
(Cornerstone's `transfer-syntax=*`, and dicomweb-client's default octet-stream request, which
means uncompressed), and thumbnails or rendered frames. Every step is checked for status,
content type, CORS headers and the fields OHIF reads.
"""

from __future__ import annotations

import io
import re

import imagecodecs
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset

from tests.conftest import Account, stow
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom

ORIGIN = "http://ohif.example:3000"
DICOM_JSON = "application/dicom+json"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
# What OHIF's study list asks for (qido.js mapParams) and the series list (seriesInStudy).
OHIF_STUDY_FIELDS = "00081030,00080060,00080090,00100030"
OHIF_SERIES_FIELDS = "0008103E,00080021"
# Cornerstone's WADO-RS image loader: any transfer syntax, the client decodes.
CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
# dicomweb-client's retrieveInstanceFrames without media types (OHIF's default data source
# with no acceptHeader configured): octet-stream without a syntax, i.e. uncompressed.
DICOMWEB_CLIENT_ACCEPT = 'multipart/related; type="application/octet-stream"'
# An acceptHeader list as OHIF deployments configure it, in order of preference.
OHIF_ACCEPT_LIST = ", ".join(
    [
        f"multipart/related; type=application/octet-stream; transfer-syntax={HTJ2K_LOSSLESS}",
        "multipart/related; type=application/octet-stream; transfer-syntax=*; q=0.9",
        "multipart/related; type=application/octet-stream; q=0.5",
    ]
)


def _value(item: dict[str, dict[str, list[object]]], tag: str) -> object:
    values = item[tag].get("Value") or [None]
    return values[0]


def _parts(response_body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/related body the way dicomweb-client's multipartDecode does."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    assert match, f"no boundary in {content_type!r}"
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in response_body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.strip().split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, body.removesuffix(b"\r\n")))
    return parts


@pytest.fixture
def study(client: TestClient, make_user) -> tuple[Account, list[Dataset]]:  # type: ignore[no-untyped-def]
    reader: Account = make_user("ohif-reader")
    archive = client.post("/api/v1/archives", json={"name": "OHIF"}, headers=reader.headers)
    series = ct_phantom(slices=3, size=32, patient=PatientInfo(patient_name="Lovelace^Ada"))
    for ds in series:
        ds.StudyDescription = "Chest CT"
        ds.ReferringPhysicianName = "Babbage^Charles"
    stow(client, reader, archive.json()["id"], series)
    return reader, series


def _ohif(reader: Account, accept: str = DICOM_JSON) -> dict[str, str]:
    return {"Authorization": f"Bearer {reader.token}", "Origin": ORIGIN, "Accept": accept}


def _assert_cors(response_headers: object) -> None:
    headers = dict(response_headers)  # type: ignore[call-overload]
    assert headers.get("access-control-allow-origin") in ("*", ORIGIN), headers


def test_preflight_allows_ohif_origin_and_bearer_header(client: TestClient) -> None:
    preflight = client.options(
        "/dicom-web/studies",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,accept",
        },
    )
    assert preflight.status_code == 200
    _assert_cors(preflight.headers)
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "accept" in allowed
    assert "GET" in preflight.headers["access-control-allow-methods"]


def test_study_list_with_ohif_query(client: TestClient, study) -> None:  # type: ignore[no-untyped-def]
    reader, series = study
    params = {
        "PatientName": "*Lovelace*",
        "StudyDate": f"19700102-{series[0].StudyDate}",
        "limit": "101",
        "offset": "0",
        "fuzzymatching": "false",
        "includefield": OHIF_STUDY_FIELDS,
    }
    found = client.get("/dicom-web/studies", params=params, headers=_ohif(reader))
    assert found.status_code == 200, found.text
    assert found.headers["content-type"].startswith(DICOM_JSON)
    _assert_cors(found.headers)
    [item] = found.json()
    # The fields processResults reads for the study list.
    assert _value(item, "0020000D") == series[0].StudyInstanceUID
    assert _value(item, "00080020") == series[0].StudyDate
    assert _value(item, "00100010") == {"Alphabetic": "Lovelace^Ada"}
    assert _value(item, "00100020") == series[0].PatientID
    assert _value(item, "00081030") == "Chest CT"
    assert int(str(_value(item, "00201208"))) == 3
    modalities = item.get("00080061") or item.get("00080060")
    assert modalities is not None and "CT" in modalities["Value"]
    assert _value(item, "00080090") == {"Alphabetic": "Babbage^Charles"}

    next_page = client.get(
        "/dicom-web/studies", params={**params, "offset": "1"}, headers=_ohif(reader)
    )
    assert next_page.status_code in (200, 204)
    assert next_page.status_code == 204 or next_page.json() == []
    elsewhere = client.get(
        "/dicom-web/studies", params={**params, "PatientName": "*Hopper*"}, headers=_ohif(reader)
    )
    assert elsewhere.status_code in (200, 204)
    assert elsewhere.status_code == 204 or elsewhere.json() == []


def test_series_metadata_and_frames(client: TestClient, study) -> None:  # type: ignore[no-untyped-def]
    reader, series = study
    study_uid, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    root = f"/dicom-web/studies/{study_uid}"

    listed = client.get(
        f"{root}/series", params={"includefield": OHIF_SERIES_FIELDS}, headers=_ohif(reader)
    )
    assert listed.status_code == 200
    assert listed.headers["content-type"].startswith(DICOM_JSON)
    _assert_cors(listed.headers)
    [item] = listed.json()
    assert _value(item, "0020000E") == series_uid
    assert _value(item, "00080060") == "CT"
    assert int(str(_value(item, "00201209"))) == 3
    assert "00200011" in item and "0008103E" in item

    metadata = client.get(f"{root}/series/{series_uid}/metadata", headers=_ohif(reader))
    assert metadata.status_code == 200
    assert metadata.headers["content-type"].startswith(DICOM_JSON)
    _assert_cors(metadata.headers)
    instances = {_value(i, "00080018"): i for i in metadata.json()}
    assert set(instances) == {ds.SOPInstanceUID for ds in series}
    first = instances[series[0].SOPInstanceUID]
    # What Cornerstone needs to place and display each slice.
    for tag in ("00280010", "00280011", "00280030", "00200032", "00200037", "00280100",
                "00280103", "00281052", "00281053", "00280004", "00020010"):  # fmt: skip
        assert tag in first, f"metadata lacks {tag}"
    assert _value(first, "00280010") == 32
    assert "BulkDataURI" in first["7FE00010"] or "InlineBinary" in first["7FE00010"]

    frame_url = f"{root}/series/{series_uid}/instances/{series[0].SOPInstanceUID}/frames/1"
    expected = series[0].pixel_array

    stored = client.get(frame_url, headers=_ohif(reader, CORNERSTONE_ACCEPT))
    assert stored.status_code == 200
    _assert_cors(stored.headers)
    assert stored.headers["content-type"].startswith("multipart/related")
    [(part_headers, body)] = _parts(stored.content, stored.headers["content-type"])
    assert f"transfer-syntax={HTJ2K_LOSSLESS}" in part_headers["content-type"]
    decoded = imagecodecs.jpeg2k_decode(body)
    np.testing.assert_array_equal(decoded.reshape(expected.shape), expected)

    plain = client.get(frame_url, headers=_ohif(reader, DICOMWEB_CLIENT_ACCEPT))
    assert plain.status_code == 200
    [(part_headers, body)] = _parts(plain.content, plain.headers["content-type"])
    assert part_headers["content-type"].startswith("application/octet-stream")
    assert body == series[0].PixelData

    preferred = client.get(frame_url, headers=_ohif(reader, OHIF_ACCEPT_LIST))
    assert preferred.status_code == 200
    [(part_headers, body)] = _parts(preferred.content, preferred.headers["content-type"])
    assert f"transfer-syntax={HTJ2K_LOSSLESS}" in part_headers["content-type"]
    assert np.array_equal(imagecodecs.jpeg2k_decode(body).reshape(expected.shape), expected)


def test_thumbnails_and_rendered(client: TestClient, study) -> None:  # type: ignore[no-untyped-def]
    reader, series = study
    ds = series[1]
    base = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    for path, accept, kind in [
        (f"{base}/thumbnail", "image/jpeg", "JPEG"),
        (f"{base}/instances/{ds.SOPInstanceUID}/thumbnail", "image/png", "PNG"),
        (f"{base}/instances/{ds.SOPInstanceUID}/rendered", "image/jpeg", "JPEG"),
        (f"{base}/instances/{ds.SOPInstanceUID}/frames/1/rendered", "image/png", "PNG"),
    ]:
        image = client.get(path, headers=_ohif(reader, accept))
        assert image.status_code == 200, (path, image.text)
        assert image.headers["content-type"] == accept
        _assert_cors(image.headers)
        picture = Image.open(io.BytesIO(image.content))
        assert picture.format == kind
        assert np.asarray(picture.convert("L")).std() > 0, f"{path} is a blank image"


def test_bearer_auth_and_permissions_seen_from_ohif(client: TestClient, study, make_user) -> None:  # type: ignore[no-untyped-def]
    _, series = study
    study_uid = series[0].StudyInstanceUID
    anonymous = client.get("/dicom-web/studies", headers={"Origin": ORIGIN, "Accept": DICOM_JSON})
    assert anonymous.status_code == 401
    _assert_cors(anonymous.headers)  # OHIF can read the 401 and show its login prompt
    assert anonymous.headers["www-authenticate"] == "Bearer"
    wrong = client.get(
        "/dicom-web/studies", headers={**_ohif(make_user("x")), "Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401

    stranger: Account = make_user("stranger")
    studies = client.get("/dicom-web/studies", headers=_ohif(stranger))
    assert studies.status_code in (200, 204)
    assert studies.status_code == 204 or studies.json() == []
    metadata = client.get(
        f"/dicom-web/studies/{study_uid}/series/{series[0].SeriesInstanceUID}/metadata",
        headers=_ohif(stranger),
    )
    assert metadata.status_code == 404
    _assert_cors(metadata.headers)
