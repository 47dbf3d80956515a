"""WADO-RS content negotiation: what cannot be sent is refused with 406 before any byte of
a body, the client's next choice is used when its first cannot be met, and rendered images
honour the viewport."""

from __future__ import annotations

import httpx
import imagecodecs
import pytest

from tests.store.conftest import ArchiveClient
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, HTJ2K_LOSSLESS
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.dicomweb.negotiate import (
    ANY_SYNTAX,
    Wanted,
    choose_frames,
    choose_instance_syntax,
    frame_choices,
    frame_producible,
    instance_choices,
    instance_producible,
)
from voxelhub.store.errors import NotAcceptable

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS = "1.2.840.10008.1.2.4.80"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
OCTETS = "application/octet-stream"


def test_frames_are_sent_as_stored_or_decoded_to_little_endian_only() -> None:
    assert frame_producible(HTJ2K_LOSSLESS, Wanted(OCTETS, ANY_SYNTAX))
    assert frame_producible(HTJ2K_LOSSLESS, Wanted("image/jphc", HTJ2K_LOSSLESS))
    assert frame_producible(HTJ2K_LOSSLESS, Wanted("image/jphc", "1.2.840.10008.1.2.4.203"))
    assert frame_producible(HTJ2K_LOSSLESS, Wanted(OCTETS, EXPLICIT_VR_LITTLE_ENDIAN))
    assert not frame_producible(HTJ2K_LOSSLESS, Wanted(OCTETS, JPEG_BASELINE))
    assert not frame_producible(HTJ2K_LOSSLESS, Wanted("image/jls", ANY_SYNTAX))
    assert not frame_producible(HTJ2K_LOSSLESS, Wanted(OCTETS, BIG_ENDIAN))
    assert not frame_producible(HTJ2K_LOSSLESS, Wanted(OCTETS, "1.2.3.4"))
    assert not frame_producible(HTJ2K_LOSSLESS, Wanted("image/jphc", EXPLICIT_VR_LITTLE_ENDIAN))
    assert frame_producible(JPEG_LS, Wanted("image/jls", ANY_SYNTAX))


def test_the_first_choice_that_can_be_met_is_used() -> None:
    accept = (
        'multipart/related; type="image/jls", '
        'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    )
    assert choose_frames(frame_choices(accept), HTJ2K_LOSSLESS) == Wanted(OCTETS, ANY_SYNTAX)
    assert choose_frames(frame_choices(accept), JPEG_LS) == Wanted("image/jls", ANY_SYNTAX)
    with pytest.raises(NotAcceptable, match=HTJ2K_LOSSLESS):
        choose_frames(frame_choices('multipart/related; type="image/jls"'), HTJ2K_LOSSLESS)

    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}, '
        f'multipart/related; type="application/dicom"; transfer-syntax={BIG_ENDIAN}; q=0.5'
    )
    choices = instance_choices(accept)
    assert choices == [JPEG_BASELINE, BIG_ENDIAN]
    # Native targets are decoded to; objects without pixel data go in any syntax.
    assert choose_instance_syntax(choices, [HTJ2K_LOSSLESS, None]) == BIG_ENDIAN
    assert choose_instance_syntax(choices, [None]) == JPEG_BASELINE
    assert instance_producible(HTJ2K_LOSSLESS, ANY_SYNTAX)
    assert not instance_producible(None, "1.2.3.4")
    with pytest.raises(NotAcceptable, match="transfer-syntax=\\*"):
        choose_instance_syntax([JPEG_BASELINE], [HTJ2K_LOSSLESS])


def _stored(archive: ArchiveClient, live_server: str) -> tuple[str, dict[str, str]]:
    ds = ct_phantom(slices=3, size=64)
    archive.scoped.store_instances(ds)
    first = ds[0]
    url = (
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies/{first.StudyInstanceUID}"
        f"/series/{first.SeriesInstanceUID}/instances/{first.SOPInstanceUID}"
    )
    return url, {"Authorization": f"Bearer {archive.owner.token}"}


def test_what_cannot_be_sent_is_refused_before_the_body(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    url, auth = _stored(make_archive(), live_server)
    with httpx.Client(headers=auth, timeout=60) as http:
        for path, accept in [
            ("/frames/1", f'multipart/related; type="{OCTETS}"; transfer-syntax={JPEG_BASELINE}'),
            ("/frames/1", 'multipart/related; type="image/jls"'),
            ("/frames/1", f'multipart/related; type="{OCTETS}"; transfer-syntax={BIG_ENDIAN}'),
            ("/bulk/7FE00010", f'multipart/related; type="{OCTETS}"; transfer-syntax={JPEG_LS}'),
            ("", f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}'),
            ("", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4'),
            ("/rendered", "image/webp"),
        ]:
            answer = http.get(url + path, headers={"Accept": accept})
            assert answer.status_code == 406, (path, accept, answer.text)
            assert answer.json()["error"] == "not_acceptable"
            assert "ask for" in answer.json()["message"] or "image/jpeg" in answer.json()["message"]
        # The same connection goes on serving: nothing was cut off half-way.
        fallback = http.get(
            url + "/frames/1",
            headers={
                "Accept": 'multipart/related; type="image/jls", '
                f'multipart/related; type="{OCTETS}"; transfer-syntax=*'
            },
        )
        assert fallback.status_code == 200
        assert f"transfer-syntax={HTJ2K_LOSSLESS}" in fallback.text[:400]
        whole = http.get(
            url,
            headers={
                "Accept": f'multipart/related; type="application/dicom"; '
                f"transfer-syntax={JPEG_BASELINE}, "
                'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.9'
            },
        )
        assert whole.status_code == 200
        assert f"transfer-syntax={HTJ2K_LOSSLESS}" in whole.content[:400].decode("latin-1")


def test_rendered_images_fit_the_viewport_and_studies_have_thumbnails(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    url, auth = _stored(archive, live_server)
    with httpx.Client(headers={**auth, "Accept": "image/png"}, timeout=60) as http:
        for viewport, shape in [("32,16", (16, 16)), ("128,256", (128, 128)), (None, (64, 64))]:
            query = {"viewport": viewport} if viewport else {}
            answer = http.get(url + "/rendered", params=query)
            assert answer.status_code == 200
            assert imagecodecs.png_decode(answer.content).shape[:2] == shape
        assert http.get(url + "/rendered", params={"viewport": "0,10"}).status_code == 400
        assert http.get(url + "/rendered", params={"viewport": "wide"}).status_code == 400
        study = url.split("/series/")[0]
        thumbnail = http.get(study + "/thumbnail")
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/png"
        assert max(imagecodecs.png_decode(thumbnail.content).shape[:2]) <= 128


def test_searches_and_metadata_answer_json_and_single_instances_a_bare_file(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    url, auth = _stored(archive, live_server)
    base = f"{live_server}/dicom-web/archives/{archive.archive_id}"
    with httpx.Client(headers=auth, timeout=60) as http:
        for path in ("/studies", url.removeprefix(base) + "/metadata"):
            html = http.get(base + path, headers={"Accept": "text/html"})
            assert html.status_code == 406, html.text
            for accept in ("application/dicom+json", "application/json", "*/*"):
                answer = http.get(base + path, headers={"Accept": accept})
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("application/dicom+json")
        bare = http.get(url, headers={"Accept": "application/dicom"})
        assert bare.status_code == 200
        assert (
            bare.headers["content-type"]
            == f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
        )
        assert bare.content[128:132] == b"DICM"
        bad_quality = http.get(url + "/rendered", params={"quality": "abc"})
        assert bad_quality.status_code == 400
        assert "quality" in bad_quality.json()["message"]


def test_empty_match_keys_match_everything_and_dates_are_checked(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    """PS3.4 C.2.2.2.3: a zero-length key matches every entity and asks for the attribute;
    a date or time that is not DICOM's form is refused, not matched against nothing."""
    archive: ArchiveClient = make_archive()
    _stored(archive, live_server)
    client = archive.scoped
    base = f"{live_server}/dicom-web/archives/{archive.archive_id}"
    auth = {"Authorization": f"Bearer {archive.owner.token}"}
    for path, count in [
        ("/studies?PatientName=", 1),
        ("/studies?StudyDate=&AccessionNumber=", 1),
        ("/series?SeriesDescription=", 1),
        ("/instances?ImageType=", 3),
    ]:
        found = httpx.get(base + path, headers=auth, timeout=60).json()
        assert len(found) == count, path
    assert all("00080008" in i for i in found)
    beyond = httpx.get(f"{base}/studies?offset=99999999999999999999", headers=auth, timeout=60)
    assert beyond.status_code == 200
    assert beyond.content in (b"", b"[]")
    for key, value in [("StudyDate", "2020-01-01"), ("StudyDate", "-"), ("StudyTime", "25:00")]:
        with pytest.raises(Exception, match="400"):
            client.search_for_studies(search_filters={key: value})
    assert len(client.search_for_studies(search_filters={"StudyDate": "19000101-"})) == 1
