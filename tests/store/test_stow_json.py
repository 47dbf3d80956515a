"""STOW-RS of DICOM JSON metadata with its bulk data in parts of their own."""

from __future__ import annotations

import json
import uuid

import httpx
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_fragmented_frames

from tests.store.conftest import ArchiveClient
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.dicom.synthetic import ct_phantom

JSON_STOW = 'multipart/related; type="application/dicom+json"; boundary={}'


def _metadata(ds: Dataset, prefix: str) -> tuple[dict, dict[str, bytes]]:  # type: ignore[type-arg]
    """`ds` as DICOM JSON with every bulk value behind a BulkDataURI, and those values."""
    bulk: dict[str, bytes] = {}

    def handler(element) -> str:  # type: ignore[no-untyped-def]
        uri = f"{prefix}/{element.tag:08X}"
        bulk[uri] = element.value
        return uri

    as_json = ds.to_json_dict(bulk_data_threshold=64, bulk_data_element_handler=handler)
    return as_json, bulk


def _body(parts: list[tuple[dict[str, str], bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for headers, body in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out += f"--{boundary}\r\n{head}\r\n".encode() + body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), JSON_STOW.format(boundary)


def _post(archive: ArchiveClient, live_server: str, parts) -> httpx.Response:  # type: ignore[no-untyped-def]
    body, content_type = _body(parts)
    return httpx.post(
        f"{live_server}/dicom-web/archives/{archive.archive_id}/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {archive.owner.token}",
            "Content-Type": content_type,
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )


def _json_part(objects: list) -> tuple[dict[str, str], bytes]:  # type: ignore[type-arg]
    return {"Content-Type": "application/dicom+json"}, json.dumps(objects).encode()


def _reasons(response: httpx.Response) -> list[str]:
    failed = response.json().get("00081198", {}).get("Value", [])
    return [item["00091001"]["Value"][0] for item in failed]


def test_metadata_and_uncompressed_bulk_are_stored_as_instances(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    series = ct_phantom(slices=3, size=32)
    objects, parts = [], []
    for ds in series:
        as_json, bulk = _metadata(ds, f"bulk/{ds.SOPInstanceUID}")
        objects.append(as_json)
        parts += [
            ({"Content-Type": "application/octet-stream", "Content-Location": uri}, value)
            for uri, value in bulk.items()
        ]
    response = _post(archive, live_server, [_json_part(objects), *parts])
    assert response.status_code == 200, response.text
    assert len(response.json()["00081199"]["Value"]) == 3

    ds = series[1]
    back = archive.scoped.retrieve_instance(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        media_types=(("application/dicom", EXPLICIT_VR_LITTLE_ENDIAN),),
    )
    assert back.PixelData == ds.PixelData
    for element in ds:
        if element.tag != 0x7FE00010:
            assert back[element.tag].value == element.value, element.keyword


def test_compressed_pixel_data_is_kept_in_its_transfer_syntax(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    original = dcmread(get_testdata_file("JPEG2000.dcm"))
    syntax = original.file_meta.TransferSyntaxUID
    frame = b"".join(next(generate_fragmented_frames(original.PixelData)))
    pixels = original.pixel_array
    del original.PixelData
    as_json, bulk = _metadata(original, "pixels")
    as_json["7FE00010"] = {"vr": "OB", "BulkDataURI": "pixels/7FE00010"}
    frame_part = (
        {
            "Content-Type": f"image/jp2; transfer-syntax={syntax}",
            "Content-Location": "pixels/7FE00010",
        },
        frame,
    )
    others = [
        ({"Content-Type": "application/octet-stream", "Content-Location": uri}, value)
        for uri, value in bulk.items()
    ]
    response = _post(archive, live_server, [_json_part([as_json]), frame_part, *others])
    assert response.status_code == 200, response.text
    back = archive.scoped.retrieve_instance(
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID
    )
    assert back.file_meta.TransferSyntaxUID == syntax  # kept as it came
    assert np.array_equal(back.pixel_array, pixels)


@pytest.mark.parametrize("name", ["emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm"])
def test_compressed_multi_frame_pixel_data_comes_one_frame_a_part(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, name: str
) -> None:
    """As WADO-RS returns it: one part a frame, in order, all with the BulkDataURI."""
    archive: ArchiveClient = make_archive()
    original = dcmread(get_testdata_file(name, download=False))
    syntax = original.file_meta.TransferSyntaxUID
    count = original.NumberOfFrames
    frames = [
        b"".join(f) for f in generate_fragmented_frames(original.PixelData, number_of_frames=count)
    ]
    assert len(frames) == original.NumberOfFrames > 1
    pixels = original.pixel_array
    del original.PixelData
    as_json, bulk = _metadata(original, "pixels")
    as_json["7FE00010"] = {"vr": "OB", "BulkDataURI": "pixels/7FE00010"}
    media = "image/jp2" if "4.90" in syntax else "image/x-dicom-rle"
    headers = {"Content-Type": f"{media}; transfer-syntax={syntax}",
               "Content-Location": "pixels/7FE00010"}  # fmt: skip
    others = [
        ({"Content-Type": "application/octet-stream", "Content-Location": uri}, value)
        for uri, value in bulk.items()
    ]

    one_short = [(headers, frame) for frame in frames[:-1]]
    short = _post(archive, live_server, [_json_part([as_json]), *one_short, *others])
    assert short.status_code == 409, short.text
    (reason,) = _reasons(short)
    assert f"{len(frames)} frame(s)" in reason and f"but {len(frames) - 1}" in reason, reason

    response = _post(
        archive, live_server, [_json_part([as_json]), *[(headers, f) for f in frames], *others]
    )
    assert response.status_code == 200, response.text
    back = archive.scoped.retrieve_instance(
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID
    )
    assert back.file_meta.TransferSyntaxUID == syntax  # kept as it came, frame by frame
    stored = generate_fragmented_frames(back.PixelData, number_of_frames=count)
    assert [b"".join(f) for f in stored] == frames
    assert np.array_equal(back.pixel_array, pixels)


def test_each_object_fails_alone_with_the_reason(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    good, missing, unnamed = ct_phantom(slices=3, size=16)
    good_json, good_bulk = _metadata(good, "good")
    missing_json, _ = _metadata(missing, "missing")  # its pixel data part is not sent
    unnamed_json, _ = _metadata(unnamed, "unnamed")
    del unnamed_json["00080018"]  # no SOPInstanceUID
    sr = dcmread(get_testdata_file("test-SR.dcm"))
    sr_json, sr_bulk = _metadata(sr, "sr")
    parts = [
        _json_part([good_json, missing_json, unnamed_json, sr_json]),
        *[
            ({"Content-Type": "application/octet-stream", "Content-Location": uri}, value)
            for uri, value in {**good_bulk, **sr_bulk}.items()
        ],
        ({"Content-Type": "application/octet-stream", "Content-Location": "stray"}, b"xx"),
    ]
    response = _post(archive, live_server, parts)
    assert response.status_code == 202, response.text
    stored = {s["00081155"]["Value"][0] for s in response.json()["00081199"]["Value"]}
    assert stored == {good.SOPInstanceUID, sr.SOPInstanceUID}
    reasons = _reasons(response)
    assert any("missing/7FE00010 is not in the request" in r for r in reasons), reasons
    assert any("no SOPInstanceUID" in r for r in reasons), reasons
    assert any("no object refers to the bulk data part stray" in r for r in reasons), reasons


@pytest.mark.parametrize(
    ("parts", "status", "says"),
    [
        ([({"Content-Type": "application/octet-stream"}, b"x")], 400, "application/dicom+json"),
        ([({"Content-Type": "application/dicom+json"}, b"[{")], 409, "not valid JSON"),
        ([({"Content-Type": "application/dicom+json"}, b'"text"')], 409, "array of objects"),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, parts, status: int, says: str
) -> None:
    archive: ArchiveClient = make_archive()
    response = _post(archive, live_server, parts)
    assert response.status_code == status, response.text
    assert says in response.text
    assert archive.scoped.search_for_studies() == []
