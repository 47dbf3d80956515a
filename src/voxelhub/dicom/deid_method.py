"""The record a de-identification leaves in the dataset: PS3.15 E.1.1 and CID 7050 codes."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from voxelhub.dicom.date_shift import MAX_SHIFT_DAYS
from voxelhub.dicom.deid_policy import DeidPolicy

__all__ = ["record_method"]

# (policy field, CID 7050 code, meaning); the basic profile code comes first.
_BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")
_CODED_OPTIONS = (
    ("retain_dates", "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    ("shift_dates", "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("retain_patient_characteristics", "113108", "Retain Patient Characteristics Option"),
    ("retain_device_identity", "113109", "Retain Device Identity Option"),
    ("retain_uids", "113110", "Retain UIDs Option"),
)


def _coded(policy: DeidPolicy) -> list[tuple[str, str]]:
    """The CID 7050 codes (value, meaning) of the profile and the options `policy` retains."""
    options = [(code, meaning) for name, code, meaning in _CODED_OPTIONS if getattr(policy, name)]
    return [_BASIC_PROFILE, *options]


def _method(policy: DeidPolicy, coded: list[tuple[str, str]]) -> list[str]:
    """The De-identification Method values: the coded profile and options, then the rest."""
    method = [meaning for _, meaning in coded]
    if policy.shift_dates:
        method.append(f"Dates shifted back 1 to {MAX_SHIFT_DAYS} days, keyed per patient")
    if not policy.retain_uids:
        method.append("UIDs replaced by HMAC-SHA256 UIDs under 2.25")
    if policy.retain_descriptors:  # not the Clean Descriptors Option: nothing was cleaned
        method.append("Descriptors retained without cleaning")
    if not policy.clean_private:
        method.append("Private attributes retained")
    return method


def record_method(ds: Dataset, policy: DeidPolicy) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Record this de-identification, added to any earlier one's record (PS3.15 E.1.1).

    Returns the De-identification Method values and the CID 7050 codes of this one. An
    instance de-identified before (with Clean Pixel Data, say) keeps those codes and its
    dates' status: retaining dates that were shifted does not make them unmodified.
    """
    coded = _coded(policy)
    method = _method(policy, coded)
    ds.PatientIdentityRemoved = "YES"
    earlier = ds.get("DeidentificationMethod")
    texts = [str(text) for text in _as_list(earlier)]
    ds.DeidentificationMethod = texts + [text for text in method if text not in texts]
    items = list(ds.get("DeidentificationMethodCodeSequence") or [])
    present = {(item.get("CodeValue"), item.get("CodingSchemeDesignator")) for item in items}
    items += [
        _code_item(value, meaning) for value, meaning in coded if (value, "DCM") not in present
    ]
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = _temporal_status(ds, policy)
    return tuple(method), tuple(value for value, _ in coded)


def _as_list(value: object) -> list[object]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _temporal_status(ds: Dataset, policy: DeidPolicy) -> str:
    if not policy.retain_dates and not policy.shift_dates:
        return "REMOVED"
    earlier = str(ds.get("LongitudinalTemporalInformationModified") or "").strip().upper()
    if earlier == "REMOVED":  # dates emptied before cannot be brought back by shifting
        return earlier
    return "MODIFIED" if policy.shift_dates or earlier == "MODIFIED" else "UNMODIFIED"


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
