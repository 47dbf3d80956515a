"""Reading a C-FIND/C-GET/C-MOVE identifier: its level, match keys and return keys."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from voxelhub.store.attributes import INSTANCE_TAGS, SERIES_TAGS, STUDY_TAGS, Attribute
from voxelhub.store.errors import InvalidQuery
from voxelhub.store.qido import check_value

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
ISSUER_OF_PATIENT_ID = "00100021"
PATIENT_TAGS = frozenset({"00100010", "00100020", ISSUER_OF_PATIENT_ID, "00100030", "00100040"})
# Attributes the index computes, by the level they describe.
STUDY_COMPUTED = frozenset({"00080061", "00201206", "00201208"})
SERIES_COMPUTED = frozenset({"00201209"})
_CONTROL = frozenset({0x00080005, 0x00080052})  # SpecificCharacterSet, QueryRetrieveLevel
# The unique key a retrieve names at each level (PS3.4 C.6), and its keyword.
UNIQUE_KEYS = {
    "PATIENT": "00100020",
    "STUDY": "0020000D",
    "SERIES": "0020000E",
    "IMAGE": "00080018",
}
_KEYWORDS = {
    "00100020": "PatientID",
    "0020000D": "StudyInstanceUID",
    "0020000E": "SeriesInstanceUID",
    "00080018": "SOPInstanceUID",
}
QUERY_RETRIEVE_LEVEL = "00080052"


class IdentifierError(ValueError):
    """The identifier cannot be used with its information model; the message says why and
    `offending` is the tag of the key at fault, where there is one."""

    def __init__(self, message: str, *, offending: str | None = None) -> None:
        super().__init__(message)
        self.offending = offending


@dataclass(frozen=True)
class Identifier:
    """A query identifier taken apart.

    `filters` are the match keys at or above `level` (tag → attribute and value as a
    QIDO-style string, multiple values joined by backslashes); `requested` maps every
    return key to its VR; `ignored` lists the keywords of keys that are not matched on.
    """

    level: str
    filters: dict[str, tuple[Attribute, str]]
    requested: dict[str, str]
    ignored: tuple[str, ...]


def level_of(tag: str) -> str:
    """The query level an attribute belongs to (IMAGE for anything the index does not know)."""
    if tag in PATIENT_TAGS:
        return "PATIENT"
    if tag in STUDY_TAGS or tag in STUDY_COMPUTED:
        return "STUDY"
    if tag in SERIES_TAGS or tag in SERIES_COMPUTED:
        return "SERIES"
    return "IMAGE" if tag in INSTANCE_TAGS else ""


def _match_value(element: DataElement) -> str | None:
    """The element's value as a match string, or None when it is only a return key."""
    value = element.value
    if element.VR == "SQ" or value is None or isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = text.strip()
    # A lone "*" is Universal Matching whatever the VR (PS3.4 C.2.2.2.4): a UID or number
    # key sent as "*" matches every entity, not the value "*".
    return None if text in ("", "*") else text


def _asks_sequence_matching(element: DataElement) -> bool:
    """Whether a sequence key has an item with a value to match (PS3.4 C.2.2.2.6); one
    with an empty item only asks for the sequence to be returned."""
    return any(
        _asks_sequence_matching(item_element)
        if item_element.VR == "SQ"
        else _match_value(item_element) is not None
        for item in element.value
        for item_element in item
    )


def parse_identifier(identifier: Dataset, *, patient_root: bool) -> Identifier:
    """Take an identifier apart, or IdentifierError naming what is wrong."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    allowed = LEVELS if patient_root else LEVELS[1:]
    if level not in allowed:
        raise IdentifierError(
            f"QueryRetrieveLevel {level or '(missing)'} is not one of {', '.join(allowed)}",
            offending=QUERY_RETRIEVE_LEVEL,
        )
    rank = LEVELS.index(level)
    filters: dict[str, tuple[Attribute, str]] = {}
    requested: dict[str, str] = {}
    ignored: list[str] = []
    for element in identifier:
        if element.tag in _CONTROL or element.tag.group in (0x0000, 0x0002):
            continue
        tag = f"{int(element.tag):08X}"
        requested[tag] = element.VR
        value = _match_value(element)
        if value is None:
            if element.VR == "SQ" and _asks_sequence_matching(element):
                ignored.append(element.keyword or tag)
            continue
        known = level_of(tag)
        if element.tag.is_private or (known and LEVELS.index(known) > rank):
            ignored.append(element.keyword or tag)
            continue
        attr = Attribute(element.keyword or tag, tag, element.VR)
        try:
            check_value(attr, value)
        except InvalidQuery as err:
            raise IdentifierError(err.message, offending=tag) from None
        filters[tag] = (attr, value)
    return Identifier(level, filters, requested, tuple(ignored))


def check_retrieve(ident: Identifier) -> None:
    """Refuse a C-GET/C-MOVE identifier that does not name exactly what to send.

    A retrieve names its entities by their unique keys, by value or a list of UIDs (PS3.4
    C.4.2.2.1): the key of its level is required, a pattern would match what the requester
    did not mean to send, and the key of a lower level would be left out of the match (the
    whole series sent for one instance). IdentifierError says which key is at fault and
    what to send instead, in the 64 characters an Error Comment holds.
    """
    rank = LEVELS.index(ident.level)
    for level, tag in list(UNIQUE_KEYS.items())[rank + 1 :]:
        if _KEYWORDS[tag] in ident.ignored:
            raise IdentifierError(
                f"{_KEYWORDS[tag]} needs QueryRetrieveLevel {level}, not {ident.level}",
                offending=tag,
            )
    tag = UNIQUE_KEYS[ident.level]
    if tag not in ident.filters:
        raise IdentifierError(
            f"{_KEYWORDS[tag]} is required to retrieve at {ident.level} level", offending=tag
        )
    for tag in UNIQUE_KEYS.values():
        if tag in ident.filters and any(c in ident.filters[tag][1] for c in "*?"):
            raise IdentifierError(
                f"{_KEYWORDS[tag]} takes no wildcards (* or ?) in a retrieve", offending=tag
            )
