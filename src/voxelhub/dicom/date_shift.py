"""Dates moved back by whole days: PS3.15 Retain Longitudinal Temporal Information Modified Dates.

Every date of one patient moves back by the same number of days, so the intervals between
their studies survive while the calendar dates do not. The number is HMAC-SHA256 of the
archive's de-identification key and the original Patient ID (with its issuer), reduced to
1..3650 days (up to about ten years back): the same patient always gets the same shift in
one archive, another archive (another key) gets another, and without the key it cannot be
predicted from the Patient ID.

Times of day are not changed: a DT keeps its time, fraction and UTC offset, and TM values
are left alone by the caller. A value that cannot be shifted gets None, for the caller to
empty: one that does not parse, or that would fall before the year 1.

>>> shift_value("20240102", "DA", days=400)
'20221128'
>>> shift_value("20240102101112.25+0100", "DT", days=400)
'20221128101112.25+0100'
>>> shift_value("202401", "DT", days=400), shift_value("2024", "DT", days=400)
('202212', '2023')
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, timedelta

__all__ = ["MAX_SHIFT_DAYS", "patient_shift_days", "shift_value", "shift_values"]

MAX_SHIFT_DAYS = 3650
_DAYS_PER_MONTH = 365.2425 / 12
_DAYS_PER_YEAR = 365.2425
# DA: YYYYMMDD, or YYYY.MM.DD as ACR-NEMA wrote it (written back as YYYYMMDD).
_DA = re.compile(r"(\d{4})(\.?)(\d{2})\2(\d{2})")
# DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]; the part after the day is kept as it is.
_DT = re.compile(
    r"(?P<year>\d{4})(?:(?P<month>\d{2})(?:(?P<day>\d{2})"
    r"(?P<time>(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?))?)?"
    r"(?P<offset>[+-]\d{4})?"
)


def patient_shift_days(patient_id: str, issuer: str, *, key: bytes) -> int:
    """How many days (1..3650) back the dates of one patient move, keyed on the archive.

    >>> patient_shift_days("MRN-1234", "", key=b"k" * 32)
    1287
    """
    message = b"date-shift:" + patient_id.encode("utf-8") + b"\0" + issuer.encode("utf-8")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS


def shift_values(values: list[str], vr: str, *, days: int) -> list[str] | None:
    """Each of an attribute's values shifted (see `shift_value`); None if any cannot be."""
    shifted = [shift_value(value, vr, days=days) for value in values]
    return None if None in shifted else [value or "" for value in shifted]


def shift_value(value: str, vr: str, *, days: int) -> str | None:
    """One DA or DT value moved `days` back; None if it cannot be.

    A DA range ("20240101-20240131", "-20240131", "20240101-") moves both ends. A DT
    with a full date moves its date and keeps its time and UTC offset. A DT of a month
    (YYYYMM) moves back the whole number of months nearest to `days`, and one of a year
    (YYYY) the whole number of years nearest to it: a day shift would invent a day the
    value does not have, and intervals between values of the same precision stay exact.
    """
    value = value.strip(" \0")
    if not value:
        return ""
    if vr == "DA":
        return _shift_date_range(value, days) if "-" in value else _shift_date(value, days)
    if vr == "DT":
        return _shift_date_time(value, days)
    return None


def _shift_date_range(value: str, days: int) -> str | None:
    start, end = value.split("-", 1) if value.count("-") == 1 else ("", "")
    if not start and not end:
        return None
    shifted = [_shift_date(part, days) if part else "" for part in (start, end)]
    return None if None in shifted else f"{shifted[0]}-{shifted[1]}"


def _shift_date(value: str, days: int) -> str | None:
    match = _DA.fullmatch(value)
    if match is None:
        return None
    year, _, month, day = match.groups()
    moved = _moved(int(year), int(month), int(day), days)
    return None if moved is None else _da(moved)


def _shift_date_time(value: str, days: int) -> str | None:
    match = _DT.fullmatch(value)
    if match is None or not _valid_time(match["time"] or "", match["offset"] or ""):
        return None
    year, month, day = int(match["year"]), match["month"], match["day"]
    rest = (match["time"] or "") + (match["offset"] or "")
    if day is not None:
        moved = _moved(year, int(month), int(day), days)
        return None if moved is None else _da(moved) + rest
    if month is not None:
        if not 1 <= int(month) <= 12:
            return None
        months = year * 12 + int(month) - 1 - round(days / _DAYS_PER_MONTH)
        new_year, new_month = divmod(months, 12)
        return f"{new_year:04d}{new_month + 1:02d}{rest}" if new_year >= 1 else None
    new_year = year - round(days / _DAYS_PER_YEAR)
    return f"{new_year:04d}{rest}" if new_year >= 1 else None


def _moved(year: int, month: int, day: int, days: int) -> date | None:
    try:
        return date(year, month, day) - timedelta(days=days)
    except (ValueError, OverflowError):  # no such date, or before the year 1
        return None


def _da(moved: date) -> str:
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"


def _valid_time(time: str, offset: str) -> bool:
    """Hours, minutes and seconds (60: a leap second) and the offset's within their range."""
    clock = time.split(".", 1)[0]
    limits = (23, 59, 60)
    parts = [int(clock[i : i + 2]) for i in range(0, len(clock), 2)]
    if any(part > limit for part, limit in zip(parts, limits, strict=False)):
        return False
    return not offset or (int(offset[1:3]) <= 14 and int(offset[3:5]) <= 59)
