"""PS3.15 Retain Longitudinal Temporal Information with Modified Dates: per-patient shifts."""

from __future__ import annotations

from datetime import date, timedelta
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.dicom.test_deidentify import (
    DATED,
    KEY,
    OTHER_KEY,
    by_path,
    part10,
    sample,
    temporal,
    unlisted_dates,
)
from voxelhub.dicom.date_shift import MAX_SHIFT_DAYS, shift_value
from voxelhub.dicom.deid_policy import DeidPolicy, load_stored
from voxelhub.dicom.deidentify import deidentify, deidentify_bytes
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom

SHIFT = DeidPolicy(shift_dates=True)


def instance(patient_id: str, study_date: str, *, issuer: str = "") -> Dataset:
    ds = ct_phantom(slices=1, size=8, patient=PatientInfo(patient_id=patient_id))[0]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = "101112"
    ds.AcquisitionDateTime = f"{study_date}101112.250000+0100"
    if issuer:
        ds.IssuerOfPatientID = issuer
    return ds


def day(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def shift_of(original: Dataset, result: Dataset) -> int:
    """How many days back the Study Date moved."""
    days = (day(original.StudyDate) - day(result.StudyDate)).days
    assert 1 <= days <= MAX_SHIFT_DAYS
    return days


def test_one_patients_studies_keep_their_interval_and_another_patient_moves_differently() -> None:
    first, later = instance("MRN-1", "20230105"), instance("MRN-1", "20240210")
    other = instance("MRN-2", "20230105")
    originals = [part10(ds) for ds in (first, later, other)]
    results = [dcmread(BytesIO(deidentify_bytes(d, SHIFT, key=KEY)[0])) for d in originals]
    days = [shift_of(o, r) for o, r in zip((first, later, other), results, strict=True)]
    assert days[0] == days[1], "one patient, one shift"
    assert days[2] != days[0], "another patient, another shift"
    interval = day(later.StudyDate) - day(first.StudyDate)
    assert day(results[1].StudyDate) - day(results[0].StudyDate) == interval
    for result, original, moved in zip(results, (first, later, other), days, strict=True):
        expected = (day(original.StudyDate) - timedelta(days=moved)).strftime("%Y%m%d")
        assert (result.SeriesDate, result.ContentDate) == (expected, expected)
        assert result.AcquisitionDateTime == f"{expected}101112.250000+0100"
        assert result.StudyTime == "101112", "times of day are kept"
        assert result.PatientBirthDate == "", "Table E.1-1: birth date is not a dates option's"
        assert result.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [i.CodeValue for i in result.DeidentificationMethodCodeSequence] == [
            "113100",
            "113107",
        ]


def test_the_issuer_of_the_patient_id_is_part_of_the_patient() -> None:
    here, there = instance("MRN-1", "20230105", issuer="HOSP-A"), instance("MRN-1", "20230105")
    originals = (dcmread(BytesIO(part10(here))), dcmread(BytesIO(part10(there))))
    deidentify(here, SHIFT, key=KEY)
    deidentify(there, SHIFT, key=KEY)
    assert shift_of(originals[0], here) != shift_of(originals[1], there)


@pytest.mark.parametrize(("name", "ds"), DATED, ids=[name for name, _ in DATED])
def test_every_date_at_any_depth_moves_by_the_same_days_and_times_stay(
    name: str, ds: Dataset
) -> None:
    before = temporal(ds)
    vrs = {path: elem_vr for path, elem_vr in vr_by_path(ds).items() if path in before}
    data, report = deidentify_bytes(part10(ds), SHIFT, key=KEY)
    after = temporal(dcmread(BytesIO(data)))
    # Patient's Birth Date gets the table's Z; so does a sequence the table replaces
    # whole (SR Content Sequence: D, one empty item), with the dates in it.
    gone = {path for path in before if path not in after}
    assert gone <= {"00100030"} | {path for path in before if "[" in path}, name
    days = {
        (day(before[path][:8]) - day(after[path][:8])).days
        for path in before
        if vrs[path] in ("DA", "DT") and path not in gone
    }
    assert len(days) == 1 and 1 <= next(iter(days)) <= MAX_SHIFT_DAYS, f"{name}: {days}"
    for path, value in before.items():
        if path in gone:
            continue
        if vrs[path] in ("DA", "DT"):
            assert after[path][8:] == value[8:], f"{name} {path}: time or offset changed"
        else:
            assert after[path] == value, f"{name} {path}: a time of day changed"
    assert not [c for c in report.changes if c.summary.startswith("emptied, a date")]


def vr_by_path(ds: Dataset) -> dict[str, str]:
    return {name: str(elem.VR) for name, elem in by_path(ds)}


def test_nested_unlisted_and_private_dates_are_shifted_and_reported() -> None:
    ds = unlisted_dates()
    block = ds.private_block(0x0009, "VOXELHUB TEST", create=True)
    block.add_new(0x01, "DT", "20240102101112")
    report = deidentify(ds, DeidPolicy(shift_dates=True, clean_private=False), key=KEY)
    days = (date(2024, 1, 2) - day(ds.ObservationDateTime)).days
    moved = (date(2024, 1, 2) - timedelta(days=days)).strftime("%Y%m%d")
    frame = ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert frame.FrameAcquisitionDateTime == f"{moved}101112.250000"
    assert frame.FrameReferenceDateTime == f"{moved}101112"
    assert block[0x01].value == f"{moved}101112"
    assert ds.SourceImageSequence[0].AcquisitionDateTime == f"{moved}101000"
    assert ds.TimeOfLastCalibration == "080910"
    dose = ds.RadiopharmaceuticalInformationSequence[0]
    assert dose.RadiopharmaceuticalStartTime == "093000"
    changes = {(c.attribute, c.action) for c in report.changes}
    assert {
        ("ObservationDateTime", "C"),
        ("DateOfLastCalibration", "C"),
        ("PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameAcquisitionDateTime",
         "C"),
        ("SourceImageSequence[0].AcquisitionDateTime", "C"),
        ("SourceImageSequence[0].Date", "C"),
        ("(0009,1001)", "C"),
        ("PatientBirthDate", "Z"),
    } <= changes  # fmt: skip
    assert not [c for c in report.changes if "Time" in c.attribute and c.action != "C"]
    shifted = next(c for c in report.changes if c.attribute == "ObservationDateTime")
    assert str(days) not in shifted.summary, "the report does not say how far dates moved"


def test_sr_observation_date_time_is_shifted_with_the_content_date() -> None:
    original, ds = sample("test-SR.dcm"), sample("test-SR.dcm")
    deidentify(ds, SHIFT, key=KEY)
    assert ds.ObservationDateTime != original.ObservationDateTime
    assert ds.ObservationDateTime[8:] == original.ObservationDateTime[8:]
    assert ds.ContentDate == ds.ObservationDateTime[:8] != original.ContentDate
    assert ds.ContentTime == original.ContentTime


@pytest.mark.parametrize(
    ("value", "vr", "expected"),
    [
        ("20240102", "DA", "20221128"),
        ("2024.01.02", "DA", "20221128"),
        ("20240101-20240131", "DA", "20221127-20221227"),
        ("-20240131", "DA", "-20221227"),
        ("20240101-", "DA", "20221127-"),
        ("20240102101112.250000+0100", "DT", "20221128101112.250000+0100"),
        ("20240102-0500", "DT", "20221128-0500"),
        ("2024010223", "DT", "2022112823"),
        ("202401", "DT", "202212"),  # 400 days: 13 months
        ("202401+0100", "DT", "202212+0100"),
        ("2024", "DT", "2023"),  # 400 days: 1 year
        ("", "DA", ""),
        ("2024-01-02", "DA", None),
        ("20240230", "DA", None),
        ("20240102", "TM", None),
        ("yesterday", "DA", None),
        ("00010102", "DA", None),  # before the year 1
        ("20241301", "DT", None),
        ("20240102251112", "DT", None),
        ("20240102+2500", "DT", None),
        ("20240101-20240131", "DT", None),
    ],
)
def test_a_value_is_shifted_or_refused(value: str, vr: str, expected: str | None) -> None:
    assert shift_value(value, vr, days=400) == expected


def test_multiple_values_shift_and_unparseable_dates_are_emptied_and_reported() -> None:
    ds = instance("MRN-1", "20240102")
    ds.CalibrationDate = ["20240102", "20240103"]
    ds.DateOfLastCalibration = "20240102"
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.DateOfSecondaryCapture = "2024-01-02"
    ds.AcquisitionDateTime = "2024"
    report = deidentify(ds, SHIFT, key=KEY)
    days = (date(2024, 1, 2) - day(ds.StudyDate)).days
    moved = [(date(2024, 1, d) - timedelta(days=days)).strftime("%Y%m%d") for d in (2, 3)]
    assert list(ds.CalibrationDate) == moved
    assert ds.DateOfSecondaryCapture == ""
    assert ds.AcquisitionDateTime == str(2024 - round(days / 365.2425))
    emptied = next(c for c in report.changes if c.attribute == "DateOfSecondaryCapture")
    assert emptied.action == "Z" and emptied.summary.startswith("emptied, a date that could not")


def test_the_same_instance_gets_the_same_dates_every_time_and_other_keys_others() -> None:
    data = part10(instance("MRN-1", "20230105"))
    first = dcmread(BytesIO(deidentify_bytes(data, SHIFT, key=KEY)[0]))
    again = dcmread(BytesIO(deidentify_bytes(data, SHIFT, key=KEY)[0]))
    other = dcmread(BytesIO(deidentify_bytes(data, SHIFT, key=OTHER_KEY)[0]))
    assert first.StudyDate == again.StudyDate and first.StudyDate != "20230105"
    assert other.StudyDate not in ("20230105", first.StudyDate)
    original = instance("MRN-1", "20230105")
    shifts = set()
    for index in range(24):  # the key, not the patient ID, decides the shift
        key = bytes([index]) * 32
        shifts.add(shift_of(original, dcmread(BytesIO(deidentify_bytes(data, SHIFT, key=key)[0]))))
    assert len(shifts) >= 20


def test_shifted_dates_are_not_also_retained_or_cleaned_twice() -> None:
    with pytest.raises(DicomError) as caught:
        DeidPolicy(retain_dates=True, shift_dates=True)
    assert caught.value.code == "invalid_policy" and caught.value.attribute == "shift_dates"
    assert "retain_dates" in caught.value.message and "shift_dates" in caught.value.message
    with pytest.raises(DicomError, match="cannot both be true"):
        DeidPolicy.from_json({"retain_dates": True, "shift_dates": True})
    with pytest.raises(DicomError, match="true or false"):
        DeidPolicy.from_json({"shift_dates": "yes"})
    stored = {k: v for k, v in DeidPolicy(retain_dates=True).to_json().items()
              if k != "shift_dates"}  # fmt: skip
    assert load_stored(stored).policy == DeidPolicy(retain_dates=True)
    assert DeidPolicy.from_json(SHIFT.to_json()) == SHIFT


def test_listed_dates_the_dates_option_does_not_keep_get_the_table_action() -> None:
    ds = instance("MRN-1", "20240102")
    ds.GPSTimeStamp = "20240102101112"  # X in every option
    ds.FrameOriginTimestamp = b"\x01" * 8  # kept by Full Dates, but no date to shift: D
    ds.TimezoneOffsetFromUTC = "+0100"  # kept, as a DT's own offset is
    deidentify(ds, SHIFT, key=KEY)
    assert "GPSTimeStamp" not in ds
    assert ds.FrameOriginTimestamp == bytes(8)
    assert ds.TimezoneOffsetFromUTC == "+0100"
