"""De-identification on ingest: PS3.15 Annex E Basic Application Level Confidentiality Profile.

The archive's policy picks the options; a secret key makes the replacements repeatable,
so the instances of one series, uploaded separately, keep one Study, Series and Frame
of Reference UID and one patient pseudonym.

>>> from voxelhub.dicom.synthetic import ct_phantom
>>> ds = ct_phantom(slices=1, size=8)[0]
>>> report = deidentify(ds, DeidPolicy(retain_dates=True), key=b"k" * 32)
>>> ds.PatientID, ds.StudyInstanceUID[:5], ds.PatientIdentityRemoved
('ANON-1A3125DB55', '2.25.', 'YES')
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from io import BytesIO
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

from voxelhub.dicom.date_shift import patient_shift_days, shift_values
from voxelhub.dicom.deid_method import record_method
from voxelhub.dicom.deid_policy import DeidPolicy
from voxelhub.dicom.deid_table import PROFILE
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.read import read_dataset

__all__ = [
    "MIN_KEY_BYTES",
    "PSEUDONYM_PREFIX",
    "RESOLVED_ACTIONS",
    "UUID_ROOT",
    "DeidChange",
    "DeidPolicy",
    "DeidReport",
    "deidentified_uid",
    "deidentify",
    "deidentify_bytes",
]

MIN_KEY_BYTES = 16
UUID_ROOT = "2.25."
PSEUDONYM_PREFIX = "ANON-"
# UIDs of the standard itself (SOP classes, transfer syntaxes, coding schemes) name no
# instance; remapping them would break the object.
_STANDARD_UID_ROOT = "1.2.840.10008."

# Without the IOD the type of an attribute is unknown, so each alternative resolves to
# the one that is valid for every type: zero length keeps a Type 2 attribute present, a
# dummy keeps a Type 1 attribute valid, and U* keeps a reference sequence with its UIDs
# replaced.
RESOLVED_ACTIONS = {
    "X": "X",
    "Z": "Z",
    "D": "D",
    "U": "U",
    "X/Z": "Z",
    "X/D": "D",
    "Z/D": "D",
    "X/Z/D": "D",
    "X/Z/U*": "U*",
}
_DUMMIES: dict[str, Any] = {
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), "ANONYMIZED"),
    **dict.fromkeys(("DS", "IS"), "0"),
    **dict.fromkeys(("FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"), 0),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), bytes(8)),
    "AS": "000D",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "UR": "urn:anonymized",
}
_PATIENT_ID = Tag("PatientID")
_PATIENT_NAME = Tag("PatientName")
_TIMEZONE_OFFSET = Tag("TimezoneOffsetFromUTC")
_MEDIA_STORAGE_SOP_INSTANCE_UID = Tag("MediaStorageSOPInstanceUID")
# File meta elements naming the sending site (AE titles, network addresses) or carrying
# private data.
_META_DEVICE_TAGS = (
    *(Tag(0x0002, element) for element in (0x0016, 0x0017, 0x0018)),
    *(Tag(0x0002, element) for element in (0x0026, 0x0027, 0x0028)),
)
_META_PRIVATE_TAGS = (Tag(0x0002, 0x0100), Tag(0x0002, 0x0102))


@dataclass(frozen=True)
class DeidChange:
    """One attribute changed: where (keyword or tag, with the sequence path), how, what was there.

    `action` is the Table E.1-1 code applied (X, Z, D, U, or C for a date shifted by the
    Modified Dates option); `summary` describes the old value by size and a keyed
    fingerprint, never by the value itself (nor by how far a date moved).
    """

    attribute: str
    action: str
    summary: str


@dataclass(frozen=True)
class DeidReport:
    """What `deidentify` changed, and the method it recorded in the dataset."""

    changes: tuple[DeidChange, ...]
    method: tuple[str, ...]
    codes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return {
            "changes": [asdict(change) for change in self.changes],
            "method": list(self.method),
            "codes": list(self.codes),
        }


def deidentified_uid(uid: str, *, key: bytes) -> str:
    """The UID that replaces `uid`: "2.25." and the first 128 bits of HMAC-SHA256(key, uid).

    The same UID and key always give the same result (instances uploaded separately
    stay in one series); 128 bits make collisions negligible. UIDs of the standard
    itself (1.2.840.10008...) are returned unchanged.

    >>> deidentified_uid("1.2.3.4", key=b"k" * 32)[:12]
    '2.25.1704245'
    """
    uid = uid.strip(" \0")
    if uid.startswith(_STANDARD_UID_ROOT):
        return uid
    digest = hmac.new(key, uid.encode("ascii", "replace"), hashlib.sha256).digest()
    return UUID_ROOT + str(int.from_bytes(digest[:16], "big"))


def deidentify(ds: Dataset, policy: DeidPolicy, *, key: bytes) -> DeidReport:
    """De-identify `ds` in place by the Basic Profile with the options `policy` retains.

    Every attribute of Table E.1-1 is removed, emptied, replaced by a dummy or given a
    new UID, in sequence items too; unless the policy retains dates, so is every other
    date and time of a date, at any depth (emptied: see `_temporal`). With `shift_dates`,
    every DA and DT value that the Full Dates option would keep, or that the table does
    not list, moves back by the patient's shift instead (see `_shift_date`); private attributes
    (when `policy.clean_private`), curve groups (50xx) and overlay groups (60xx) are
    removed. Pixel data is untouched, so an instance whose pixels may show the patient's
    identity is refused with DicomError(code="burned_in_annotation") before anything is
    changed.
    """
    _check_key(key)
    _refuse_burned_in(ds)
    patient_id, patient_name = _replacements(ds, policy, key)
    run = _Run(policy, key, policy.kept_options(), patient_id, patient_name)
    if policy.shift_dates:
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
        run.shift_days = patient_shift_days(_patient_basis(ds), issuer, key=key)
    _clean(ds, run, "")
    _clean_file_meta(ds, run)
    method, codes = record_method(ds, policy)
    return DeidReport(changes=tuple(run.changes), method=method, codes=codes)


def deidentify_bytes(data: bytes, policy: DeidPolicy, *, key: bytes) -> tuple[bytes, DeidReport]:
    """A DICOM file de-identified by `deidentify`, written back in its transfer syntax.

    Pixel data (native or encapsulated) is written byte for byte as it was read.
    """
    ds = read_dataset(data)
    report = deidentify(ds, policy, key=key)
    buffer = BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError) as err:
        raise DicomError(
            f"The de-identified instance could not be written as a DICOM file ({err}).",
            code="unwritable",
        ) from err
    return buffer.getvalue(), report


@dataclass
class _Run:
    """The state of one `deidentify` call: policy, key, replacements and changes so far."""

    policy: DeidPolicy
    key: bytes
    kept: frozenset[str]
    patient_id: str
    patient_name: str
    # Days every date moves back (Modified Dates option); None: dates are not shifted.
    shift_days: int | None = None
    changes: list[DeidChange] = field(default_factory=list)

    def note(self, attribute: str, action: str, summary: str) -> None:
        self.changes.append(DeidChange(attribute, action, summary))

    def fingerprint(self, elem: DataElement) -> str:
        """The old value's size and a keyed digest: enough to audit, useless to re-identify."""
        if elem.VR == "SQ":
            return f"{len(elem.value)} item(s)"
        if elem.is_empty:
            return "empty"
        value = elem.value
        if isinstance(value, bytes):
            size, raw = f"{len(value)} bytes", value
        else:
            text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
            size, raw = f"{len(text)} chars", text.encode("utf-8", "replace")
        digest = hmac.new(self.key, b"report:" + raw, hashlib.sha256).hexdigest()[:8]
        return f"{size}, hmac {digest}"


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise DicomError(
            f"The de-identification key must be at least {MIN_KEY_BYTES} random bytes; "
            "a short key would let anyone recompute pseudonyms from guessed patient IDs.",
            code="invalid_key",
        )


def _refuse_burned_in(ds: Dataset) -> None:
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise DicomError(
            "Burned In Annotation is YES: the pixels may show the patient's identity as "
            "text, which de-identification does not clean, so the instance was refused and "
            "nothing was stored. Send instances without burned-in text, or clean the "
            "pixels and set Burned In Annotation to NO first.",
            code="burned_in_annotation",
            attribute="BurnedInAnnotation",
        )


def _replacements(ds: Dataset, policy: DeidPolicy, key: bytes) -> tuple[str, str]:
    """The new Patient ID and Patient's Name; the pseudonym is keyed on the original ID."""
    basis = _patient_basis(ds)
    digest = hmac.new(key, b"patient:" + basis.encode("utf-8"), hashlib.sha256).hexdigest()
    pseudonym = PSEUDONYM_PREFIX + digest[:10].upper()
    patient_id = pseudonym if policy.patient_id is None else policy.patient_id
    patient_name = pseudonym if policy.patient_name is None else policy.patient_name
    return patient_id, patient_name


def _patient_basis(ds: Dataset) -> str:
    """The original Patient ID; without one, the name and birth date stand in for it."""
    basis = str(ds.get("PatientID", "") or "").strip()
    return basis or f"{ds.get('PatientName', '')}|{ds.get('PatientBirthDate', '')}"


def _clean(ds: Dataset, run: _Run, path: str) -> None:
    for tag in sorted(ds.keys()):
        action = _action(ds, tag, run)
        name = path + _name(tag)
        if action in ("K", "U*"):
            _recurse(ds[tag], run, name)
        else:
            _ACTIONS[action](ds, tag, run, name)


def _action(ds: Dataset, tag: BaseTag, run: _Run) -> str:
    """The action for one attribute: a Table E.1-1 code, K (keep), P (pseudonym), T or S.

    T empties a date or time that the table does not list (see `_temporal`); S shifts a
    date (see `_shifted`).
    """
    if tag.is_private:
        return "X" if run.policy.clean_private else _temporal(ds, tag, run)
    if _is_curve_or_overlay(tag):
        return "X"
    if tag in (_PATIENT_ID, _PATIENT_NAME):
        return "P"
    rule = PROFILE.get(int(tag))
    if rule is None:
        return _temporal(ds, tag, run)
    if rule.kept_by & run.kept:
        return "K"
    action = RESOLVED_ACTIONS[rule.action]
    shifting = "dates" in rule.kept_by and run.shift_days is not None
    return _shifted(ds, tag, action) if shifting else action


def _shifted(ds: Dataset, tag: BaseTag, action: str) -> str:
    """S, K or `action` for an attribute the Full Dates option keeps, when dates shift.

    PS3.15's Modified Dates option cleans what the Full Dates option keeps: its dates
    (DA, DT) move back; its times of day stay, as does Timezone Offset From UTC (a DT's
    own offset stays too); anything else there (Frame Origin Timestamp, OB) cannot be
    shifted by days and gets the Basic Profile action.
    """
    vr = _vr(ds, tag)
    if vr in ("DA", "DT"):
        return "S"
    return "K" if vr == "TM" or tag == _TIMEZONE_OFFSET else action


def _temporal(ds: Dataset, tag: BaseTag, run: _Run) -> str:
    """T for a date or time outside Table E.1-1 that the policy does not keep, else K.

    PS3.15's Retain Longitudinal Temporal Information options are about every date and
    time, not only the listed ones (Observation DateTime in SR content, Frame Acquisition
    DateTime in functional groups), so without Full Dates every DA and DT value goes, at
    any depth, and every TM value that is the time of a date (the dictionary has a DA
    attribute of its name with Date for Time, as Date of Last Calibration for Time of
    Last Calibration). Other times (Radiopharmaceutical Start Time, Contrast/Bolus Start
    Time) say nothing without a date and are kept. Zero length, as the table does for
    Study Date: the attribute's type in its context is not known here, and an empty value
    keeps a Type 2 attribute present without inventing a date. With Modified Dates the
    DA and DT values shift instead (S) and times are kept.
    """
    if "dates" in run.kept:
        return "K"
    vr = _vr(ds, tag)
    if vr in ("DA", "DT"):
        return "T" if run.shift_days is None else "S"
    if vr == "TM" and run.shift_days is None and not tag.is_private and _time_of_a_date(tag):
        return "T"
    return "K"


def _vr(ds: Dataset, tag: BaseTag) -> str:
    """The attribute's VR, read without decoding a kept value (decoding may change it)."""
    vr = ds.get_item(tag).VR
    if vr is None and tag.is_private:  # implicit VR: the private dictionary, if any
        vr = ds[tag].VR
    elif vr is None or vr == "UN":
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return str(vr)


@cache
def _time_of_a_date(tag: BaseTag) -> bool:
    keyword = keyword_for_tag(tag)
    date = keyword_dict.get(keyword.replace("Time", "Date")) if "Time" in keyword else None
    return date is not None and dictionary_VR(date) == "DA"


def _is_curve_or_overlay(tag: BaseTag) -> bool:
    """Repeating groups 50xx (curves) and 60xx (overlays), removed whole.

    Table E.1-1 lists Curve Data and Overlay Data/Comments; the rest of an overlay
    group describes data that is gone (and may carry labels), so it goes too.
    """
    return tag.group % 2 == 0 and (tag.group >> 8) in (0x50, 0x60)


def _name(tag: BaseTag) -> str:
    keyword = "" if tag.is_private else keyword_for_tag(tag)
    return keyword or f"({tag.group:04X},{tag.element:04X})"


def _recurse(elem: DataElement, run: _Run, name: str) -> None:
    if elem.VR == "SQ":
        for index, item in enumerate(elem.value):
            _clean(item, run, f"{name}[{index}].")


def _remove(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    run.note(name, "X", f"removed ({run.fingerprint(ds[tag])})")
    del ds[tag]


def _empty(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    elem = ds[tag]
    if elem.is_empty:
        return
    run.note(name, "Z", f"emptied ({run.fingerprint(elem)})")
    elem.value = Sequence() if elem.VR == "SQ" else empty_value_for_VR(elem.VR)


def _empty_temporal(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    elem = ds[tag]
    if elem.is_empty:
        return
    summary = f"emptied, a date or time the policy does not keep ({run.fingerprint(elem)})"
    run.note(name, "Z", summary)
    elem.value = empty_value_for_VR(elem.VR)


def _shift_date(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    """Move a DA or DT back by the patient's shift; empty it if it cannot be shifted.

    Every value of a multi-valued attribute moves; if one does not parse, the whole
    attribute is emptied (and reported as such) rather than left half real.
    """
    elem, vr = ds[tag], _vr(ds, tag)
    if elem.is_empty or run.shift_days is None:
        return
    value = elem.value
    if isinstance(value, bytes):  # read with an unknown VR
        value = value.decode("ascii", "replace").split("\\")
    texts = [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]
    shifted = shift_values(texts, vr, days=run.shift_days)
    summary = run.fingerprint(elem)
    if shifted is None:
        run.note(name, "Z", f"emptied, a date that could not be shifted ({summary})")
        ds[tag] = DataElement(tag, vr, empty_value_for_VR(vr))
        return
    if shifted == texts:
        return
    new = shifted if len(shifted) > 1 else shifted[0]
    ds[tag] = DataElement(tag, vr, new)
    run.note(name, "C", f"shifted back by the patient's date shift ({summary})")


def _dummy(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    elem = ds[tag]
    if elem.is_empty:
        return
    if elem.VR == "UI":
        _remap(ds, tag, run, name)
        return
    summary = run.fingerprint(elem)
    if elem.VR == "SQ":
        # One empty item: a sequence of the right VR that keeps none of the originals,
        # whose attributes outside the table (dates, free text) would otherwise stay.
        elem.value = Sequence([Dataset()])
    else:
        dummy = _DUMMIES.get(elem.VR, empty_value_for_VR(elem.VR))
        if str(elem.value) == str(dummy):  # already the dummy: nothing changes
            return
        elem.value = dummy
    run.note(name, "D", f"replaced with a dummy value ({summary})")


def _remap(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    elem = ds[tag]
    if elem.is_empty:
        return
    value = elem.value
    if isinstance(value, bytes):  # UIDs read with an unknown VR
        value = value.decode("ascii", "replace").split("\\")
    uids = [str(uid) for uid in value] if isinstance(value, MultiValue | list) else [str(value)]
    new = [deidentified_uid(uid, key=run.key) for uid in uids]
    if new == [uid.strip(" \0") for uid in uids]:  # UIDs of the standard are kept
        return
    elem.value = new if isinstance(value, MultiValue | list) else new[0]
    run.note(name, "U", "uid remapped")


def _pseudonymize(ds: Dataset, tag: BaseTag, run: _Run, name: str) -> None:
    elem = ds[tag]
    new = run.patient_id if tag == _PATIENT_ID else run.patient_name
    if str(elem.value or "") == new:
        return
    summary = run.fingerprint(elem)
    elem.value = new
    run.note(name, "D" if new else "Z", f"replaced with the policy's value ({summary})")


_ACTIONS: dict[str, Callable[[Dataset, BaseTag, _Run, str], None]] = {
    "X": _remove,
    "Z": _empty,
    "D": _dummy,
    "U": _remap,
    "P": _pseudonymize,
    "T": _empty_temporal,
    "S": _shift_date,
}


def _clean_file_meta(ds: Dataset, run: _Run) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    removed = [] if run.policy.retain_device_identity else list(_META_DEVICE_TAGS)
    removed += list(_META_PRIVATE_TAGS) if run.policy.clean_private else []
    for tag in removed:
        if tag in meta:
            _remove(meta, tag, run, "file_meta." + _name(tag))
    if _MEDIA_STORAGE_SOP_INSTANCE_UID in meta and not run.policy.retain_uids:
        _remap(meta, _MEDIA_STORAGE_SOP_INSTANCE_UID, run, "file_meta.MediaStorageSOPInstanceUID")
