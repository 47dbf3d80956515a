"""An archive's de-identification policy is applied to DICOM on ingest."""

from __future__ import annotations

import logging
from datetime import date

import httpx
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select

from tests.store.conftest import ArchiveClient
from voxelhub.archives.models import Archive
from voxelhub.auth.models import AuditEvent
from voxelhub.core.db import session_scope
from voxelhub.dicom.deidentify import DeidChange, DeidPolicy, DeidReport
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom
from voxelhub.store.deid import DeidSummary


def test_stow_into_a_deidentifying_archive(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, database_url: str
) -> None:
    archive: ArchiveClient = make_archive()
    url = f"{live_server}/api/v1/archives/{archive.archive_id}/deidentification"
    headers = {"Authorization": f"Bearer {archive.owner.token}"}
    bad = httpx.put(url, json={"retain_dates": True, "keep_everything": True}, headers=headers)
    assert bad.status_code == 400
    assert "keep_everything" in bad.json()["message"]
    set_policy = httpx.put(url, json={"retain_dates": True}, headers=headers)
    assert set_policy.status_code == 200, set_policy.text
    assert httpx.get(url, headers=headers).json()["retain_dates"] is True

    series = ct_phantom(
        slices=4, size=32, patient=PatientInfo(patient_id="MRN-1234", patient_name="Doe^Jane")
    )
    response = archive.scoped.store_instances(series)
    assert len(response.ReferencedSOPSequence) == 4

    studies = archive.scoped.search_for_studies()
    assert len(studies) == 1, "remapped UIDs must keep the series together"
    study = studies[0]
    assert study["00100020"]["Value"][0].startswith("ANON-")
    assert study["00100010"]["Value"][0]["Alphabetic"] != "Doe^Jane"
    assert study["00080020"]["Value"] == [series[0].StudyDate], "dates kept by the policy"
    assert study["0020000D"]["Value"][0] != series[0].StudyInstanceUID
    assert study["00201208"]["Value"] == [4]
    assert archive.scoped.search_for_studies(search_filters={"PatientID": "MRN-1234"}) == []

    # The same series sent again maps to the same UIDs: stored once.
    again = archive.scoped.store_instances(series)
    assert len(again.ReferencedSOPSequence) == 4
    assert archive.scoped.search_for_studies()[0]["00201208"]["Value"] == [4]

    with session_scope(database_url) as db:
        event = db.scalars(
            select(AuditEvent).where(AuditEvent.action == "dicom.store").order_by(AuditEvent.id)
        ).first()
        assert event is not None
        assert event.detail["deidentified"]["instances"] == 4
        assert any(k.startswith("PatientName") for k in event.detail["deidentified"]["changes"])

    cleared = httpx.delete(url, headers=headers)
    assert cleared.status_code == 204
    assert httpx.get(url, headers=headers).json() is None


def test_the_audit_summary_names_attributes_inside_sequences() -> None:
    report = DeidReport(
        changes=(
            DeidChange("SourceImageSequence[0].(0009,1010)", "X", "removed"),
            DeidChange("SourceImageSequence[1].ReferencedSOPInstanceUID", "U", "uid remapped"),
            DeidChange("SourceImageSequence[0].ReferencedSOPInstanceUID", "U", "uid remapped"),
            DeidChange("PatientName", "D", "replaced"),
        ),
        method=(),
        codes=(),
    )
    summary = DeidSummary()
    summary.add(report)
    summary.add(None)
    assert summary.to_json() == {
        "instances": 1,
        "changes": {
            "SourceImageSequence[].ReferencedSOPInstanceUID:U": 2,
            "SourceImageSequence[].(0009,1010):X": 1,
            "PatientName:D": 1,
        },
    }


def test_a_stored_policy_with_a_name_outside_ascii_keeps_ingest_working(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    archive: ArchiveClient = make_archive()
    with session_scope(database_url) as db:  # as stored before names had to be ASCII
        row = db.get(Archive, archive.archive_id)
        assert row is not None
        row.deid_policy = {**DeidPolicy().to_json(), "patient_name": "山田^太郎"}
    series = ct_phantom(
        slices=2, size=32, patient=PatientInfo(patient_id="MRN-1234", patient_name="Doe^Jane")
    )
    with caplog.at_level(logging.WARNING, logger="voxelhub.store.deid"):
        response = archive.scoped.store_instances(series)
        archive.scoped.store_instances(series)  # warned once, not on every request
    assert len(response.ReferencedSOPSequence) == 2
    [study] = archive.scoped.search_for_studies()
    assert study["00100010"]["Value"][0]["Alphabetic"] == "U+5C71U+7530^U+592AU+90CE"
    assert study["00100020"]["Value"][0].startswith("ANON-")
    warnings = [r.getMessage() for r in caplog.records if r.name == "voxelhub.store.deid"]
    assert len(warnings) == 1, warnings
    assert str(archive.archive_id) in warnings[0] and "'patient_name'" in warnings[0]
    assert "'U+5C71U+7530^U+592AU+90CE'" in warnings[0]

    # A new policy with such a name is still refused, saying what is allowed.
    url = f"{live_server}/api/v1/archives/{archive.archive_id}/deidentification"
    headers = {"Authorization": f"Bearer {archive.owner.token}"}
    refused = httpx.put(url, json={"patient_name": "山田^太郎"}, headers=headers)
    assert refused.status_code == 400
    assert "printable ASCII" in refused.json()["message"]


def _series(study_date: str, patient_id: str = "MRN-1234") -> list[Dataset]:
    series = ct_phantom(slices=2, size=32, patient=PatientInfo(patient_id=patient_id))
    for ds in series:
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = "101112"
    return series


def test_stow_into_an_archive_that_shifts_dates(  # type: ignore[no-untyped-def]
    make_archive, live_server: str
) -> None:
    archive: ArchiveClient = make_archive()
    other: ArchiveClient = make_archive("Elsewhere", owner=archive.owner)
    headers = {"Authorization": f"Bearer {archive.owner.token}"}
    for target in (archive, other):
        url = f"{live_server}/api/v1/archives/{target.archive_id}/deidentification"
        both = httpx.put(url, json={"retain_dates": True, "shift_dates": True}, headers=headers)
        assert both.status_code == 400 and "shift_dates" in both.json()["message"]
        set_policy = httpx.put(url, json={"shift_dates": True}, headers=headers)
        assert set_policy.status_code == 200, set_policy.text
        assert httpx.get(url, headers=headers).json()["shift_dates"] is True

    first, later = _series("20230105"), _series("20240210")
    for series in (first, later):
        archive.scoped.store_instances(series)
    archive.scoped.store_instances(first)  # again: the same dates, stored once
    other.scoped.store_instances(first)

    studies = archive.scoped.search_for_studies()
    dates = sorted(_day(study["00080020"]["Value"][0]) for study in studies)
    assert len(dates) == 2 and [s["00201208"]["Value"] for s in studies] == [[2], [2]]
    assert dates[1] - dates[0] == date(2024, 2, 10) - date(2023, 1, 5), "the interval is kept"
    shift = (date(2023, 1, 5) - dates[0]).days
    assert 1 <= shift <= 3650
    assert {study["00080030"]["Value"][0] for study in studies} == {"101112"}
    [elsewhere] = other.scoped.search_for_studies()
    assert (date(2023, 1, 5) - _day(elsewhere["00080020"]["Value"][0])).days != shift
    assert archive.scoped.search_for_studies(search_filters={"StudyDate": "20230105"}) == []


def _day(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
