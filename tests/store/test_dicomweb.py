"""DICOMweb against a real server, driven by dicomweb-client as viewers and scripts do."""

from __future__ import annotations

import copy
import gzip
import io
import json

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.dicom.helpers import with_empty_values
from tests.store.conftest import ArchiveClient, to_bytes
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.model import HTJ2K_LOSSLESS
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom

TEST_FILES = [
    "CT_small.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "SC_rgb.dcm",
    "emri_small.dcm",
    "test-SR.dcm",
    "rtplan.dcm",
    "US1_J2KR.dcm",
]


def _pixels_equal(a, b) -> bool:  # type: ignore[no-untyped-def]
    return bool(np.array_equal(a.pixel_array, b.pixel_array))


def test_stow_qido_wado_round_trip(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=6, size=64, patient=PatientInfo(patient_name="Doe^Jane"))
    response = archive.scoped.store_instances(series)
    assert len(response.ReferencedSOPSequence) == 6
    assert "FailedSOPSequence" not in response

    studies = archive.everything.search_for_studies(search_filters={"PatientName": "doe*"})
    assert len(studies) == 1
    study = studies[0]
    assert study["00201208"]["Value"] == [6]
    assert study["00201206"]["Value"] == [1]
    assert study["00080061"]["Value"] == ["CT"]
    study_uid = series[0].StudyInstanceUID
    series_uid = series[0].SeriesInstanceUID

    found_series = archive.scoped.search_for_series(study_uid)
    assert [s["0020000E"]["Value"][0] for s in found_series] == [series_uid]
    assert found_series[0]["00201209"]["Value"] == [6]
    instances = archive.scoped.search_for_instances(study_uid, series_uid)
    assert len(instances) == 6

    metadata = archive.scoped.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == 6
    assert metadata[0]["00100010"]["Value"][0]["Alphabetic"] == "Doe^Jane"
    assert "BulkDataURI" in metadata[0]["7FE00010"]

    original = series[2]
    # dicomweb-client asks for transfer-syntax=*: the stored HTJ2K comes back untouched.
    stored = archive.scoped.retrieve_instance(study_uid, series_uid, original.SOPInstanceUID)
    assert stored.file_meta.TransferSyntaxUID == HTJ2K_LOSSLESS
    assert _pixels_equal(stored, original)
    back = archive.scoped.retrieve_instance(
        study_uid,
        series_uid,
        original.SOPInstanceUID,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    for element in original:
        if element.tag != 0x7FE00010:
            assert back[element.tag].value == element.value, element.keyword
    assert back.PixelData == original.PixelData


def test_frames_come_back_as_stored_htj2k(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=2, size=128)
    archive.scoped.store_instances(series)
    ds = series[0]
    frames = archive.scoped.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        frame_numbers=[1],
        media_types=(("application/octet-stream", "*"),),
    )
    assert len(frames[0]) < len(ds.PixelData), "HTJ2K should be smaller than native"
    url = (
        f"{live_server}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1"
    )
    raw = httpx.get(
        url,
        headers={
            "Authorization": f"Bearer {archive.owner.token}",
            "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        },
    )
    assert raw.status_code == 200
    assert f"transfer-syntax={HTJ2K_LOSSLESS}" in raw.text[:400]
    native = archive.scoped.retrieve_instance_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, frame_numbers=[1]
    )
    assert native[0] == ds.PixelData


@pytest.mark.parametrize("name", TEST_FILES)
def test_real_files_round_trip(make_archive, name: str) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    original = dcmread(get_testdata_file(name))
    response = archive.scoped.store_instances([original])
    assert "FailedSOPSequence" not in response, response
    back = archive.scoped.retrieve_instance(
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    compressed = original.file_meta.TransferSyntaxUID.is_compressed
    for element in original:
        # Decoding YBR JPEG data to native pixels makes it RGB, as the standard requires.
        changes = compressed and element.keyword == "PhotometricInterpretation"
        if element.tag.group != 0x7FE0 and not changes:
            assert back[element.tag].value == element.value, element.keyword
    if "PixelData" in original and original.file_meta.TransferSyntaxUID in (
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.70",
    ):
        assert _pixels_equal(back, original)


def test_users_see_only_their_archives(make_archive, make_user) -> None:  # type: ignore[no-untyped-def]
    mine: ArchiveClient = make_archive("mine")
    theirs: ArchiveClient = make_archive("theirs")
    mine.scoped.store_instances(ct_phantom(slices=1, size=32))
    assert theirs.everything.search_for_studies() == []
    assert len(mine.everything.search_for_studies()) == 1
    with pytest.raises(Exception, match=r"404|403"):
        theirs.everything.retrieve_series_metadata(
            mine.everything.search_for_studies()[0]["0020000D"]["Value"][0], "1.2.3"
        )


def test_stow_is_idempotent_and_refuses_reused_uids(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=2, size=32)
    archive.scoped.store_instances(series)
    again = archive.scoped.store_instances(series)
    assert len(again.ReferencedSOPSequence) == 2
    changed = copy.deepcopy(series[0])
    changed.PatientName = "Someone^Else"
    with pytest.raises(Exception, match="409"):
        archive.scoped.store_instances([changed])
    studies = archive.scoped.search_for_studies()
    assert studies[0]["00201208"]["Value"] == [2]
    assert studies[0]["00100010"]["Value"][0]["Alphabetic"] == "Demo^Phantom"


def test_a_refused_series_clash_leaves_no_empty_study(make_archive) -> None:  # type: ignore[no-untyped-def]
    """An instance that names a new study for a series stored under another is refused, and
    its study does not show up in searches, empty."""
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=2, size=32)
    archive.scoped.store_instances(series[:1])
    thief = copy.deepcopy(series[1])
    thief.StudyInstanceUID = "1.2.826.0.1.3680043.10.1234.99"
    with pytest.raises(Exception, match="409"):
        archive.scoped.store_instances([thief])
    studies = archive.scoped.search_for_studies()
    assert [s["0020000D"]["Value"][0] for s in studies] == [series[0].StudyInstanceUID]
    assert archive.scoped.search_for_series(study_instance_uid=thief.StudyInstanceUID) == []


def test_stow_takes_gzip_and_refuses_what_it_cannot_read_up_front(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    url = f"{live_server}/dicom-web/archives/{archive.archive_id}/studies"
    auth = {"Authorization": f"Bearer {archive.owner.token}"}
    boundary = "b0undary"
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    ds = ct_phantom(slices=2, size=32)

    def body(*parts: bytes) -> bytes:
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        return b"".join(head + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()

    packed = gzip.compress(body(to_bytes(ds[0]), to_bytes(ds[1])))
    stored = httpx.post(
        url, content=packed, headers={**auth, "Content-Type": media, "Content-Encoding": "gzip"}
    )
    assert stored.status_code == 200, stored.text
    assert len(stored.json()["00081199"]["Value"]) == 2
    cut = httpx.post(
        url,
        content=packed[: len(packed) // 2],
        headers={**auth, "Content-Type": media, "Content-Encoding": "gzip"},
    )
    assert cut.status_code == 400
    for headers, status, words in [
        ({"Content-Type": media, "Content-Encoding": "br"}, 415, "Content-Encoding"),
        (
            {"Content-Type": media.replace("application/dicom", "application/dicom+xml")},
            400,
            "type application/dicom+xml per object",
        ),
        ({"Content-Type": media, "Accept": "text/html"}, 406, "application/dicom+xml"),
    ]:
        answer = httpx.post(url, content=body(to_bytes(ds[0])), headers={**auth, **headers})
        assert answer.status_code == status, answer.text
        assert words in answer.json()["message"]
    empty = httpx.post(
        url, content=f"--{boundary}--\r\n".encode(), headers={**auth, "Content-Type": media}
    )
    assert empty.status_code == 400
    assert "no parts" in empty.json()["message"]
    assert len(archive.scoped.search_for_instances()) == 2


def test_files_with_acr_nema_dates_are_stored_and_found_by_date(make_archive) -> None:  # type: ignore[no-untyped-def]
    """Old files date studies YYYY.MM.DD; they are stored (not a server error) and found by
    the DICOM form of their date, while their metadata keeps the value as sent."""
    archive: ArchiveClient = make_archive()
    old = [dcmread(get_testdata_file(n), force=True) for n in ("OT-PAL-8-face.dcm", "color-pl.dcm")]
    for ds in old:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    archive.scoped.store_instances(old)
    found = archive.scoped.search_for_studies(search_filters={"StudyDate": "19941101-19941130"})
    assert [s["0020000D"]["Value"][0] for s in found] == [old[1].StudyInstanceUID]
    metadata = archive.scoped.retrieve_instance_metadata(
        old[1].StudyInstanceUID, old[1].SeriesInstanceUID, old[1].SOPInstanceUID
    )
    assert metadata["00080020"]["Value"] == ["1994.11.05"]


_BOUNDARY = "b0undary"


def _stow_body(*parts: bytes, closed: bool = True) -> bytes:
    """A multipart/related body of Part-10 `parts`, with its closing boundary if `closed`."""
    head = f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body = b"".join(head + part + b"\r\n" for part in parts)
    return body + f"--{_BOUNDARY}--\r\n".encode() if closed else body


def _stow(
    live_server: str, archive: ArchiveClient, body: bytes, *, study: str | None = None
) -> httpx.Response:
    """STOW-RS of `body` (`_stow_body`) into `archive`, to one study's URL if given."""
    url = f"{live_server}/dicom-web/archives/{archive.archive_id}/studies"
    return httpx.post(
        url if study is None else f"{url}/{study}",
        content=body,
        headers={
            "Authorization": f"Bearer {archive.owner.token}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}',
        },
    )


def test_stow_reports_bad_parts_and_stores_the_good(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    good = ct_phantom(slices=1, size=32)[0]
    truncated = to_bytes(ct_phantom(slices=1, size=32)[0])[:-500]
    body = _stow_body(to_bytes(good), b"not dicom at all", truncated)
    response = _stow(live_server, archive, body)
    assert response.status_code == 202
    result = response.json()
    assert len(result["00081199"]["Value"]) == 1
    failures = result["00081198"]["Value"]
    assert len(failures) == 2
    assert all(f["00081197"]["Value"] == [0xC000] for f in failures)
    assert all(f["00091001"]["Value"][0] for f in failures)
    wrong_type = httpx.post(
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies",
        content=b"{}",
        headers={
            "Authorization": f"Bearer {archive.owner.token}",
            "Content-Type": "application/json",
        },
    )
    assert wrong_type.status_code == 415
    assert "multipart/related" in wrong_type.json()["message"]


def test_a_cut_off_stow_stores_nothing_though_batches_were_indexed(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=40, size=32)  # several indexing batches
    body = _stow_body(*(to_bytes(ds) for ds in series), closed=False)
    response = _stow(live_server, archive, body)
    assert response.status_code == 400
    assert "closing boundary" in response.json()["message"]
    assert archive.scoped.search_for_studies() == []


def test_qido_matching_rules(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    for index, (name, date) in enumerate(
        [("Smith^John", "20200105"), ("Smyth^Jo", "20210610"), ("Jones^Ann", "20221231")]
    ):
        series = ct_phantom(
            slices=1, size=16, patient=PatientInfo(patient_id=f"P{index}", patient_name=name)
        )
        for ds in series:
            ds.StudyDate = date
            ds.AccessionNumber = f"ACC{index}"
        archive.scoped.store_instances(series)
    search = archive.scoped.search_for_studies
    assert len(search(search_filters={"PatientName": "SM?TH*"})) == 2
    assert len(search(search_filters={"StudyDate": "20210101-"})) == 2
    assert len(search(search_filters={"StudyDate": "-20201231"})) == 1
    assert len(search(search_filters={"AccessionNumber": "ACC2"})) == 1
    assert len(search(search_filters={"ModalitiesInStudy": "CT"})) == 3
    assert len(search(search_filters={"ModalitiesInStudy": "MR"})) == 0
    assert len(search(limit=2)) == 2
    assert len(search(limit=2, offset=2)) == 1
    fuzzy = search(search_filters={"PatientName": "smit"}, fuzzymatching=True)
    assert {s["00100010"]["Value"][0]["Alphabetic"] for s in fuzzy} >= {"Smith^John"}
    uids = [s["0020000D"]["Value"][0] for s in search()]
    listed = search(search_filters={"StudyInstanceUID": ",".join(uids[:2])})
    assert len(listed) == 2
    with_fields = search(fields=["BodyPartExamined"], search_filters={"PatientID": "P1"})
    assert with_fields[0]["00180015"]["Value"] == ["CHEST"]


def test_metadata_is_served_gzipped_as_stored(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=3, size=16)
    archive.scoped.store_instances(series)
    ds = series[0]
    series_url = f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    url = f"{live_server}/dicom-web/{series_url}/metadata"
    headers = {"Authorization": f"Bearer {archive.owner.token}", "Accept-Encoding": "gzip"}
    with httpx.stream("GET", url, headers=headers) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert len(json.loads(gzip.decompress(raw))) == 3


def test_rendered_and_thumbnail(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    ds = ct_phantom(slices=1, size=64)[0]
    archive.scoped.store_instances([ds])
    base = (
        f"{live_server}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    headers = {"Authorization": f"Bearer {archive.owner.token}"}
    png = httpx.get(
        f"{base}/rendered", params={"window": "40,400"}, headers={**headers, "Accept": "image/png"}
    )
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    jpeg = httpx.get(f"{base}/thumbnail", headers={**headers, "Accept": "image/jpeg"})
    assert jpeg.status_code == 200 and jpeg.content[:2] == b"\xff\xd8"


def test_deleting_a_study_removes_its_objects(make_archive, runtime: Runtime) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=2, size=16)
    archive.scoped.store_instances(series)
    archive.scoped.retrieve_series_metadata(series[0].StudyInstanceUID, series[0].SeriesInstanceUID)
    assert list(runtime.store.list("imagesets/"))
    archive.scoped.delete_study(series[0].StudyInstanceUID)
    assert list(runtime.store.list("imagesets/")) == []
    assert archive.scoped.search_for_studies() == []


def test_new_uid_needed_message(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    ds = ct_phantom(slices=1, size=16)[0]
    archive.scoped.store_instances([ds])
    other = copy.deepcopy(ds)
    other.SOPInstanceUID = generate_uid()
    other.file_meta.MediaStorageSOPInstanceUID = other.SOPInstanceUID
    archive.scoped.store_instances([other])
    assert len(archive.scoped.search_for_instances(ds.StudyInstanceUID)) == 2


OCTETS = 'multipart/related; type="application/octet-stream"'


def _bulk_pixels(live_server: str, token: str, uri: str) -> bytes:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": f"{OCTETS}; transfer-syntax=1.2.840.10008.1.2.1",
    }
    response = httpx.get(f"{live_server}{uri}", headers=headers)
    assert response.status_code == 200, response.text
    boundary = response.headers["content-type"].split("boundary=")[1]
    [part] = [p for p in response.content.split(b"--" + boundary.encode()) if b"\r\n\r\n" in p]
    return part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")


def test_scoped_metadata_leads_to_the_bulk_data_of_its_own_copy(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    # Two archives hold different objects under one SOP Instance UID: the metadata read in
    # the newer archive must not lead (by its BulkDataURI) to the older archive's pixels.
    first: ArchiveClient = make_archive("First")
    second: ArchiveClient = make_archive("Second", owner=first.owner)
    older = ct_phantom(slices=1, size=16)[0]
    newer = copy.deepcopy(older)
    pixels = older.pixel_array.copy()
    pixels[0, :] += 100
    newer.PixelData = pixels.tobytes()
    first.scoped.store_instances([older])
    second.scoped.store_instances([newer])
    uids = (newer.StudyInstanceUID, newer.SeriesInstanceUID, newer.SOPInstanceUID)
    token = first.owner.token

    instance = second.scoped.retrieve_instance_metadata(*uids)
    [in_series] = second.scoped.retrieve_series_metadata(*uids[:2])
    [in_study] = second.scoped.retrieve_study_metadata(uids[0])
    for document in (instance, in_series, in_study):
        uri = document["7FE00010"]["BulkDataURI"]
        assert uri.startswith(f"/dicom-web/archives/{second.archive_id}/studies/")
        assert _bulk_pixels(live_server, token, uri) == newer.PixelData
    # So do searches that ask for the pixel data (as PostgreSQL or Python write them).
    [found] = second.scoped.search_for_instances(*uids[:2], fields=["7FE00010"])
    [study] = second.scoped.search_for_studies(fields=["7FE00010"])
    for document in (found, study):
        uri = document["7FE00010"]["BulkDataURI"]
        assert uri.startswith(f"/dicom-web/archives/{second.archive_id}/studies/")
    # At /dicom-web the oldest copy is read, its metadata and its bulk data alike.
    everywhere = first.everything.retrieve_instance_metadata(*uids)
    uri = everywhere["7FE00010"]["BulkDataURI"]
    assert uri.startswith("/dicom-web/studies/")
    assert _bulk_pixels(live_server, token, uri) == older.PixelData


@pytest.mark.parametrize("study", ["abc%20def", "1..2", "1.2.x", "1" * 65])
def test_stow_to_a_study_url_without_a_uid_is_a_bad_request(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, study: str
) -> None:
    # PS3.18 §10.5.3: a request of bad syntax is refused as a whole (400), not stored
    # instance by instance as failures whose Retrieve URL holds the junk.
    archive: ArchiveClient = make_archive()
    ds = ct_phantom(slices=1, size=16)[0]
    response = _stow(live_server, archive, _stow_body(to_bytes(ds)), study=study)
    assert response.status_code == 400
    assert "not a Study Instance UID" in response.json()["message"]
    assert archive.scoped.search_for_studies() == []


def test_pixel_bulk_data_of_an_object_without_pixels_is_refused(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    # Not a 200 with a multipart body of no parts (RFC 2046 wants one part at least).
    archive: ArchiveClient = make_archive()
    sr = dcmread(get_testdata_file("test-SR.dcm"))
    archive.scoped.store_instances([sr])
    url = (
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies/{sr.StudyInstanceUID}"
        f"/series/{sr.SeriesInstanceUID}/instances/{sr.SOPInstanceUID}/bulk/7FE00010"
    )
    for accept in (OCTETS, f"{OCTETS}; transfer-syntax=*"):
        response = httpx.get(
            url, headers={"Authorization": f"Bearer {archive.owner.token}", "Accept": accept}
        )
        assert response.status_code == 400, accept
        assert "has no pixel data" in response.json()["message"]


def test_empty_values_of_multi_valued_elements_are_stored_and_null_in_metadata(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    # `40\` as Window Center is valid DICOM; it used to be refused as unwritable JSON.
    archive: ArchiveClient = make_archive()
    data = with_empty_values()
    response = _stow(live_server, archive, _stow_body(data))
    assert response.status_code == 200, response.text
    original = dcmread(io.BytesIO(data))
    uids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
    metadata = archive.scoped.retrieve_instance_metadata(*uids)
    assert metadata["00281050"] == {"vr": "DS", "Value": [40.0, None]}
    assert metadata["00080008"]["Value"] == ["ORIGINAL", None, "AXIAL"]
    back = archive.scoped.retrieve_instance(
        *uids, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),)
    )
    for tag in (0x00080008, 0x00080090, 0x00281050, 0x00281051, 0x00200037):
        assert back[tag].value == original[tag].value, original[tag].keyword
