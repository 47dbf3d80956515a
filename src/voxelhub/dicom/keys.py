"""The index keys of an instance: the patient, study, series and instance attributes.

>>> from voxelhub.dicom.synthetic import ct_phantom
>>> keys = instance_keys(ct_phantom(slices=1, size=8)[0])
>>> keys.patient_name, keys.modality, keys.number_of_frames, keys.rows
('Demo^Phantom', 'CT', 1, 8)
"""

from __future__ import annotations

import logging
import re
from typing import Any

from pydicom.multival import MultiValue

from voxelhub.dicom.attributes import Attributes
from voxelhub.dicom.frames import pixel_element_keyword
from voxelhub.dicom.model import InstanceKeys

logger = logging.getLogger(__name__)

# The longest values the index holds (the VRs' maximum lengths; names and descriptions with
# room for several component groups).
_CODE, _LONG, _NAME, _TIME = 16, 64, 330, 32
_DATE = re.compile(r"\d{8}")
_LEGACY_DATE = re.compile(r"\d{4}\.\d{2}\.\d{2}")
_LEGACY_TIME = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")


def instance_keys(ds: Attributes) -> InstanceKeys:
    """The attributes the index stores for `ds` ("" or None where absent or unusable)."""
    is_image = pixel_element_keyword(ds) is not None
    meta = getattr(ds, "file_meta", None)
    return InstanceKeys(
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        transfer_syntax_uid=_text(meta, "TransferSyntaxUID") if meta is not None else "",
        patient_id=_text(ds, "PatientID", _LONG),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID", _LONG),
        patient_name=_text(ds, "PatientName", _NAME),
        patient_birth_date=_date(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex", _CODE),
        study_date=_date(ds, "StudyDate"),
        study_time=_time(ds, "StudyTime"),
        accession_number=_text(ds, "AccessionNumber", _LONG),
        study_id=_text(ds, "StudyID", _LONG),
        study_description=_text(ds, "StudyDescription", _NAME),
        referring_physician_name=_text(ds, "ReferringPhysicianName", _NAME),
        modality=_text(ds, "Modality", _CODE),
        series_number=_number(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", _NAME),
        instance_number=_number(ds, "InstanceNumber"),
        number_of_frames=(_number(ds, "NumberOfFrames") or 1) if is_image else 0,
        rows=_number(ds, "Rows"),
        columns=_number(ds, "Columns"),
    )


def _value(ds: Attributes, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # a value pydicom cannot convert counts as absent
        logger.warning("Unreadable %s left out of the index keys", keyword, exc_info=True)
        return None


def _text(ds: Attributes, keyword: str, most: int | None = None) -> str:
    value = _value(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list):
        text = "\\".join(str(item) for item in value)
    else:
        text = str(value).strip("\0 ")
    # A value longer than its VR allows (files from old or careless writers) is indexed cut
    # short; the instance keeps it whole.
    return text[:most] if most is not None else text


def _date(ds: Attributes, keyword: str) -> str:
    """A DA value as YYYYMMDD: the ACR-NEMA form YYYY.MM.DD (PS3.5 6.2, still written by
    old equipment) is read too; anything else is not indexed (the instance keeps it)."""
    text = _text(ds, keyword)
    if _LEGACY_DATE.fullmatch(text):
        text = text.replace(".", "")
    return text if _DATE.fullmatch(text) else ""


def _time(ds: Attributes, keyword: str) -> str:
    """A TM value, the ACR-NEMA form HH:MM:SS read too; too long a value is not indexed."""
    text = _text(ds, keyword)
    if _LEGACY_TIME.fullmatch(text):
        text = text.replace(":", "")
    return text if len(text) <= _TIME else ""


def _number(ds: Attributes, keyword: str) -> int | None:
    value = _value(ds, keyword)
    if isinstance(value, MultiValue | list):
        value = value[0] if value else None
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
