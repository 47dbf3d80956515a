"""PS3.18 and RFC 9110 details of the DICOMweb HTTP layer: HEAD wherever GET is served,
`Allow` naming every method, q=0, the current RLE media type, rendered media types and
the Warning of a query parameter that is not applied."""

from __future__ import annotations

import httpx
import imagecodecs
import pytest

from tests.store.conftest import ArchiveClient
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.dicomweb.negotiate import (
    ANY_SYNTAX,
    Wanted,
    choose_frames,
    frame_choices,
    instance_choices,
    metadata_form,
    rendered_media_type,
    rendered_part_type,
)
from voxelhub.store.errors import NotAcceptable

RLE = "1.2.840.10008.1.2.5"
JPEG = b"\xff\xd8\xff"


def _stored(archive: ArchiveClient, live_server: str) -> tuple[str, str, dict[str, str]]:
    """The instance URL and the archive's DICOMweb base of a stored 2-slice CT."""
    ds = ct_phantom(slices=2, size=32)
    archive.scoped.store_instances(ds)
    base = f"{live_server}/dicom-web/archives/{archive.archive_id}"
    url = (
        f"{base}/studies/{ds[0].StudyInstanceUID}/series/{ds[0].SeriesInstanceUID}"
        f"/instances/{ds[0].SOPInstanceUID}"
    )
    return url, base, {"Authorization": f"Bearer {archive.owner.token}"}


def test_head_answers_as_get_without_a_body(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    url, base, auth = _stored(make_archive(), live_server)
    series = url.rsplit("/instances/", 1)[0]
    with httpx.Client(headers=auth, timeout=60) as http:
        for target in [
            f"{base}/studies",
            f"{url}/metadata",
            f"{url}/frames/1",
            f"{url}/rendered",
            url,  # a streaming multipart body
            f"{series}/rendered",
            f"{base}/studies/1.2.3/metadata",  # 404
            f"{live_server}/healthz",
        ]:
            get, head = http.get(target), http.head(target)
            assert head.status_code == get.status_code, target
            assert head.content == b"", target
            for name in ("content-type", "content-length", "cache-control", "warning"):
                if name == "content-type" and "boundary=" in get.headers.get(name, ""):
                    # Each multipart response has a boundary of its own.
                    assert (
                        head.headers[name].split("boundary=")[0]
                        == (get.headers[name].split("boundary=")[0])
                    )
                else:
                    assert head.headers.get(name) == get.headers.get(name), (target, name)
        # The connection goes on serving after a HEAD of a streaming body.
        assert http.get(f"{url}/metadata").status_code == 200


def test_405_allows_every_method_of_the_resource(live_server: str) -> None:
    for method, path, allowed in [
        ("DELETE", "/dicom-web/studies", "GET, HEAD, POST"),
        ("PUT", "/dicom-web/studies/1.2.3", "DELETE, GET, HEAD, POST"),
        ("POST", "/dicom-web/studies/1.2.3/metadata", "GET, HEAD"),
        ("PATCH", "/healthz", "GET, HEAD"),
    ]:
        answer = httpx.request(method, live_server + path, timeout=30)
        assert answer.status_code == 405, path
        assert answer.headers["allow"] == allowed, path


def test_q_zero_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        metadata_form("application/dicom+json; q=0", "search results")
    assert metadata_form("application/dicom+json;q=0, multipart/related; "
                         'type="application/dicom+xml"', "x") == "xml"  # fmt: skip
    with pytest.raises(NotAcceptable):
        instance_choices('multipart/related; type="application/dicom"; q=0')
    with pytest.raises(NotAcceptable):
        frame_choices('multipart/related; type="application/octet-stream"; q=0.0')
    with pytest.raises(NotAcceptable):
        rendered_media_type("image/jpeg;q=0")
    # A wildcard does not bring back what the client refuses.
    assert rendered_media_type("*/*, image/jpeg;q=0") == "image/gif"
    assert rendered_part_type("image/*, image/jpeg;q=0, image/gif;q=0") == "image/png"


def test_rle_frames_take_the_current_and_the_retired_media_type() -> None:
    for asked in ("image/dicom-rle", "image/x-dicom-rle"):
        wanted = choose_frames(frame_choices(f'multipart/related; type="{asked}"'), RLE)
        assert wanted == Wanted("image/dicom-rle", ANY_SYNTAX)


def test_rendered_images_default_to_jpeg_and_come_as_gif() -> None:
    # PS3.18 Table 8.7.4-1: image/jpeg is the default, image/gif and image/png required.
    for accept in (None, "", "*/*", "image/*"):
        assert rendered_media_type(accept) == "image/jpeg"
        assert rendered_part_type(accept) == "image/jpeg"
    assert rendered_media_type("image/gif") == "image/gif"
    assert rendered_part_type('multipart/related; type="image/gif"') == "image/gif"
    assert rendered_part_type("multipart/related") == "image/jpeg"


def test_rendered_gif_and_default_jpeg_over_http(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    url, _, auth = _stored(make_archive(), live_server)
    with httpx.Client(headers=auth, timeout=60) as http:
        default = http.get(f"{url}/rendered")
        assert default.status_code == 200
        assert default.headers["content-type"] == "image/jpeg"
        assert default.content.startswith(JPEG)
        gif = http.get(f"{url}/rendered", headers={"Accept": "image/gif"})
        assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
        png = http.get(f"{url}/rendered", headers={"Accept": "image/png"})
        grey = imagecodecs.png_decode(png.content)
        assert (imagecodecs.gif_decode(gif.content)[..., 0] == grey).all()
        thumbnail = http.get(url.rsplit("/series/", 1)[0] + "/thumbnail")
        assert thumbnail.headers["content-type"] == "image/jpeg"


def test_an_ignored_query_parameter_is_warned_of(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    _, base, auth = _stored(make_archive(), live_server)
    ordered = httpx.get(f"{base}/studies", params={"orderby": "StudyDate"}, headers=auth)
    assert ordered.status_code == 200
    assert '299 voxelhub "not applied: orderby"' in ordered.headers["warning"]
    plain = httpx.get(f"{base}/studies", params={"limit": "5"}, headers=auth)
    assert "warning" not in plain.headers
