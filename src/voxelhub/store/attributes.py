"""The attributes the index answers queries on, and how they appear in DICOM JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from voxelhub.store.errors import InvalidQuery


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: str  # 8 upper-case hex digits
    vr: str


def attribute(name: str) -> Attribute:
    """Resolve a keyword (`PatientID`) or tag (`00100020`) to an attribute."""
    cleaned = name.strip()
    tag_int: int | None
    if len(cleaned) == 8 and all(c in "0123456789abcdefABCDEF" for c in cleaned):
        tag_int = int(cleaned, 16)
    else:
        tag_int = tag_for_keyword(cleaned)
    if tag_int is None:
        raise InvalidQuery(
            f"{name!r} is not a DICOM attribute keyword or tag; use e.g. PatientID or 00100020"
        )
    try:
        vr = dictionary_VR(tag_int)
    except KeyError:
        vr = "UN"
    return Attribute(keyword_for_tag(tag_int) or cleaned, f"{tag_int:08X}", vr)


def element(vr: str, value: Any) -> dict[str, Any]:
    """A DICOM JSON element; empty values have no "Value"."""
    if value is None or (isinstance(value, str | list) and len(value) == 0):
        return {"vr": vr}
    values = value if isinstance(value, list) else [value]
    if vr == "PN":
        values = [person_name(str(v)) for v in values]
    return {"vr": vr, "Value": values}


def person_name(value: str) -> dict[str, str]:
    """A PN value as DICOM JSON: its component groups, alphabetic, ideographic and phonetic
    (PS3.5 6.2), each given only where it is not empty.

    >>> person_name("Yamada^Tarou=山田^太郎=やまだ^たろう")["Ideographic"]
    '山田^太郎'
    """
    groups = zip(("Alphabetic", "Ideographic", "Phonetic"), value.split("="), strict=False)
    return {name: group for name, group in groups if group}


STUDY_TAGS = {
    "00080020": ("StudyDate", "DA", "study_date"),
    "00080030": ("StudyTime", "TM", "study_time"),
    "00080050": ("AccessionNumber", "SH", "accession_number"),
    "00080090": ("ReferringPhysicianName", "PN", "referring_physician_name"),
    "00081030": ("StudyDescription", "LO", "study_description"),
    "00100010": ("PatientName", "PN", "patient_name"),
    "00100020": ("PatientID", "LO", "patient_id"),
    "00100021": ("IssuerOfPatientID", "LO", "issuer_of_patient_id"),
    "00100030": ("PatientBirthDate", "DA", "patient_birth_date"),
    "00100040": ("PatientSex", "CS", "patient_sex"),
    "0020000D": ("StudyInstanceUID", "UI", "study_instance_uid"),
    "00200010": ("StudyID", "SH", "study_id"),
}
SERIES_TAGS = {
    "00080060": ("Modality", "CS", "modality"),
    "0008103E": ("SeriesDescription", "LO", "series_description"),
    "0020000E": ("SeriesInstanceUID", "UI", "series_instance_uid"),
    "00200011": ("SeriesNumber", "IS", "series_number"),
}
INSTANCE_TAGS = {
    "00080016": ("SOPClassUID", "UI", "sop_class_uid"),
    "00080018": ("SOPInstanceUID", "UI", "sop_instance_uid"),
    "00200013": ("InstanceNumber", "IS", "instance_number"),
    "00280010": ("Rows", "US", "rows"),
    "00280011": ("Columns", "US", "columns"),
    "00280008": ("NumberOfFrames", "IS", "number_of_frames"),
}
