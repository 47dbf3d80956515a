"""The Native DICOM Model (PS3.19 §A.1): DICOM JSON objects as XML, and back.

DICOMweb answers searches and metadata in XML (`application/dicom+xml`, one document per
dataset) as well as JSON, and takes STOW-RS metadata in either (PS3.18 §8.7.3, F.3). Both
directions go through the DICOM JSON model (PS3.18 F.2) that the store keeps, so an object
reads the same in either form:

- private data elements are written as the model wants them: the element number's high
  byte is 00 and the block's Private Creator goes in `privateCreator` ((0009,1001) of
  "GEMS_IDEN_01" is `tag="00090001" privateCreator="GEMS_IDEN_01"`); read back, each
  creator gets its block again (a new one when the document names no creator element);
- bulk data is `<BulkData uri=…>` where the JSON has a BulkDataURI, and small binary
  values are `<InlineBinary>` (base64), as in JSON;
- person names are split into their components (FamilyName, GivenName, …) for each of
  the Alphabetic, Ideographic and Phonetic groups.

Documents are read with expat, which expands no external entity; a document type
declaration (and with it any entity) is refused, as the model has none.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from typing import Any
from xml.parsers import expat

from pydicom.datadict import dictionary_VR, keyword_for_tag

NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
MEDIA_TYPE = "application/dicom+xml"

_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_NAME_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"DS", "FD", "FL"})
_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
     "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
     "UR", "US", "UT", "UV"}
)  # fmt: skip
# Characters XML 1.0 cannot hold even as references (controls other than tab, LF, CR).
_NOT_XML10 = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TAG = re.compile("[0-9A-Fa-f]{8}")


class XmlError(ValueError):
    """A document that is not the Native DICOM Model, with what is wrong in `str`."""


# --- writing -------------------------------------------------------------------------------


def to_xml(dataset: Mapping[str, Any]) -> bytes:
    """One NativeDicomModel document holding `dataset` (a DICOM JSON object)."""
    out: list[str] = []
    _write_dataset(out, dataset)
    body = "".join(out)
    version = "1.0"
    if _NOT_XML10.search(body):  # text with control characters: XML 1.1 references
        version = "1.1"
        body = _NOT_XML10.sub(lambda m: f"&#x{ord(m.group()):X};", body)
    return (
        f'<?xml version="{version}" encoding="UTF-8"?>\n'
        f'<NativeDicomModel xmlns="{NAMESPACE}" xml:space="preserve">\n{body}'
        "</NativeDicomModel>\n"
    ).encode()


def _escape(text: str) -> str:
    # A carriage return is written as a reference: a parser turns a literal CR LF into LF.
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _attribute(text: str) -> str:
    return _escape(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def _write_dataset(out: list[str], dataset: Mapping[str, Any]) -> None:
    creators = _creators(dataset)
    for tag in sorted(dataset):
        element = dataset[tag]
        if not isinstance(element, Mapping):
            raise XmlError(f"attribute {tag} is not a DICOM JSON element: {element!r:.80}")
        vr = str(element.get("vr", ""))
        written_tag, head = tag.upper(), ""
        number = int(tag, 16)
        group, low = number >> 16, number & 0xFFFF
        if low == 0:  # group lengths are left out of the model (PS3.19 §A.1.1)
            continue
        if group % 2 and low >= 0x1000 and (creator := creators.get((group, low >> 8))):
            written_tag = f"{group:04X}00{low & 0xFF:02X}"
            head = f' privateCreator="{_attribute(creator)}"'
        elif not group % 2 and (keyword := keyword_for_tag(number)):
            head = f' keyword="{keyword}"'
        out.append(f'<DicomAttribute tag="{written_tag}" vr="{vr}"{head}>')
        _write_value(out, vr, element)
        out.append("</DicomAttribute>\n")


def _creators(dataset: Mapping[str, Any]) -> dict[tuple[int, int], str]:
    """(group, block) → Private Creator, from the creator elements (gggg,0010-00FF)."""
    found = {}
    for tag, element in dataset.items():
        number = int(tag, 16)
        group, low = number >> 16, number & 0xFFFF
        if group % 2 and 0x10 <= low <= 0xFF and isinstance(element, Mapping):
            values = element.get("Value") or []
            if values and isinstance(values[0], str):
                found[(group, low)] = values[0]
    return found


def _write_value(out: list[str], vr: str, element: Mapping[str, Any]) -> None:
    if "BulkDataURI" in element:
        out.append(f'\n<BulkData uri="{_attribute(str(element["BulkDataURI"]))}"/>\n')
        return
    if "InlineBinary" in element:
        out.append(f"\n<InlineBinary>{element['InlineBinary']}</InlineBinary>\n")
        return
    values = element.get("Value") or []
    if values:
        out.append("\n")
    for index, value in enumerate(values, start=1):
        if vr == "SQ":
            out.append(f'<Item number="{index}">\n')
            _write_dataset(out, value or {})
            out.append("</Item>\n")
        elif vr == "PN":
            out.append(f'<PersonName number="{index}">')
            for group in _NAME_GROUPS:
                if text := (value or {}).get(group):
                    out.append(f"<{group}>{_name_components(text)}</{group}>")
            out.append("</PersonName>\n")
        elif value is None:
            out.append(f'<Value number="{index}"/>\n')
        else:
            out.append(f'<Value number="{index}">{_escape(_text(value))}</Value>\n')


def _text(value: Any) -> str:
    if isinstance(value, bool):  # not a DICOM type; written as JSON would
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)  # "5.0", as JSON writes it
    return str(value)


def _name_components(text: str) -> str:
    parts = text.split("^")
    return "".join(
        f"<{name}>{_escape(part)}</{name}>"
        for name, part in zip(_NAME_COMPONENTS, parts, strict=False)
        if part
    )


# --- reading -------------------------------------------------------------------------------


class _Node:
    __slots__ = ("attributes", "children", "name", "text")

    def __init__(self, name: str, attributes: dict[str, str]) -> None:
        self.name, self.attributes = name, attributes
        self.children: list[_Node] = []
        self.text: list[str] = []

    def content(self) -> str:
        return "".join(self.text)


def _parse(data: bytes | str) -> _Node:
    root = _Node("", {})
    stack = [root]

    def start(name: str, attributes: dict[str, str]) -> None:
        node = _Node(name.rpartition("}")[2], attributes)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        stack[-1].text.append(data)

    def refuse(*_: Any) -> None:
        raise XmlError(
            "the document has a document type declaration (<!DOCTYPE …>); the Native DICOM "
            "Model has none, and no entity is expanded: send the NativeDicomModel element alone"
        )

    parser = expat.ParserCreate(namespace_separator="}")
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as err:
        raise XmlError(f"the document is not well-formed XML: {err}") from None
    if len(root.children) != 1 or root.children[0].name != "NativeDicomModel":
        found = root.children[0].name if root.children else "nothing"
        raise XmlError(f"the document's root element must be NativeDicomModel, not {found}")
    return root.children[0]


def from_xml(data: bytes | str) -> dict[str, Any]:
    """A NativeDicomModel document as a DICOM JSON object.

    Raises XmlError naming the attribute and what is wrong with it."""
    return _read_dataset(_parse(data), "")


def _read_dataset(node: _Node, where: str) -> dict[str, Any]:
    read: list[tuple[str, str | None, dict[str, Any]]] = []
    for child in node.children:
        if child.name != "DicomAttribute":
            raise XmlError(
                f"{where or 'the dataset'} holds a {child.name} element; only DicomAttribute "
                "elements belong there"
            )
        tag = child.attributes.get("tag", "")
        if not _TAG.fullmatch(tag):
            raise XmlError(
                f"a DicomAttribute{_at(where)} has tag {tag!r}; a tag is 8 hex digits, group "
                'then element, as in tag="00100010"'
            )
        tag = tag.upper()
        name = f"{where}{tag}"
        vr = child.attributes.get("vr") or _dictionary_vr(tag)
        if vr not in _VRS:
            raise XmlError(f"attribute {name} has vr {vr!r}, which is not a DICOM VR")
        read.append((tag, child.attributes.get("privateCreator"), _read_element(child, vr, name)))
    return _place_private(read, where)


def _at(where: str) -> str:
    return f" in {where.rstrip('/')}" if where else ""


def _dictionary_vr(tag: str) -> str:
    try:
        vr = str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"
    return vr.split(" or ", maxsplit=1)[0]  # "OB or OW": a guess; the model writes it


def _read_element(node: _Node, vr: str, name: str) -> dict[str, Any]:
    element: dict[str, Any] = {"vr": vr}
    kinds = {child.name for child in node.children}
    if len(kinds) > 1:
        raise XmlError(
            f"attribute {name} mixes {', '.join(sorted(kinds))}; an attribute holds Value, "
            "PersonName or Item elements, or one BulkData or InlineBinary"
        )
    if not kinds:
        return element
    kind = kinds.pop()
    if kind == "BulkData":
        uri = node.children[0].attributes.get("uri") or node.children[0].attributes.get("uuid")
        if len(node.children) > 1 or not uri:
            raise XmlError(f"attribute {name} needs one BulkData element with a uri")
        element["BulkDataURI"] = uri
    elif kind == "InlineBinary":
        text = "".join(node.children[0].content().split())
        try:
            base64.b64decode(text, validate=True)
        except binascii.Error:
            raise XmlError(f"attribute {name}: InlineBinary is not valid base64") from None
        element["InlineBinary"] = text
    else:
        element["Value"] = _read_values(node, kind, vr, name)
    return element


def _read_values(node: _Node, kind: str, vr: str, name: str) -> list[Any]:
    expected = {"SQ": "Item", "PN": "PersonName"}.get(vr, "Value")
    if kind != expected:
        raise XmlError(f"attribute {name} of vr {vr} holds {kind} elements; it takes {expected}")
    values: dict[int, Any] = {}
    for child in node.children:
        number = _number(child, name)
        if number in values:
            raise XmlError(f"attribute {name} has two {kind} elements numbered {number}")
        if kind == "Item":
            values[number] = _read_dataset(child, f"{name}/{number - 1}/")
        elif kind == "PersonName":
            values[number] = _person_name(child, name)
        else:
            values[number] = _value(child.content(), vr, name)
    if sorted(values) != list(range(1, len(values) + 1)):
        raise XmlError(
            f"the {kind} elements of attribute {name} must be numbered 1, 2, … without gaps, "
            f"not {sorted(values)}"
        )
    return [values[n] for n in sorted(values)]


def _number(node: _Node, name: str) -> int:
    raw = node.attributes.get("number", "")
    if not raw.isdigit() or int(raw) < 1:
        raise XmlError(
            f"a {node.name} of attribute {name} has number {raw!r}; values are numbered "
            'from 1, as in <Value number="1">'
        )
    return int(raw)


def _value(text: str, vr: str, name: str) -> Any:
    if text == "":
        return None
    convert: Callable[[str], Any] | None = None
    if vr in _INTEGER_VRS:
        convert = int
    elif vr in _FLOAT_VRS:
        convert = float
    if convert is None:
        return text.upper() if vr == "AT" else text
    try:
        return convert(text.strip())
    except ValueError:
        whole = "whole " if convert is int else ""
        raise XmlError(
            f"attribute {name} of vr {vr} holds {text!r}, which is not a {whole}number"
        ) from None


def _person_name(node: _Node, name: str) -> dict[str, str] | None:
    groups = {}
    for group in node.children:
        if group.name not in _NAME_GROUPS:
            raise XmlError(
                f"a PersonName of attribute {name} holds {group.name}; it takes Alphabetic, "
                "Ideographic and Phonetic"
            )
        components = {c.name: c.content() for c in group.children}
        unknown = set(components) - set(_NAME_COMPONENTS)
        if unknown:
            raise XmlError(
                f"a PersonName of attribute {name} holds {', '.join(sorted(unknown))}; name "
                f"components are {', '.join(_NAME_COMPONENTS)}"
            )
        text = "^".join(components.get(c, "") for c in _NAME_COMPONENTS).rstrip("^")
        if text:
            groups[group.name] = text
    return groups or None


def _place_private(
    read: list[tuple[str, str | None, dict[str, Any]]], where: str
) -> dict[str, Any]:
    """The dataset keyed by real tags: each private element put in its creator's block."""
    dataset: dict[str, Any] = {}
    blocks: dict[tuple[int, str], int] = {}  # (group, creator) → block
    used: dict[int, set[int]] = {}
    for tag, creator, element in read:
        number = int(tag, 16)
        group, low = number >> 16, number & 0xFFFF
        if creator is None and group % 2 and 0x10 <= low <= 0xFF:
            values = element.get("Value") or []
            if values and isinstance(values[0], str):
                blocks.setdefault((group, values[0]), low)
            used.setdefault(group, set()).add(low)
    for written, creator, element in read:
        tag = written
        number = int(tag, 16)
        group, low = number >> 16, number & 0xFFFF
        if creator is not None and group % 2 and low <= 0xFF:
            block = blocks.get((group, creator))
            if block is None:  # no creator element sent: reserve the next free block
                taken = used.setdefault(group, set())
                free = [b for b in range(0x10, 0x100) if b not in taken]
                if not free:
                    raise XmlError(
                        f"group {group:04X}{_at(where)} has no free private block for "
                        f"creator {creator!r}"
                    )
                block = free[0]
                taken.add(block)
                blocks[(group, creator)] = block
                dataset[f"{group:04X}{block:04X}"] = {"vr": "LO", "Value": [creator]}
            tag = f"{group:04X}{block:02X}{low:02X}"
        if tag in dataset:
            raise XmlError(f"attribute {where}{tag} appears twice")
        dataset[tag] = element
    return dict(sorted(dataset.items()))
