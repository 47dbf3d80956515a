"""An archive's de-identification policy: the PS3.15 options it retains, and its values.

A policy is checked when it is set (`DeidPolicy.from_json`): replacement names must be
printable ASCII. A policy stored before that check may hold a name outside it ("山田");
`load_stored` still loads it, with the name in its ASCII form (`ascii_replacement`) and a
warning that says so, so that ingest into its archive goes on.

>>> loaded = load_stored({"patient_name": "Müller^Jürgen"})
>>> loaded.policy.patient_name
'Muller^Jurgen'
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from voxelhub.dicom.errors import DicomError

MAX_LO = 64
_REPLACEMENTS = ("patient_id", "patient_name")
# Table E.1-1 option column names, by the policy field that turns them on.
_TABLE_OPTIONS = {
    "retain_dates": "dates",
    "retain_uids": "uids",
    "retain_device_identity": "device",
    "retain_patient_characteristics": "patient",
    "retain_descriptors": "descriptors",
}
# A shortened ASCII form: up to this many characters, "-", and 8 hex digits of a hash.
_KEPT_WHEN_SHORTENED = MAX_LO - 9


@dataclass(frozen=True)
class DeidPolicy:
    """An archive's de-identification policy: the profile options it retains, and values.

    `shift_dates` (Retain Longitudinal Temporal Information with Modified Dates) moves
    every date back by a number of days that is the same for all of a patient's instances
    in the archive (see `voxelhub.dicom.date_shift`); it and `retain_dates` exclude each
    other. `patient_id` and `patient_name` replace the patient's; left None, both become a
    pseudonym keyed on the original Patient ID ("ANON-" and 10 hex digits).
    """

    retain_dates: bool = False
    shift_dates: bool = False
    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_descriptors: bool = False
    clean_private: bool = True
    patient_id: str | None = None
    patient_name: str | None = None

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name in _REPLACEMENTS:
                _check_replacement(spec.name, value)
            elif not isinstance(value, bool):
                raise DicomError(
                    f"De-identification policy '{spec.name}' must be true or false, not {value!r}.",
                    code="invalid_policy",
                    attribute=spec.name,
                )
        if self.retain_dates and self.shift_dates:
            raise DicomError(
                "De-identification policy 'retain_dates' and 'shift_dates' cannot both be "
                "true: dates are either kept as they are or shifted; set one of them to false.",
                code="invalid_policy",
                attribute="shift_dates",
            )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeidPolicy:
        """The policy stored as JSON by `to_json`; unknown keys are refused, not ignored."""
        return cls(**_known(data))

    def to_json(self) -> dict[str, bool | str | None]:
        """The policy as a JSON object, every key present."""
        return asdict(self)

    def kept_options(self) -> frozenset[str]:
        """The Table E.1-1 option columns this policy turns on."""
        return frozenset(column for name, column in _TABLE_OPTIONS.items() if getattr(self, name))


@dataclass(frozen=True)
class StoredPolicy:
    """A stored policy as loaded, and what loading it had to change (empty: nothing)."""

    policy: DeidPolicy
    warnings: tuple[str, ...] = ()


def load_stored(data: Mapping[str, Any]) -> StoredPolicy:
    """A policy as stored in an archive, loaded even if a replacement name is not ASCII.

    Such a name (stored before names were checked) is replaced by `ascii_replacement`
    of it, with a warning; every other fault is refused as by `DeidPolicy.from_json`.
    """
    values = dict(_known(data))
    warnings = []
    for name in _REPLACEMENTS:
        value = values.get(name)
        if isinstance(value, str) and not _is_safe(value):
            values[name] = ascii_replacement(value, person_name=name == "patient_name")
            warnings.append(
                f"De-identification policy '{name}' is {value!r}, which is not at most "
                f"{MAX_LO} printable ASCII characters without a backslash, so instances get "
                f"{values[name]!r} instead; set a printable ASCII '{name}' in the archive's "
                "de-identification policy to choose the value yourself."
            )
    return StoredPolicy(DeidPolicy(**values), tuple(warnings))


def ascii_replacement(value: str, *, person_name: bool = False) -> str:
    """The ASCII form that a stored replacement name outside printable ASCII is written as.

    1. A Person Name written in component groups (alphabetic=ideographic=phonetic, as
       Japanese and Korean names are) whose first group is printable ASCII keeps that
       group alone.
    2. Otherwise the name is decomposed (Unicode NFKD: full-width letters become ASCII
       ones, accented letters a letter and an accent), the accents are dropped, and every
       character still outside printable ASCII, and the backslash (a value separator),
       becomes "U+" and its code point in hex.
    3. A result longer than 64 characters keeps as many whole characters of it as fit
       in 55, then "-" and the first 8 hex digits (upper case) of the SHA-256 of the
       original in UTF-8, so long names stay distinct.

    >>> ascii_replacement("山田^太郎")
    'U+5C71U+7530^U+592AU+90CE'
    >>> ascii_replacement("Yamada^Tarou=山田^太郎=やまだ^たろう", person_name=True)
    'Yamada^Tarou'
    """
    alphabetic = value.split("=", 1)[0]
    if person_name and "=" in value and alphabetic and _is_safe(alphabetic):
        return alphabetic
    parts: list[str] = []
    for char in unicodedata.normalize("NFKD", value):
        if unicodedata.combining(char) and parts:
            continue
        parts.append(char if _is_safe(char) else f"U+{ord(char):04X}")
    if sum(map(len, parts)) <= MAX_LO:
        return "".join(parts)
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8].upper()
    kept = ""
    for part in parts:  # whole characters only: no "U+5C" cut short
        if len(kept) + len(part) > _KEPT_WHEN_SHORTENED:
            break
        kept += part
    return f"{kept}-{digest}"


def _known(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise DicomError("A de-identification policy must be a JSON object.", code="invalid_policy")
    known = [spec.name for spec in fields(DeidPolicy)]
    unknown = sorted(str(name) for name in data if name not in known)
    if unknown:
        raise DicomError(
            f"Unknown de-identification policy keys: {', '.join(unknown)}; "
            f"the known keys are {', '.join(known)}.",
            code="invalid_policy",
            attribute=", ".join(unknown),
        )
    return data


def _is_safe(value: str) -> bool:
    """Whether `value` can be written as it is into an instance of any character set."""
    return len(value) <= MAX_LO and "\\" not in value and value.isprintable() and value.isascii()


def _check_replacement(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise DicomError(
            f"De-identification policy '{name}' must be a string or null, not {value!r}.",
            code="invalid_policy",
            attribute=name,
        )
    # ASCII only: the value goes into instances of any Specific Character Set, and
    # without one a writer silently mangles other characters ("山田" becomes "??").
    if not _is_safe(value):
        raise DicomError(
            f"De-identification policy '{name}' must be at most {MAX_LO} printable "
            f"ASCII characters without a backslash, not {value!r}.",
            code="invalid_policy",
            attribute=name,
        )
