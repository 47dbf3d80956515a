"""Uploads over the HTTP API: DICOM series into the store and cases, images, bad input."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pytest
import SimpleITK
from fastapi.testclient import TestClient
from pydicom.uid import EnhancedMRImageStorage
from sqlalchemy import func, select

from tests.dicom.helpers import ball, enhanced, sampled_series
from tests.ingest.conftest import Uploader, dicom_files, shuffled_ct, zip_bytes
from tests.ingest.helpers import by_outcome, complete, open_upload, put_chunks, upload
from voxelhub.archives.models import Case, CaseValue
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import AIR, BONE, ct_phantom, phantom_volume
from voxelhub.store.models import Instance, Series, Study


def tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def case_values(database_url: str, archive_id: object) -> dict[str, dict[str, CaseValue]]:
    """Case title → interface → value row."""
    with session_scope(database_url) as db:
        rows = db.execute(
            select(Case.title, CaseValue)
            .join(CaseValue, CaseValue.case_id == Case.id)
            .where(Case.archive_id == archive_id)
        ).all()
        grouped: dict[str, dict[str, CaseValue]] = {}
        for title, value in rows:
            grouped.setdefault(title, {})[value.interface] = value
        return grouped


def read_image(runtime: Runtime, value: CaseValue, tmp_path: Path) -> SimpleITK.Image:
    path = tmp_path / value.value["filename"]
    path.write_bytes(runtime.store.get(value.object_keys[0]))
    return SimpleITK.ReadImage(str(path))


def count(database_url: str, model: Any, archive_id: object) -> int:
    with session_scope(database_url) as db:
        return db.scalar(select(func.count()).where(model.archive_id == archive_id)) or 0


@pytest.mark.parametrize("packing", ["zip", "tar.gz", "folder"])
def test_ct_series_is_stored_and_converted(
    packing: str,
    client: TestClient,
    uploader: Uploader,
    runtime: Runtime,
    database_url: str,
    tmp_path: Path,
) -> None:
    series = shuffled_ct(slices=8, size=64)
    files = dicom_files(series)
    if packing == "zip":
        files = {"study.zip": zip_bytes(files)}
    elif packing == "tar.gz":
        files = {"study.tar.gz": tar_gz_bytes(files)}
    report = upload(client, uploader.account, uploader.archive_id, files, chunk=64 << 10)

    assert report["state"] == "done"
    assert report["counts"]["stored"] == 8, report
    stored = by_outcome(report)["stored"]
    assert {f["sop_instance_uid"] for f in stored} == {ds.SOPInstanceUID for ds in series}
    if packing != "folder":
        assert all(f["path"].startswith(f"study.{packing}/CT/") for f in stored)
    assert count(database_url, Instance, uploader.archive_id) == 8
    assert count(database_url, Series, uploader.archive_id) == 1
    assert count(database_url, Study, uploader.archive_id) == 1

    [series_report] = report["series"]
    assert series_report["outcome"] == "converted", series_report
    assert series_report["interface"] == "series-1"
    assert series_report["volume_interface"] == "series-1-volume"
    values = case_values(database_url, uploader.archive_id)
    [(title, interfaces)] = values.items()
    assert title == series_report["case_title"]
    assert title.startswith("DEMO-0001 / ") and title.endswith(" / Demo phantom")
    series_value = interfaces["series-1"]
    assert series_value.kind == "dicom_series"
    assert series_value.value["series_instance_uid"] == series[0].SeriesInstanceUID
    assert series_value.value["number_of_instances"] == 8
    volume_value = interfaces["series-1-volume"]
    assert volume_value.kind == "image"
    image = read_image(runtime, volume_value, tmp_path)
    assert image.GetSize() == (64, 64, 8)
    assert image.GetSpacing() == pytest.approx((1.5, 1.5, 2.5))
    assert image.GetOrigin() == pytest.approx((-48.0, -48.0, 0.0))
    # Ordered by position, not by the shuffled InstanceNumbers: the phantom comes back.
    assert np.array_equal(SimpleITK.GetArrayFromImage(image), phantom_volume(8, 64))


def test_the_same_upload_twice_stores_nothing_twice(
    client: TestClient, uploader: Uploader, database_url: str
) -> None:
    files = {"study.zip": zip_bytes(dicom_files(shuffled_ct(slices=4, size=32)))}
    first = upload(client, uploader.account, uploader.archive_id, files)
    assert first["counts"]["stored"] == 4
    second = upload(client, uploader.account, uploader.archive_id, files)
    assert second["state"] == "done"
    assert second["counts"] == {"duplicate": 4, "series_duplicate": 1}
    assert all(f["reason"] == "this instance is stored already" for f in second["files"])
    assert count(database_url, Instance, uploader.archive_id) == 4
    [(_, interfaces)] = case_values(database_url, uploader.archive_id).items()
    assert sorted(interfaces) == ["series-1", "series-1-volume"]


def test_an_enhanced_ct_sent_in_two_parts_becomes_one_volume(
    client: TestClient, uploader: Uploader, runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """Each upload converts what the series holds so far; the second reads the first
    multi-frame instance back from the store."""
    series = ct_phantom(slices=8, size=32)
    upper, lower = enhanced(series[4:]), enhanced(series[:4])
    lower.SeriesInstanceUID = upper.SeriesInstanceUID
    for part, slices in [(upper, 4), (lower, 8)]:
        files = {f"{part.SOPInstanceUID}.dcm": write_part10(part)}
        report = upload(client, uploader.account, uploader.archive_id, files)
        [series_report] = report["series"]
        assert series_report["outcome"] == "converted", series_report
        [(_, interfaces)] = case_values(database_url, uploader.archive_id).items()
        image = read_image(runtime, interfaces[series_report["volume_interface"]], tmp_path)
        assert image.GetSize() == (32, 32, slices)
    assert image.GetSpacing() == pytest.approx((1.5, 1.5, 2.5))
    assert image.GetOrigin() == pytest.approx((-24.0, -24.0, 0.0))
    assert np.array_equal(SimpleITK.GetArrayFromImage(image), phantom_volume(8, 32))


def test_an_enhanced_mr_of_several_time_points_is_stored_but_not_a_volume(
    client: TestClient, uploader: Uploader
) -> None:
    image = enhanced(ct_phantom(slices=4, size=16), sop_class_uid=EnhancedMRImageStorage)
    image.Modality = "MR"
    for index, frame in enumerate(image.PerFrameFunctionalGroupsSequence):
        frame.FrameContentSequence[0].TemporalPositionIndex = index // 2 + 1
    report = upload(client, uploader.account, uploader.archive_id, {"mr.dcm": write_part10(image)})
    assert report["counts"]["stored"] == 1
    [series_report] = report["series"]
    assert series_report["outcome"] == "failed"
    assert "2 temporal positions (TemporalPositionIndex 1, 2)" in series_report["reason"]


def _nifti(path: Path) -> SimpleITK.Image:
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    image = SimpleITK.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    SimpleITK.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))
    return image


@pytest.mark.parametrize(
    ("name", "stored_as"),
    [("brain.nii.gz", "brain.mha"), ("brain.nii", "brain.mha"), ("brain.nrrd", "brain.mha"),
     ("brain.mha", "brain.mha")],
)  # fmt: skip
def test_research_image_becomes_an_image_value(
    name: str,
    stored_as: str,
    client: TestClient,
    uploader: Uploader,
    runtime: Runtime,
    database_url: str,
    tmp_path: Path,
) -> None:
    original = _nifti(tmp_path / name)
    report = upload(client, uploader.account, uploader.archive_id,
                    {f"sub-01/{name}": (tmp_path / name).read_bytes()})  # fmt: skip
    [entry] = report["files"]
    assert entry["outcome"] == "stored", entry
    assert entry["interface"] == "image"
    value = case_values(database_url, uploader.archive_id)["sub-01/brain"]["image"]
    assert value.kind == "image" and value.value["filename"] == stored_as
    (tmp_path / "back").mkdir()
    back = read_image(runtime, value, tmp_path / "back")
    assert back.GetSpacing() == pytest.approx(original.GetSpacing(), abs=1e-5)
    assert back.GetOrigin() == pytest.approx(original.GetOrigin(), abs=1e-5)
    assert np.array_equal(SimpleITK.GetArrayFromImage(back), SimpleITK.GetArrayFromImage(original))
    again = upload(client, uploader.account, uploader.archive_id,
                   {f"sub-01/{name}": (tmp_path / name).read_bytes()})  # fmt: skip
    assert again["files"][0]["outcome"] == "duplicate"


def test_mhd_with_its_data_file_and_a_tiff(
    client: TestClient, uploader: Uploader, database_url: str, tmp_path: Path
) -> None:
    _nifti(tmp_path / "ct.mhd")
    SimpleITK.WriteImage(
        SimpleITK.GetImageFromArray(np.zeros((40, 30), np.uint8)), str(tmp_path / "slide.tif")
    )
    files = {name: (tmp_path / name).read_bytes() for name in ("ct.mhd", "ct.raw", "slide.tif")}
    report = upload(client, uploader.account, uploader.archive_id, files)
    outcomes = {f["path"]: (f["outcome"], f["format"]) for f in report["files"]}
    assert outcomes == {
        "ct.mhd": ("stored", "metaimage"),
        "ct.raw": ("skipped", None),
        "slide.tif": ("stored", "tiff"),
    }
    values = case_values(database_url, uploader.archive_id)
    assert values["ct"]["image"].value["filename"] == "ct.mha"
    assert values["slide"]["image"].value["filename"] == "slide.tif"


def _zip_with_symlink(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("link-to-passwd")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def test_bad_files_are_reported_and_the_good_ones_kept(
    client: TestClient, uploader: Uploader, database_url: str
) -> None:
    good = dicom_files(shuffled_ct(slices=3, size=32))
    first = next(iter(good.values()))
    inner = {
        **good,
        "bad/truncated.dcm": first[: len(first) - 500],
        "bad/random.bin": os.urandom(4096),
        "../evil": b"outside",
        "bomb.dcm": bytes(40 << 20),
    }
    files = {
        "study.zip": _zip_with_symlink(inner),
        "noise.dat": os.urandom(10_000),
        "cut.dcm": first[:1000],
    }
    report = upload(client, uploader.account, uploader.archive_id, files)
    reasons = {f["path"]: (f["outcome"], f["reason"]) for f in report["files"]}
    assert reasons["study.zip/bad/truncated.dcm"][0] == "rejected"
    assert "truncated" in reasons["study.zip/bad/truncated.dcm"][1]
    assert reasons["study.zip/bad/random.bin"][0] == "rejected"
    assert "not a recognised image format" in reasons["study.zip/bad/random.bin"][1]
    assert reasons["study.zip/../evil"] == (
        "rejected",
        "not extracted: the name contains '..'; a path may not leave the upload",
    )
    assert "zip bomb" in reasons["study.zip/bomb.dcm"][1]
    assert "symbolic links" in reasons["study.zip/link-to-passwd"][1]
    assert reasons["noise.dat"][0] == "rejected"
    assert reasons["cut.dcm"][0] == "rejected"
    assert report["counts"]["stored"] == 3
    assert report["series"][0]["outcome"] == "converted"
    assert count(database_url, Instance, uploader.archive_id) == 3


def test_a_tar_cannot_escape_or_explode(client: TestClient, uploader: Uploader) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {"../escape.dcm": b"x" * 10, "/abs.dcm": b"y" * 10,
                           "zeros.bin": bytes(30 << 20)}.items():  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    report = upload(client, uploader.account, uploader.archive_id, {"x.tar.gz": buffer.getvalue()})
    reasons = {f["path"]: f["reason"] for f in report["files"]}
    assert "'..'" in reasons["x.tar.gz/../escape.dcm"]
    assert "absolute" in reasons["x.tar.gz//abs.dcm"]
    assert "bomb" in reasons["x.tar.gz/zeros.bin"]
    assert "links" in reasons["x.tar.gz/link"]
    assert report["state"] == "failed"
    assert all(f["outcome"] == "rejected" for f in report["files"])


def test_resume_after_a_dropped_connection(client: TestClient, uploader: Uploader) -> None:
    data = zip_bytes(dicom_files(shuffled_ct(slices=4, size=32)))
    chunk = 512
    account = uploader.account
    upload_id = open_upload(client, account, uploader.archive_id)
    half = (len(data) // chunk // 2) * chunk
    assert half >= 2 * chunk
    put_chunks(client, account, upload_id, "ct.zip", data, chunk=chunk, stop=half)

    # The connection dropped: ask how far the file got.
    status = client.get(f"/api/v1/uploads/{upload_id}", headers=account.headers).json()
    assert status["state"] == "open"
    assert status["files"] == [
        {"name": "ct.zip", "size": len(data), "received": half, "complete": False}
    ]
    early = client.post(f"/api/v1/uploads/{upload_id}/complete", headers=account.headers)
    assert early.status_code == 409 and early.json()["error"] == "upload_incomplete"
    gap = client.put(
        f"/api/v1/uploads/{upload_id}/files/ct.zip",
        content=data[half + chunk : half + 2 * chunk],
        headers={**account.headers,
                 "Content-Range": f"bytes {half + chunk}-{half + 2 * chunk - 1}/{len(data)}"},
    )  # fmt: skip
    assert gap.status_code == 409
    assert gap.json()["detail"]["received"] == half
    # A retried chunk that overlaps what arrived is fine: the known bytes are skipped.
    done = put_chunks(client, account, upload_id, "ct.zip", data, chunk=chunk, start=half - 100)
    assert done["complete"] is True and done["received"] == len(data)
    report = complete(client, account, upload_id)
    assert report["counts"]["stored"] == 4
    again = client.get(f"/api/v1/uploads/{upload_id}/report", headers=account.headers)
    assert again.json() == report
    closed = client.put(f"/api/v1/uploads/{upload_id}/files/more.dcm", content=b"x",
                        headers=account.headers)  # fmt: skip
    assert closed.status_code == 409 and closed.json()["error"] == "upload_closed"


def test_only_uploaders_upload_and_only_their_own(
    client: TestClient, uploader: Uploader, make_user
) -> None:  # type: ignore[no-untyped-def]
    viewer = make_user()
    stranger = make_user()
    response = client.put(
        f"/api/v1/archives/{uploader.archive_id}/members",
        json={"username": viewer.username, "role": "viewer"},
        headers=uploader.account.headers,
    )
    assert response.status_code == 200
    denied = client.post("/api/v1/uploads", json={"archive_id": str(uploader.archive_id)},
                         headers=viewer.headers)  # fmt: skip
    assert denied.status_code == 403 and "uploader role" in denied.json()["message"]
    upload_id = open_upload(client, uploader.account, uploader.archive_id)
    hidden = client.get(f"/api/v1/uploads/{upload_id}", headers=stranger.headers)
    assert hidden.status_code == 404
    bad_name = client.put(f"/api/v1/uploads/{upload_id}/files/a/../../b", content=b"x",
                          headers=uploader.account.headers)  # fmt: skip
    assert bad_name.status_code in (400, 404)
    bad_range = client.put(f"/api/v1/uploads/{upload_id}/files/a.dcm", content=b"xyz",
                           headers={**uploader.account.headers,
                                    "Content-Range": "bytes 0-9/10"})  # fmt: skip
    assert bad_range.status_code == 400 and bad_range.json()["error"] == "invalid_content_range"
    gone = client.delete(f"/api/v1/uploads/{upload_id}", headers=uploader.account.headers)
    assert gone.status_code == 204
    assert client.get(f"/api/v1/uploads/{upload_id}", headers=uploader.account.headers
                      ).status_code == 404  # fmt: skip


def test_two_images_of_one_case_in_one_upload_do_not_replace_each_other(
    client: TestClient, uploader: Uploader, database_url: str, tmp_path: Path
) -> None:
    """`brain.nii.gz` and `brain.nrrd` side by side both name case `sub-01/brain`: the
    first is stored, the second is refused with the reason, not stored over the first."""
    _nifti(tmp_path / "brain.nii.gz")
    other = SimpleITK.GetImageFromArray(np.ones((3, 4, 5), np.int16))
    SimpleITK.WriteImage(other, str(tmp_path / "brain.nrrd"))
    files = {f"sub-01/{n}": (tmp_path / n).read_bytes() for n in ("brain.nii.gz", "brain.nrrd")}
    report = upload(client, uploader.account, uploader.archive_id, files)
    outcomes = {f["path"]: (f["outcome"], f.get("reason") or "") for f in report["files"]}
    assert outcomes["sub-01/brain.nii.gz"][0] == "stored", outcomes
    outcome, reason = outcomes["sub-01/brain.nrrd"]
    assert outcome == "rejected" and "sub-01/brain.nii.gz" in reason, outcomes
    values = case_values(database_url, uploader.archive_id)
    stored = values["sub-01/brain"]["image"]
    entry = next(f for f in report["files"] if f["path"] == "sub-01/brain.nii.gz")
    assert str(stored.id) == entry["value_id"]


def _cut_images(tmp_path: Path) -> dict[str, bytes]:
    """An .mha, an .mhd with its .raw, a .nii.gz and a .tif, each cut short."""
    image = SimpleITK.GetImageFromArray(np.arange(8 * 20 * 30, dtype=np.int16).reshape(8, 20, 30))
    for name in ("cut.mha", "cut.mhd", "cut.nii.gz", "cut.tif"):
        written = image[:, :, 0] if name.endswith(".tif") else image
        SimpleITK.WriteImage(written, str(tmp_path / name), useCompression=name.endswith(".gz"))

    def cut(name: str) -> bytes:
        return (tmp_path / name).read_bytes()[:-100]

    return {
        "mhd/cut.mhd": (tmp_path / "cut.mhd").read_bytes(),
        "mhd/cut.raw": cut("cut.raw"),
        "sub/cut.mha": cut("cut.mha"),
        "sub/cut.nii.gz": cut("cut.nii.gz"),
        "sub/cut.tif": cut("cut.tif"),
    }


def test_images_cut_short_are_rejected_and_not_stored(
    client: TestClient, uploader: Uploader, database_url: str, tmp_path: Path
) -> None:
    report = upload(client, uploader.account, uploader.archive_id, _cut_images(tmp_path))
    reasons = {f["path"]: (f["outcome"], f["reason"]) for f in report["files"]}
    assert {path: outcome for path, (outcome, _) in reasons.items()} == {
        "mhd/cut.mhd": "rejected",
        "mhd/cut.raw": "skipped",
        "sub/cut.mha": "rejected",
        "sub/cut.nii.gz": "rejected",
        "sub/cut.tif": "rejected",
    }
    assert "its data file cut.raw holds fewer bytes" in reasons["mhd/cut.mhd"][1]
    assert "holds fewer bytes than the header declares" in reasons["sub/cut.mha"][1]
    assert "truncated" in reasons["sub/cut.nii.gz"][1]
    assert "truncated TIFF" in reasons["sub/cut.tif"][1]
    assert report["state"] == "failed"
    assert case_values(database_url, uploader.archive_id) == {}


def test_a_gantry_tilted_ct_becomes_a_resampled_volume_and_the_report_says_so(
    client: TestClient, uploader: Uploader, runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """The slices are resampled within their planes: the MHA has the slice orientation and
    the normal as its axes, and the ball the scanner imaged lies where it was."""
    cosine, sine = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
    series = sampled_series(
        ball((1.0, -2.0, 16.0), 7.0), orientation=[1, 0, 0, 0, cosine, sine],
        positions=[(-16.0, -16.0, 2.5 * k) for k in range(13)], size=32, spacing_mm=1.0,
    )  # fmt: skip
    report = upload(client, uploader.account, uploader.archive_id, dicom_files(series))
    [series_report] = report["series"]
    assert series_report["outcome"] == "converted", series_report
    [warning] = series_report["warnings"]
    assert "gantry tilt of 20.0 degrees" in warning
    [(_, interfaces)] = case_values(database_url, uploader.archive_id).items()
    image = read_image(runtime, interfaces[series_report["volume_interface"]], tmp_path)
    assert image.GetSize() == (32, 43, 13)
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, cosine, -sine, 0, sine, cosine))
    assert image[image.TransformPhysicalPointToIndex((1.0, -2.0, 16.0))] == BONE
    assert image[image.TransformPhysicalPointToIndex((1.0, -2.0, 25.0))] == AIR


def test_a_nifti_whose_qform_and_sform_disagree_is_stored_as_its_sform_places_it(
    client: TestClient, uploader: Uploader, runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    qform, sform = np.diag([1.0, 1.0, 2.0, 1.0]), np.diag([0.9, 1.1, 2.5, 1.0])
    qform[:3, 3], sform[:3, 3] = (10.0, 20.0, 30.0), (-5.0, -6.0, -7.0)
    nifti = nibabel.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), None)
    nifti.set_qform(qform, code=1)
    nifti.set_sform(sform, code=2)
    nibabel.save(nifti, tmp_path / "t1.nii.gz")
    report = upload(client, uploader.account, uploader.archive_id,
                    {"sub-01/t1.nii.gz": (tmp_path / "t1.nii.gz").read_bytes()})  # fmt: skip
    [entry] = report["files"]
    assert entry["outcome"] == "stored", entry
    [warning] = entry["warnings"]
    assert "the sform (code 2, aligned) and the qform (code 1, scanner)" in warning
    value = case_values(database_url, uploader.archive_id)["sub-01/t1"]["image"]
    (tmp_path / "back").mkdir()
    back = read_image(runtime, value, tmp_path / "back")
    assert back.GetSpacing() == pytest.approx((0.9, 1.1, 2.5))
    assert back.GetOrigin() == pytest.approx((5.0, 6.0, -7.0))  # the sform's, in LPS
    assert back.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
