"""Every test file of pydicom and pydicom-data through DICOMweb as a viewer reads it.

Each file goes to an archive of its own (several files share UIDs) by STOW-RS; then the
sequence an OHIF-style viewer sends: QIDO-RS for the study, its series, the series
metadata, and frame 1 as stored (`transfer-syntax=*`) and as native pixels. What comes back
is checked against what the library makes of the same file (`tests/dicom/test_roundtrip.py`
checks the library against pydicom's own decoding).
"""

from __future__ import annotations

import warnings
from io import BytesIO

import httpx
import numpy as np
import pytest
from pydicom import dcmread

from tests.dicom.helpers import assert_same_elements, sample_bytes, sample_names, with_uids
from tests.dicom.test_roundtrip import FRAGMENTS, REFUSED, UNDECODABLE
from tests.store.conftest import ArchiveClient
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.join import frame_for_transfer_syntax
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, HTJ2K_LOSSLESS, SplitInstance
from voxelhub.dicom.split import split_instance

STOW = 'multipart/related; type="application/dicom"; boundary=sample'
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
NATIVE = AS_STORED.replace("*", EXPLICIT_VR_LITTLE_ENDIAN)
PNG = b"\x89PNG\r\n\x1a\n"
_MULTIPART_NATIVE = NATIVE.replace("application/octet-stream", "application/dicom")


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0]
    parts = []
    for chunk in response.content.split(b"--" + boundary.strip('"').encode())[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        kind = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-type")
        )
        parts.append((kind, body[:-2]))
    return parts


def _expected(data: bytes) -> SplitInstance:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return split_instance(data)


def _navigate(http: httpx.Client, base: str, name: str, split: SplitInstance) -> str | None:
    """QIDO-RS for the study and its series, then the series metadata: what is wrong."""
    keys = split.keys
    study, series = keys.study_instance_uid, keys.series_instance_uid
    found = http.get(f"{base}/studies", params={"StudyInstanceUID": study}).json()
    if len(found) != 1 or found[0]["00201208"]["Value"] != [1]:
        return f"QIDO-RS found {found}"
    if len(http.get(f"{base}/studies/{study}/series").json()) != 1:
        return "QIDO-RS found no series"
    metadata = http.get(f"{base}/studies/{study}/series/{series}/metadata").json()
    if [m["00080018"]["Value"][0] for m in metadata] != [keys.sop_instance_uid]:
        return f"the metadata holds {len(metadata)} instances"
    # Bulk data by the URI given, which names this archive's own copy: several files here
    # share UIDs, and at /dicom-web one URI would name the oldest copy for all the archives.
    root = base[: base.index("/dicom-web")]
    for tag, element in metadata[0].items():
        uri = element.get("BulkDataURI") if isinstance(element, dict) else None
        if name in UNDECODABLE and tag == "7FE00010":  # native pixels: refused, as below
            continue
        if uri and not (root + uri).startswith(f"{base}/studies/"):
            return f"the bulk data of {tag} is not in this archive: {uri}"
        if uri and (answer := http.get(root + uri)).status_code != 200:
            return f"the bulk data of {tag} answered {answer.status_code}"
    return None


def _frame_problems(http: httpx.Client, url: str, name: str, split: SplitInstance) -> list[str]:
    """Frame 1 as stored and as native pixels, against the library's split of the file."""
    assert split.pixel is not None
    problems = []
    stored = http.get(url, headers={"Accept": AS_STORED})
    if stored.status_code != 200:
        return [f"frames as stored answered {stored.status_code} {stored.text[:200]}"]
    ((kind, body),) = _parts(stored)
    if body != split.frames[0] or f"transfer-syntax={split.frames_transfer_syntax}" not in kind:
        problems.append(f"frame 1 as stored differs ({kind}, {len(body)} bytes)")
    native = http.get(url, headers={"Accept": NATIVE})
    if name in UNDECODABLE:  # refused before any body, pointing to the stored form
        instance = url.rsplit("/frames/", 1)[0]
        for asked, accept in (
            ("the native frame", NATIVE),
            (
                "the native instance",
                f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}",
            ),
            ("the native instance in a multipart body", _MULTIPART_NATIVE),
            ("the rendered frame", "image/png"),
        ):
            target = (
                url + "/rendered" if "rendered" in asked else url if "frame" in asked else instance
            )
            answer = http.get(target, headers={"Accept": accept})
            if answer.status_code != 406 or "transfer-syntax=*" not in answer.text:
                problems.append(f"{asked} answered {answer.status_code} {answer.text[:200]}")
        return problems
    if native.status_code != 200:
        return [*problems, f"the native frame answered {native.status_code}"]
    ((_, body),) = _parts(native)
    expected = frame_for_transfer_syntax(
        split.frames[0], split.frames_transfer_syntax, EXPLICIT_VR_LITTLE_ENDIAN, split.pixel
    )
    if body != expected:
        problems.append(f"native frame 1 differs ({len(body)} / {len(expected)} bytes)")
    instance, series = url.rsplit("/frames/", 1)[0], url.rsplit("/instances/", 1)[0]
    for shown, accept, signature in (
        (instance + "/rendered", "image/png", PNG),
        (series + "/rendered", "*/*", b"\xff\xd8\xff"),  # JPEG, the default (PS3.18 8.7.4)
    ):
        answer = http.get(shown, headers={"Accept": accept})
        if answer.status_code != 200 or signature not in answer.content[:200]:
            problems.append(f"{shown.rsplit('/', 2)[-2]} rendered answered {answer.status_code}")
    return problems


def _read_like_a_viewer(
    http: httpx.Client, base: str, name: str, split: SplitInstance
) -> list[str]:
    """The problems found with one stored file (none when all is as expected)."""
    wrong = _navigate(http, base, name, split)
    if wrong is not None:
        return [f"{name}: {wrong}"]
    if split.pixel is None:
        return []
    keys = split.keys
    url = (
        f"{base}/studies/{keys.study_instance_uid}/series/{keys.series_instance_uid}"
        f"/instances/{keys.sop_instance_uid}/frames/1"
    )
    return [f"{name}: {problem}" for problem in _frame_problems(http, url, name, split)]


def test_every_sample_file_is_stored_and_read_back_as_a_viewer_reads_it(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    owner = make_archive().owner
    problems: list[str] = []
    stored = refused = 0
    with httpx.Client(headers={"Authorization": f"Bearer {owner.token}"}, timeout=60) as http:
        for index, name in enumerate(sample_names()):
            data = sample_bytes(name)
            if name in FRAGMENTS:
                data = with_uids(data)
            archive: ArchiveClient = make_archive(name=f"Sample {index}", owner=owner)
            base = f"{live_server}/dicom-web/archives/{archive.archive_id}"
            body = b"--sample\r\nContent-Type: application/dicom\r\n\r\n" + data
            answer = http.post(
                f"{base}/studies",
                content=body + b"\r\n--sample--\r\n",
                headers={"Content-Type": STOW, "Accept": "application/dicom+json"},
            )
            if name in REFUSED:
                code = REFUSED[name][0]
                failed = answer.json().get("00081198", {}).get("Value", [])
                if answer.status_code != 409 or code not in failed[0]["00091001"]["Value"][0]:
                    problems.append(f"{name}: expected refusal {code}, got {answer.text[:200]}")
                refused += 1
                continue
            if answer.status_code != 200:
                problems.append(
                    f"{name}: STOW-RS answered {answer.status_code} {answer.text[:300]}"
                )
                continue
            stored += 1
            try:
                split = _expected(data)
            except DicomError as err:  # the server stored what the library refuses
                problems.append(f"{name}: stored, but the library refuses it: {err}")
                continue
            problems += _read_like_a_viewer(http, base, name, split)
    assert problems == []
    assert stored >= 130 and refused == len(REFUSED)


def _pixel_element(data: bytes) -> bytes:
    """The Pixel Data element of an explicit VR little endian Part-10 file, as in the file."""
    elem = dcmread(BytesIO(data))["PixelData"]
    return data[elem.file_tell - 12 : elem.file_tell + len(elem.value)]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the excess pixel data
def test_padded_pixel_data_is_stored_and_comes_back_bit_for_bit(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    data = sample_bytes("MR_small_padded.dcm")  # 128 bytes after the frame's 8192
    original = dcmread(BytesIO(data))
    archive: ArchiveClient = make_archive()
    base = f"{live_server}/dicom-web/archives/{archive.archive_id}"
    with httpx.Client(headers={"Authorization": f"Bearer {archive.owner.token}"}) as http:
        answer = http.post(
            f"{base}/studies",
            content=b"--sample\r\nContent-Type: application/dicom\r\n\r\n"
            + data
            + b"\r\n--sample--\r\n",
            headers={"Content-Type": STOW, "Accept": "application/dicom+json"},
        )
        assert answer.status_code == 200, answer.text
        url = (
            f"{base}/studies/{original.StudyInstanceUID}/series/"
            f"{original.SeriesInstanceUID}/instances/{original.SOPInstanceUID}"
        )
        syntax = str(original.file_meta.TransferSyntaxUID)
        ((_, native),) = _parts(http.get(url, headers={"Accept": _MULTIPART_NATIVE}))
        ((kind, stored),) = _parts(
            http.get(url, headers={"Accept": _MULTIPART_NATIVE.replace(syntax, "*")})
        )
    assert syntax == EXPLICIT_VR_LITTLE_ENDIAN
    assert _pixel_element(native) == _pixel_element(data)  # padding included
    assert_same_elements(original, dcmread(BytesIO(native)))
    assert f"transfer-syntax={HTJ2K_LOSSLESS}" in kind
    as_stored = dcmread(BytesIO(stored))  # HTJ2K frames: the padding has no place there
    assert np.array_equal(as_stored.pixel_array, original.pixel_array)
    assert_same_elements(original, as_stored)
