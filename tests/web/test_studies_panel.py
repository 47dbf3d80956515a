"""The archive page lists the archive's DICOM studies with thumbnails from DICOMweb."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Account, stow
from tests.web.test_pages import sign_in
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom


def test_archive_page_shows_studies_and_thumbnails(client: TestClient, make_user) -> None:  # type: ignore[no-untyped-def]
    owner: Account = make_user("owner")
    archive = client.post("/api/v1/archives", json={"name": "CT"}, headers=owner.headers).json()
    series = ct_phantom(slices=2, size=32, patient=PatientInfo(patient_name="Doe^Jane"))
    stow(client, owner, archive["id"], series)
    sign_in(client, owner)
    page = client.get(f"/archives/{archive['id']}")
    assert page.status_code == 200
    assert "Doe, Jane" in page.text
    thumb = (
        f"/dicom-web/archives/{archive['id']}/studies/{series[0].StudyInstanceUID}"
        f"/series/{series[0].SeriesInstanceUID}/thumbnail"
    )
    assert thumb in page.text
    image = client.get(thumb)  # the session cookie is enough for a GET
    assert image.status_code == 200
    # JPEG, the default of rendered resources (PS3.18 Table 8.7.4-1) where nothing else is asked.
    assert image.headers["content-type"].startswith("image/jpeg")
    assert image.content[:3] == b"\xff\xd8\xff"
