"""Index keys of an instance."""

from __future__ import annotations

import warnings

import pytest

from tests.dicom.helpers import sample_bytes
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.keys import instance_keys
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.synthetic import ct_phantom


def test_keys_of_a_ct_slice() -> None:
    ds = ct_phantom(slices=1, size=16)[0]
    keys = split_instance(write_part10(ds)).keys
    assert keys.study_instance_uid == ds.StudyInstanceUID
    assert keys.series_instance_uid == ds.SeriesInstanceUID
    assert keys.sop_instance_uid == ds.SOPInstanceUID
    assert keys.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert keys.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert (keys.patient_id, keys.patient_name, keys.patient_sex) == (
        "DEMO-0001",
        "Demo^Phantom",
        "O",
    )
    assert (keys.modality, keys.study_description) == ("CT", "Demo phantom")
    assert (keys.series_number, keys.instance_number, keys.number_of_frames) == (1, 1, 1)
    assert (keys.rows, keys.columns) == (16, 16)


@pytest.mark.parametrize(
    ("name", "frames", "syntax"),
    [
        ("test-SR.dcm", 0, "1.2.840.10008.1.2.1"),
        ("emri_small_jpeg_2k_lossless.dcm", 10, "1.2.840.10008.1.2.4.90"),
        ("rtstruct.dcm", 0, "1.2.840.10008.1.2"),  # a bare dataset: the guessed syntax
    ],
)
def test_frames_and_syntax(name: str, frames: int, syntax: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = instance_keys(read_dataset(sample_bytes(name)))
    assert keys.number_of_frames == frames
    assert keys.transfer_syntax_uid == syntax


def test_unusable_numbers_and_absent_text() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.SeriesNumber = None
    del ds.InstanceNumber, ds.AccessionNumber
    ds.PatientName = "Doe^Jane^^Dr"
    keys = instance_keys(ds)
    assert (keys.series_number, keys.instance_number, keys.accession_number) == (None, None, "")
    assert keys.patient_name == "Doe^Jane^^Dr"


def test_legacy_dates_are_read_and_overlong_values_fit_the_index() -> None:
    """Old equipment writes ACR-NEMA dates (YYYY.MM.DD) and times (HH:MM:SS); careless
    writers exceed the VRs' lengths. The index gets DICOM's forms and values cut to fit;
    what cannot be read is left out of it (the instance keeps every value as sent)."""
    ds = ct_phantom(slices=1, size=16)[0]
    ds.StudyDate = "1994.11.05"
    ds.StudyTime = "11:20:00"
    ds.PatientBirthDate = "05/11/1950"
    ds.PatientID = "P" * 80
    ds.Modality = "CT-WITH-A-LONG-CODE"
    ds.StudyDescription = "D" * 400
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = split_instance(write_part10(ds))
    keys = split.keys
    assert (keys.study_date, keys.study_time, keys.patient_birth_date) == ("19941105", "112000", "")
    assert (len(keys.patient_id), len(keys.modality), len(keys.study_description)) == (64, 16, 330)
    assert split.dataset_json["00080020"]["Value"] == ["1994.11.05"]
    assert split.dataset_json["00100020"]["Value"] == ["P" * 80]


@pytest.mark.parametrize(
    ("name", "date", "time"),
    [("OT-PAL-8-face.dcm", "19961029", "151859"), ("color-pl.dcm", "19941105", "112000")],
)
def test_pydicom_files_with_legacy_dates_are_indexed(name: str, date: str, time: str) -> None:
    keys = instance_keys(read_dataset(sample_bytes(name)))
    assert (keys.study_date, keys.study_time) == (date, time)
