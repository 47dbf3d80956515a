"""De-identification by the PS3.15 Basic Profile: pydicom's test files and synthetic series."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ImplicitVRLittleEndian

from tests.dicom.helpers import sample_bytes
from voxelhub.dicom.deid_policy import StoredPolicy, ascii_replacement, load_stored
from voxelhub.dicom.deid_table import PROFILE
from voxelhub.dicom.deidentify import (
    RESOLVED_ACTIONS,
    DeidPolicy,
    deidentified_uid,
    deidentify,
    deidentify_bytes,
)
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.synthetic import ct_phantom

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
SAMPLES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm"]
RETAIN_ALL = DeidPolicy(
    retain_dates=True,
    retain_uids=True,
    retain_device_identity=True,
    retain_patient_characteristics=True,
    retain_descriptors=True,
)
UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, BaseTag, Any]]:
    """(path, tag, comparable value) of every element, in sequence items too."""
    for elem in ds:
        name = f"{path}{elem.tag:08X}"
        if elem.VR == "SQ":
            yield name, elem.tag, [sorted(str(e.value) for e in item) for item in elem.value]
            for index, item in enumerate(elem.value):
                yield from walk(item, f"{name}[{index}].")
        else:
            value = elem.value
            yield name, elem.tag, value if isinstance(value, bytes) else str(value)


def values(ds: Dataset) -> dict[str, Any]:
    return {path: value for path, _, value in walk(ds)}


def acted_on(ds: Dataset, policy: DeidPolicy) -> dict[str, Any]:
    """Non-empty values of the attributes the profile acts on (X, Z, D, U) under `policy`."""
    kept = policy.kept_options()
    found = {}
    for path, tag, value in walk(ds):
        rule = PROFILE.get(int(tag))
        if value not in ("", [], b"") and rule and not rule.kept_by & kept:
            found[path] = value
    return found


def sample(name: str) -> Dataset:
    return dcmread(BytesIO(sample_bytes(name)))


def datasets() -> list[tuple[str, Dataset]]:
    phantom = [(f"phantom[{i}]", ds) for i, ds in enumerate(ct_phantom(slices=3, size=32))]
    return [(name, sample(name)) for name in SAMPLES] + phantom


def anonymized(data: bytes, key: bytes) -> Dataset:
    """`data` de-identified by the default policy, as written and read back."""
    return dcmread(BytesIO(deidentify_bytes(data, DeidPolicy(), key=key)[0]))


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


# A value of each VR for the every-attribute dataset, none equal to a dummy value.
SAMPLE_VALUES: dict[str, Any] = {
    **dict.fromkeys(("AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"), "SECRET1"),
    **dict.fromkeys(("DS", "IS"), "7"),
    **dict.fromkeys(("FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"), 7),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b"SECRET!!"),
    "PN": "Secret^Person",
    "AS": "042Y",
    "AT": 0x00100010,
    "DA": "20240102",
    "DT": "20240102101112",
    "TM": "101112",
    "UI": "1.2.826.0.1.3680043.2.1",
    "UR": "http://example.org/secret",
}


def every_listed_attribute() -> Dataset:
    """An instance holding every attribute of Table E.1-1 that a dataset can hold."""
    ds = ct_phantom(slices=1, size=8)[0]
    for tag, rule in PROFILE.items():
        if tag >> 16 in (0x0000, 0x0002):  # command and file meta elements
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            item = Dataset()
            item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.2.{tag}"
            ds.add_new(tag, vr, Sequence([item]))
        else:
            ds.add_new(tag, vr, SAMPLE_VALUES[vr])
        assert rule.keyword == ds[tag].keyword
    return ds


def test_the_table_is_complete_and_named_as_in_the_dictionary() -> None:
    assert len(PROFILE) >= 450
    for tag, rule in PROFILE.items():
        assert rule.keyword == keyword_for_tag(tag), f"{tag:08X}"
        assert rule.action in RESOLVED_ACTIONS
    assert PROFILE[0x00100010].action == "Z"  # Patient's Name
    assert PROFILE[0x0020000D].action == "U"  # Study Instance UID
    assert PROFILE[0x00080020].kept_by == {"dates"}  # Study Date


@pytest.mark.parametrize("policy", [DeidPolicy(), RETAIN_ALL], ids=["basic", "retain-all"])
def test_every_listed_attribute_is_acted_on_or_kept_by_an_option(policy: DeidPolicy) -> None:
    original = every_listed_attribute()
    data, report = deidentify_bytes(part10(original), policy, key=KEY)
    result = dcmread(BytesIO(data))
    kept = policy.kept_options()
    for tag, rule in PROFILE.items():
        if tag not in original:
            continue
        before = values(Dataset({Tag(tag): original[tag]}))
        after = values(Dataset({Tag(tag): result[tag]})) if tag in result else {}
        name = f"{rule.keyword} ({rule.action})"
        if rule.kept_by & kept:
            assert after == before, f"{name} should be kept"
        else:
            unchanged = {
                p: v for p, v in after.items() if v not in ("", [], b"") and v == before[p]
            }
            assert not unchanged, f"{name} kept its value: {unchanged}"
    acted = [tag for tag, rule in PROFILE.items() if tag in original and not rule.kept_by & kept]
    assert len(report.changes) >= len(acted) > 100


@pytest.mark.parametrize(("name", "ds"), datasets(), ids=[name for name, _ in datasets()])
def test_no_listed_attribute_keeps_its_value(name: str, ds: Dataset) -> None:
    before = acted_on(ds, DeidPolicy())
    identity = (str(ds.get("PatientID", "")), str(ds.get("PatientName", "")))
    deidentify(ds, DeidPolicy(), key=KEY)
    after = values(ds)
    assert before, f"{name} holds no listed attribute: the test would prove nothing"
    kept = {path: value for path, value in before.items() if after.get(path) == value}
    assert not kept, f"{name}: {sorted(kept)}"
    assert re.fullmatch(r"ANON-[0-9A-F]{10}", ds.PatientID)
    assert ds.PatientName == ds.PatientID
    assert (ds.PatientID, str(ds.PatientName)) != identity


@pytest.mark.parametrize("name", SAMPLES)
def test_dates_are_removed_unless_retained(name: str) -> None:
    def dates(ds: Dataset) -> dict[str, Any]:
        return {
            path: value
            for path, tag, value in walk(ds)
            if int(tag) in PROFILE and "dates" in PROFILE[int(tag)].kept_by and value
        }

    original = dates(sample(name))
    removed, retained = sample(name), sample(name)
    deidentify(removed, DeidPolicy(), key=KEY)
    deidentify(retained, DeidPolicy(retain_dates=True), key=KEY)
    assert original, f"{name} has no dates"
    assert not set(dates(removed).items()) & set(original.items())
    assert dates(retained) == original
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"
    assert retained.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_a_series_keeps_its_uids_across_separate_uploads() -> None:
    series = ct_phantom(slices=3, size=32)
    originals = [part10(ds) for ds in series]
    first = [anonymized(data, KEY) for data in originals]
    again = [anonymized(data, KEY) for data in originals]
    other = [anonymized(data, OTHER_KEY) for data in originals]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert len({ds[keyword].value for ds in first}) == 1, keyword
        assert first[0][keyword].value != series[0][keyword].value, keyword
        assert first[0][keyword].value != other[0][keyword].value, keyword
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in again]
    assert len({ds.SOPInstanceUID for ds in first}) == 3
    for ds, original in zip(first, series, strict=True):
        assert ds.SOPClassUID == original.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert ds.SOPInstanceUID == deidentified_uid(original.SOPInstanceUID, key=KEY)


@pytest.mark.parametrize("name", SAMPLES)
def test_remapped_uids_are_valid_and_references_follow(name: str) -> None:
    original = sample(name)
    ds = sample(name)
    report = deidentify(ds, DeidPolicy(), key=KEY)
    remapped = {c.attribute for c in report.changes if c.action == "U"}
    assert {"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"} <= remapped
    new = values(ds)
    checked = 0
    for path, tag, old in walk(original):
        rule = PROFILE.get(int(tag))
        if rule and rule.action == "U" and path in new:
            uid = new[path]
            assert len(uid) <= 64 and UID_PATTERN.fullmatch(uid) and uid.startswith("2.25."), uid
            assert uid == deidentified_uid(old, key=KEY)
            checked += 1
    assert checked >= 3
    assert ds.SOPClassUID == original.SOPClassUID
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_rt_plan_references_are_remapped_inside_sequences() -> None:
    original, ds = sample("rtplan.dcm"), sample("rtplan.dcm")
    deidentify(ds, DeidPolicy(), key=KEY)
    reference = ds.ReferencedStructureSetSequence[0]
    before = original.ReferencedStructureSetSequence[0]
    assert reference.ReferencedSOPInstanceUID == deidentified_uid(
        before.ReferencedSOPInstanceUID, key=KEY
    )
    assert reference.ReferencedSOPClassUID == before.ReferencedSOPClassUID


def test_uids_are_kept_with_the_retain_uids_option() -> None:
    original, ds = sample("rtplan.dcm"), sample("rtplan.dcm")
    report = deidentify(ds, DeidPolicy(retain_uids=True), key=KEY)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.StudyInstanceUID == original.StudyInstanceUID
    assert "113110" in report.codes
    assert not [c for c in report.changes if c.action == "U"]


def test_private_attributes_are_removed_unless_the_policy_keeps_them() -> None:
    ds, kept = sample("CT_small.dcm"), sample("CT_small.dcm")
    private = [e.tag for e in ds.iterall() if e.tag.is_private]
    deidentify(ds, DeidPolicy(), key=KEY)
    deidentify(kept, DeidPolicy(clean_private=False), key=KEY)
    assert private
    assert not [e.tag for e in ds.iterall() if e.tag.is_private]
    assert [e.tag for e in kept.iterall() if e.tag.is_private] == private
    assert "Private attributes retained" in kept.DeidentificationMethod


def test_curves_overlays_and_file_meta_identity_are_removed() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.add_new(0x60000010, "US", 8)  # Overlay Rows
    ds.add_new(0x60003000, "OW", b"\xff" * 8)  # Overlay Data
    ds.add_new(0x60004000, "LT", "Secret^Person")  # Overlay Comments
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_CT"
    report = deidentify(ds, DeidPolicy(), key=KEY)
    assert not [elem.tag for elem in ds if elem.tag.group >> 8 in (0x50, 0x60)]
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    removed = {c.attribute for c in report.changes if c.action == "X"}
    assert {"OverlayData", "OverlayComments", "file_meta.SourceApplicationEntityTitle"} <= removed


@pytest.mark.parametrize("name", [*SAMPLES, "JPEG2000.dcm", "MR_small_bigendian.dcm"])
def test_pixel_data_and_transfer_syntax_are_untouched(name: str) -> None:
    data = sample_bytes(name)
    written, _ = deidentify_bytes(data, DeidPolicy(), key=KEY)
    before, after = dcmread(BytesIO(data)), dcmread(BytesIO(written))
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    assert after.get("PixelData") == before.get("PixelData")
    assert after.PatientIdentityRemoved == "YES"


def test_burned_in_annotation_is_refused_before_anything_changes() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DicomError) as caught:
        deidentify(ds, DeidPolicy(), key=KEY)
    assert caught.value.code == "burned_in_annotation"
    assert "identity" in caught.value.message and "refused" in caught.value.message
    assert ds.PatientID == "DEMO-0001"
    with pytest.raises(DicomError, match="refused"):
        deidentify_bytes(part10(ds), DeidPolicy(), key=KEY)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(DicomError) as caught:
        deidentify(ct_phantom(slices=1, size=8)[0], DeidPolicy(), key=b"secret")
    assert caught.value.code == "invalid_key"


def test_the_policy_names_the_patient_when_asked() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    deidentify(ds, DeidPolicy(patient_id="TRIAL-007", patient_name="Trial^007"), key=KEY)
    assert (ds.PatientID, str(ds.PatientName)) == ("TRIAL-007", "Trial^007")


def test_patient_characteristics_device_and_descriptors_options() -> None:
    ds, retained = ct_phantom(slices=1, size=8)[0], ct_phantom(slices=1, size=8)[0]
    for instance in (ds, retained):
        instance.PatientWeight, instance.PatientAge = 70, "042Y"
        instance.DeviceSerialNumber = "SN-123"
    deidentify(ds, DeidPolicy(), key=KEY)
    report = deidentify(retained, RETAIN_ALL, key=KEY)
    assert "PatientWeight" not in ds and ds.PatientSex == "" and ds.DeviceSerialNumber != "SN-123"
    assert "StudyDescription" not in ds
    assert (retained.PatientWeight, retained.PatientAge, retained.PatientSex) == (70, "042Y", "O")
    assert retained.DeviceSerialNumber == "SN-123"
    assert retained.StudyDescription == "Demo phantom"
    assert report.codes == ("113100", "113106", "113108", "113109", "113110")
    assert "Descriptors retained without cleaning" in report.method


@pytest.mark.parametrize(
    ("policy", "codes"),
    [
        (DeidPolicy(), ["113100"]),
        (DeidPolicy(retain_dates=True), ["113100", "113106"]),
        (DeidPolicy(retain_device_identity=True, retain_uids=True), ["113100", "113109", "113110"]),
    ],
)
def test_the_dataset_records_the_method(policy: DeidPolicy, codes: list[str]) -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    report = deidentify(ds, policy, key=KEY)
    assert ds.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == codes
    assert {item.CodingSchemeDesignator for item in ds.DeidentificationMethodCodeSequence} == {
        "DCM"
    }
    assert ds.DeidentificationMethodCodeSequence[0].CodeMeaning == (
        "Basic Application Confidentiality Profile"
    )
    method = list(ds.DeidentificationMethod)
    assert method == list(report.method) and all(len(value) <= 64 for value in method)
    assert list(report.codes) == codes


@pytest.mark.parametrize(
    "policy",
    [
        DeidPolicy(),
        RETAIN_ALL,
        DeidPolicy(clean_private=False, patient_id="P1", patient_name="A^B"),
    ],
)
def test_the_policy_round_trips_through_json(policy: DeidPolicy) -> None:
    stored = json.loads(json.dumps(policy.to_json()))
    assert DeidPolicy.from_json(stored) == policy
    assert set(stored) == set(DeidPolicy().to_json())


def test_unknown_policy_keys_are_refused_by_name() -> None:
    with pytest.raises(DicomError) as caught:
        DeidPolicy.from_json({"retain_dates": True, "retain_faces": True, "keep_all": False})
    assert caught.value.code == "invalid_policy"
    assert "keep_all" in caught.value.message and "retain_faces" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        {"retain_dates": "yes"},
        {"patient_id": 7},
        {"patient_name": "a\\b"},
        {"patient_id": "x" * 65},
    ],
)
def test_bad_policy_values_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(DicomError) as caught:
        DeidPolicy.from_json(data)
    assert caught.value.code == "invalid_policy"
    assert caught.value.attribute == next(iter(data))


def test_the_report_lists_changes_without_identifying_values() -> None:
    ds = sample("rtplan.dcm")
    secrets = [str(ds.PatientName), ds.PatientID, ds.InstitutionName, str(ds.OperatorsName)]
    report = deidentify(ds, DeidPolicy(), key=KEY)
    stored = json.dumps(report.to_json())
    assert not [secret for secret in secrets if secret in stored]
    changes = {(c.attribute, c.action) for c in report.changes}
    assert {
        ("PatientName", "D"),
        ("PatientID", "D"),
        ("StudyDate", "Z"),
        ("InstitutionName", "D"),
        ("InstitutionalDepartmentName", "X"),
        ("SOPInstanceUID", "U"),
        ("ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID", "U"),
        ("file_meta.MediaStorageSOPInstanceUID", "U"),
    } <= changes
    removed = next(c for c in report.changes if c.attribute == "InstitutionalDepartmentName")
    assert re.fullmatch(r"removed \(\d+ chars, hmac [0-9a-f]{8}\)", removed.summary)


def test_policy_names_outside_ascii_are_refused() -> None:
    # Written into an instance without a character set, "山田^太郎" came out as "??^??".
    for name in ("山田^太郎", "Müller^Hans"):
        with pytest.raises(DicomError) as caught:
            DeidPolicy(patient_name=name)
        assert caught.value.code == "invalid_policy"
        assert caught.value.attribute == "patient_name"
        assert "ASCII" in caught.value.message


def test_person_names_in_a_multi_byte_character_set_are_replaced() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds.PatientName = ds.OperatorsName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    result = dcmread(BytesIO(deidentify_bytes(part10(ds), DeidPolicy(), key=KEY)[0]))
    assert str(result.PatientName).startswith("ANON-")
    assert str(result.OperatorsName) == "ANONYMIZED"


def test_file_meta_network_addresses_of_the_sender_are_removed() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.file_meta.SourcePresentationAddress = "dicom://ct1.hospital.example:104"
    ds.file_meta.SendingPresentationAddress = "dicom://10.1.2.3:104"
    data, report = deidentify_bytes(part10(ds), DeidPolicy(), key=KEY)
    meta = dcmread(BytesIO(data)).file_meta
    assert "SourcePresentationAddress" not in meta and "SendingPresentationAddress" not in meta
    assert b"hospital.example" not in data and b"10.1.2.3" not in data
    removed = {c.attribute for c in report.changes if c.action == "X"}
    assert "file_meta.SourcePresentationAddress" in removed
    kept, _ = deidentify_bytes(part10(ds), DeidPolicy(retain_device_identity=True), key=KEY)
    assert dcmread(BytesIO(kept)).file_meta.SendingPresentationAddress == "dicom://10.1.2.3:104"


@pytest.mark.parametrize(("earlier", "expected"), [("MODIFIED", "MODIFIED"), ("", "UNMODIFIED")])
def test_retained_dates_that_were_shifted_before_stay_marked_modified(
    earlier: str, expected: str
) -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    if earlier:
        ds.LongitudinalTemporalInformationModified = earlier
    deidentify(ds, DeidPolicy(retain_dates=True), key=KEY)
    assert ds.LongitudinalTemporalInformationModified == expected
    deidentify(ds, DeidPolicy(), key=KEY)
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_an_earlier_de_identification_record_is_added_to_not_replaced() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.DeidentificationMethod = "Burned-in text masked by the sending site"
    earlier = Dataset()
    earlier.CodeValue, earlier.CodingSchemeDesignator = "113101", "DCM"
    earlier.CodeMeaning = "Clean Pixel Data Option"
    ds.DeidentificationMethodCodeSequence = Sequence([earlier])
    report = deidentify(ds, DeidPolicy(retain_dates=True), key=KEY)
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113101", "113100", "113106"]
    assert list(ds.DeidentificationMethod) == [
        "Burned-in text masked by the sending site",
        *report.method,
    ]
    assert report.codes == ("113100", "113106")
    deidentify(ds, DeidPolicy(retain_dates=True), key=KEY)  # again: nothing duplicated
    assert [item.CodeValue for item in ds.DeidentificationMethodCodeSequence] == codes
    assert len(ds.DeidentificationMethod) == 1 + len(report.method)


def test_the_report_lists_no_attribute_whose_value_did_not_change() -> None:
    ds = ct_phantom(slices=1, size=8)[0]
    ds.InstitutionName = "ANONYMIZED"  # already the dummy value
    ds.InstanceCreatorUID = "1.2.840.10008.1.2"  # a UID of the standard: kept
    ds.OperatorsName = "Secret^Person"
    before = values(ds)
    report = deidentify(ds, DeidPolicy(), key=KEY)
    after = values(ds)
    listed = {c.attribute for c in report.changes if not c.attribute.startswith("file_meta.")}
    changed = {
        keyword_for_tag(int(path, 16))
        for path, value in before.items()
        if "[" not in path and after.get(path) != value
    }
    assert listed == changed
    assert "InstitutionName" not in listed and "InstanceCreatorUID" not in listed
    assert "OperatorsName" in listed


# Times that are the time of a date: Table E.1-1 lists some, the rest go by the same rule.
TIMES_OF_DATES = frozenset(
    {"StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime",
     "TimeOfLastCalibration", "Time"}
)  # fmt: skip


def by_path(ds: Dataset, path: str = "") -> Iterator[tuple[str, DataElement]]:
    """Every element that is not a sequence, with its path ("0040A730[0].0040A032")."""
    for elem in ds:
        name = f"{path}{elem.tag:08X}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                yield from by_path(item, f"{name}[{index}].")
        else:
            yield name, elem


def temporal(ds: Dataset) -> dict[str, str]:
    """Non-empty dates, date-times and times of a date, by path, in sequence items too."""
    found = {}
    for name, elem in by_path(ds):
        if not elem.is_empty and (elem.VR in ("DA", "DT") or elem.keyword in TIMES_OF_DATES):
            found[name] = str(elem.value)
    return found


def unlisted_dates() -> Dataset:
    """An instance with dates and times that Table E.1-1 does not name, at several depths."""
    ds = ct_phantom(slices=1, size=8)[0]
    ds.ObservationDateTime = "20240102101112"
    ds.DateOfLastCalibration, ds.TimeOfLastCalibration = "20231201", "080910"
    content = Dataset()
    content.FrameAcquisitionDateTime = "20240102101112.250000"
    content.FrameReferenceDateTime = "20240102101112"
    frame = Dataset()
    frame.FrameContentSequence = Sequence([content])
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame])
    source = Dataset()  # a listed attribute in a listed sequence's item: the table's action
    source.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.99"
    source.AcquisitionDateTime = "20240102101000"
    source.Date = "20240101"
    ds.SourceImageSequence = Sequence([source])
    dose = Dataset()
    dose.RadiopharmaceuticalStartDateTime = "20240102093000"
    dose.RadiopharmaceuticalStartTime = "093000"  # no date's time: says nothing on its own
    ds.RadiopharmaceuticalInformationSequence = Sequence([dose])
    return ds


def implicit_vr(ds: Dataset) -> Dataset:
    """`ds` as read from Implicit VR Little Endian: VRs only from the dictionary."""
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return dcmread(BytesIO(part10(ds)))


DATED = [*datasets(), ("unlisted", unlisted_dates()), ("implicit", implicit_vr(unlisted_dates()))]


@pytest.mark.parametrize(("name", "ds"), DATED, ids=[name for name, _ in DATED])
def test_no_date_anywhere_keeps_its_value_unless_dates_are_retained(name: str, ds: Dataset) -> None:
    before = temporal(ds)
    retained = dcmread(BytesIO(part10(ds)))
    report = deidentify(retained, DeidPolicy(retain_dates=True), key=KEY)
    data, _ = deidentify_bytes(part10(ds), DeidPolicy(), key=KEY)
    removed = dcmread(BytesIO(data))
    assert before, f"{name} has no dates"
    kept = set(temporal(removed).items()) & set(before.items())
    assert not kept, f"{name}: {sorted(kept)}"
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"
    # Retained, no date changes (Patient's Birth Date and SR content go by the table).
    assert set(temporal(retained).items()) <= set(before.items())
    assert not [c for c in report.changes if c.summary.startswith("emptied, a date")]
    assert retained.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_dates_the_table_does_not_name_are_emptied_and_reported() -> None:
    ds = unlisted_dates()
    block = ds.private_block(0x0009, "VOXELHUB TEST", create=True)
    block.add_new(0x01, "DT", "20240102101112")  # kept private data is no exception
    report = deidentify(ds, DeidPolicy(clean_private=False), key=KEY)
    frame = ds.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert frame.FrameAcquisitionDateTime == "" and frame.FrameReferenceDateTime == ""
    assert ds.ObservationDateTime == "" and ds.DateOfLastCalibration == ""
    assert ds.TimeOfLastCalibration == "" and block[0x01].value == ""
    dose = ds.RadiopharmaceuticalInformationSequence[0]
    assert dose.RadiopharmaceuticalStartDateTime == ""
    assert dose.RadiopharmaceuticalStartTime == "093000"
    source = ds.SourceImageSequence[0]
    assert source.AcquisitionDateTime == "19000101000000"  # Table E.1-1: X/Z/D, a dummy
    assert source.Date == ""
    changes = {(c.attribute, c.action) for c in report.changes}
    assert {
        ("ObservationDateTime", "Z"),
        ("DateOfLastCalibration", "Z"),
        ("TimeOfLastCalibration", "Z"),
        ("PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameAcquisitionDateTime",
         "Z"),
        ("PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameReferenceDateTime",
         "Z"),
        ("RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime", "Z"),
        ("SourceImageSequence[0].AcquisitionDateTime", "D"),
        ("SourceImageSequence[0].Date", "Z"),
        ("(0009,1001)", "Z"),
    } <= changes  # fmt: skip
    assert not [c for c in report.changes if "RadiopharmaceuticalStartTime" in c.attribute]
    retained = unlisted_dates()
    deidentify(retained, DeidPolicy(retain_dates=True), key=KEY)
    assert temporal(retained) == {k: v for k, v in temporal(unlisted_dates()).items()
                                  if k != "00100030"}  # Patient's Birth Date: Z  # fmt: skip
    emptied = next(c for c in report.changes if c.attribute == "ObservationDateTime")
    assert re.fullmatch(r"emptied, a date or time the policy does not keep \(14 chars, hmac "
                        r"[0-9a-f]{8}\)", emptied.summary)  # fmt: skip


@pytest.mark.parametrize(
    ("value", "person_name", "expected"),
    [
        ("山田^太郎", True, "U+5C71U+7530^U+592AU+90CE"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", True, "Yamada^Tarou"),
        ("=山田^太郎", True, "=U+5C71U+7530^U+592AU+90CE"),
        ("Müller^Zoë", True, "Muller^Zoe"),
        ("\uff34\uff32\uff29\uff21\uff2c\uff0d\uff10\uff10\uff17", False, "TRIAL-007"),
        ("Straße=1", False, "StraU+00DFe=1"),
        ("a\\b\n", False, "aU+005CbU+000A"),
        ("山" * 30, False, "U+5C71" * 9 + "-{digest}"),
    ],
)
def test_stored_names_outside_ascii_have_one_ascii_form(
    value: str, person_name: bool, expected: str
) -> None:
    result = ascii_replacement(value, person_name=person_name)
    if "{digest}" in expected:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8].upper()
        expected = expected.format(digest=digest)
        assert ascii_replacement(value + "山") != result  # long names stay distinct
    assert result == expected
    assert len(result) <= 64 and result.isascii() and result.isprintable() and "\\" not in result
    assert DeidPolicy(patient_name=result).patient_name == result


def test_a_stored_policy_with_a_name_outside_ascii_still_loads_and_says_so() -> None:
    stored = {**DeidPolicy().to_json(), "patient_id": "TRIAL-007", "patient_name": "山田^太郎"}
    with pytest.raises(DicomError) as caught:  # a new policy like it is still refused
        DeidPolicy.from_json(stored)
    assert caught.value.code == "invalid_policy" and "ASCII" in caught.value.message
    loaded = load_stored(stored)
    assert loaded.policy == DeidPolicy(patient_id="TRIAL-007",
                                       patient_name="U+5C71U+7530^U+592AU+90CE")  # fmt: skip
    [warning] = loaded.warnings
    assert "'patient_name'" in warning and "'U+5C71U+7530^U+592AU+90CE'" in warning
    assert load_stored(stored) == loaded  # the same form every time
    ds = ct_phantom(slices=1, size=8)[0]
    result = dcmread(BytesIO(deidentify_bytes(part10(ds), loaded.policy, key=KEY)[0]))
    assert (result.PatientID, str(result.PatientName)) == ("TRIAL-007",
                                                          "U+5C71U+7530^U+592AU+90CE")  # fmt: skip
    clean = DeidPolicy(patient_name="Trial^007").to_json()
    assert load_stored(clean) == StoredPolicy(DeidPolicy.from_json(clean))
    for bad in ({"retain_dates": "yes"}, {"patient_name": 7}, {"keep_all": True}):
        with pytest.raises(DicomError, match="policy"):
            load_stored(bad)
