"""DICOMweb in XML (the Native DICOM Model): searches, metadata, STOW-RS requests and responses."""

from __future__ import annotations

import email
import email.policy
import json
import uuid

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.store.conftest import ArchiveClient, to_bytes
from voxelhub.dicom.dicomxml import from_xml, to_xml
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.dicom.synthetic import ct_phantom

XML_PARTS = 'multipart/related; type="application/dicom+xml"'


def _get(archive: ArchiveClient, url: str, accept: str) -> httpx.Response:
    return httpx.get(
        url,
        headers={"Authorization": f"Bearer {archive.owner.token}", "Accept": accept},
        timeout=60,
    )


def _xml_documents(response: httpx.Response) -> list[dict]:  # type: ignore[type-arg]
    """Each part of a multipart/related answer of XML documents, as DICOM JSON; read with
    the standard library's MIME parser, not ours."""
    assert response.status_code == 200, response.text
    media = response.headers["content-type"]
    assert media.startswith(XML_PARTS), media
    message = email.message_from_bytes(
        f"Content-Type: {media}\r\n\r\n".encode() + response.content, policy=email.policy.HTTP
    )
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    assert all(p.get_content_type() == "application/dicom+xml" for p in parts)
    return [from_xml(part.get_payload(decode=True)) for part in parts]


def _store(archive: ArchiveClient, *datasets) -> None:  # type: ignore[no-untyped-def]
    archive.scoped.store_instances(list(datasets))


def test_searches_and_metadata_come_as_xml_with_the_same_content(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    ct = dcmread(get_testdata_file("CT_small.dcm", download=False))  # private tags
    sr = dcmread(get_testdata_file("test-SR.dcm", download=False))  # nested sequences
    _store(archive, ct, sr)
    base = f"{live_server}/dicom-web/archives/{archive.archive_id}"
    study, series = ct.StudyInstanceUID, ct.SeriesInstanceUID
    for path in (
        "/studies?includefield=all",
        f"/studies/{study}/series",
        f"/studies/{study}/series/{series}/instances?includefield=all",
        f"/studies/{study}/metadata",
        f"/studies/{study}/series/{series}/metadata",
        f"/studies/{study}/series/{series}/instances/{ct.SOPInstanceUID}/metadata",
        f"/studies/{sr.StudyInstanceUID}/metadata",
    ):
        as_json = _get(archive, base + path, "application/dicom+json").json()
        for accept in (XML_PARTS, "application/dicom+xml"):
            assert _xml_documents(_get(archive, base + path, accept)) == _null_empty(as_json)
    # The private element of CT_small, in its block with its creator.
    document = _get(archive, f"{base}/studies/{study}/series/{series}/metadata", XML_PARTS)
    assert b'tag="00090001" vr="LO" privateCreator="GEMS_IDEN_01"' in document.content
    # The client's preference decides; neither form is refused with what is offered.
    both = f"application/dicom+json; q=0.5, {XML_PARTS}"
    assert _get(archive, f"{base}/studies", both).headers["content-type"].startswith(XML_PARTS)
    refused = _get(archive, f"{base}/studies", "text/html")
    assert refused.status_code == 406
    assert "application/dicom+xml" in refused.text


def _null_empty(value):  # type: ignore[no-untyped-def]
    """DICOM JSON as read back from XML: an empty value in a list is null and an empty
    sequence has no Value, as the JSON model writes them (PS3.18 F.2.5), where the stored
    JSON (pydicom's) may have "" and []."""
    if isinstance(value, dict):
        return {k: _null_empty(v) for k, v in value.items() if not (k == "Value" and v == [])}
    if isinstance(value, list):
        return [None if v == "" else _null_empty(v) for v in value]
    return value


def _stow(archive: ArchiveClient, live_server: str, parts, accept: str) -> httpx.Response:  # type: ignore[no-untyped-def]
    boundary = uuid.uuid4().hex
    body = b""
    for headers, content in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        body += f"--{boundary}\r\n{head}\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return httpx.post(
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {archive.owner.token}",
            "Content-Type": f'{XML_PARTS}; boundary="{boundary}"',
            "Accept": accept,
        },
        timeout=60,
    )


def test_stow_of_xml_metadata_with_bulk_data_answers_in_xml(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    slices = ct_phantom(slices=2, size=32)
    parts = []
    for ds in slices:
        ds["PixelData"].VR = "OW"  # pydicom writes "OB or OW" into JSON otherwise
        uri = f"pixels/{ds.SOPInstanceUID}?frame=1&all"  # an & to escape in the document
        as_json = ds.to_json_dict(
            bulk_data_threshold=64, bulk_data_element_handler=lambda _e, uri=uri: uri
        )
        parts += [
            ({"Content-Type": "application/dicom+xml"}, to_xml(as_json)),
            ({"Content-Type": "application/octet-stream", "Content-Location": uri}, ds.PixelData),
        ]
    bad = b'<!DOCTYPE x [<!ENTITY e "e">]><NativeDicomModel>&e;</NativeDicomModel>'
    parts.append(({"Content-Type": "application/dicom+xml"}, bad))
    response = _stow(archive, live_server, parts, "application/dicom+xml")
    assert response.status_code == 202, response.text
    assert response.headers["content-type"].startswith("application/dicom+xml")
    answer = from_xml(response.content)
    stored = [item["00081155"]["Value"][0] for item in answer["00081199"]["Value"]]
    assert stored == [ds.SOPInstanceUID for ds in slices]
    (failed,) = answer["00081198"]["Value"]
    assert "document type declaration" in failed["00091001"]["Value"][0]
    # The whole reason, in the response's private block (its creator named with it).
    assert b'tag="00090001" vr="LT" privateCreator="VOXELHUB 1"' in response.content

    ds = slices[1]
    back = archive.scoped.retrieve_instance(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=(("application/dicom", EXPLICIT_VR_LITTLE_ENDIAN),),
    )
    assert to_bytes(back) == to_bytes(_with_meta_of(ds, back))


def _with_meta_of(ds, back):  # type: ignore[no-untyped-def]
    """`ds` with the file meta the store wrote for it (implementation UIDs, syntax)."""
    ds.file_meta = back.file_meta
    return ds


@pytest.mark.parametrize("accept", ["application/dicom+json", None])
def test_a_part10_stow_still_answers_json_by_default(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, accept: str | None
) -> None:
    archive: ArchiveClient = make_archive()
    (ds,) = ct_phantom(slices=1, size=16)
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + to_bytes(ds)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {
        "Authorization": f"Bearer {archive.owner.token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    if accept:
        headers["Accept"] = accept
    response = httpx.post(
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies",
        content=body,
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    assert json.loads(response.content)["00081199"]["Value"][0]["00081155"]["Value"] == [
        ds.SOPInstanceUID
    ]
