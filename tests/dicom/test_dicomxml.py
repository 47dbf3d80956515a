"""The Native DICOM Model (PS3.19 §A.1): our XML against dcmtk's `dcm2xml`, and back to JSON."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file

from tests.dicom.helpers import sample_names
from voxelhub.dicom.dicomxml import XmlError, from_xml, to_xml

_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _reference(path: str) -> dict[str, Any]:
    """pydicom's DICOM JSON of the file (every binary value inline), without file meta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True)
        as_json = ds.to_json_dict(bulk_data_threshold=10**9)
    return {k: v for k, v in as_json.items() if not k.startswith("0002")}


def _same(value: Any, *, binary: bool = True) -> Any:
    """What both forms must agree on. The model has no group lengths; an empty value is
    null (pydicom writes ""), trailing empty name components and padding spaces are not
    part of a value, and an empty sequence has no Value; FL is compared as float32."""
    if isinstance(value, dict):
        vr = str(value.get("vr", ""))
        out = {}
        for key, item in value.items():
            if _compared(key, item, binary=binary):
                out[key] = _same(item, binary=binary)
        if vr:
            out["vr"] = vr
            if vr == "FL" and out.get("Value"):
                out["Value"] = [float(np.float32(v)) for v in out["Value"]]
        if out.get("Value") in ([], [None]) and vr in ("SQ", "PN"):
            out.pop("Value")
        return _empty_name_as_null(out)
    if isinstance(value, list):
        return [_same(v, binary=binary) for v in value]
    if isinstance(value, str):
        text = value.strip(" ").rstrip("^") if "^" in value else value.strip(" ")
        return text or None
    return value


def _compared(key: str, item: Any, *, binary: bool) -> bool:
    if len(key) == 8 and (key.startswith("0002") or key.endswith("0000")):
        return False
    if key == "00080005":  # dcm2xml +U8 rewrites the character set as UTF-8
        return False
    return binary or not (isinstance(item, dict) and str(item.get("vr")) in _BINARY)


def _empty_name_as_null(value: dict[str, Any]) -> dict[str, Any] | None:
    if value and "vr" not in value and set(value) <= {"Alphabetic", "Ideographic", "Phonetic"}:
        return None if all(v is None for v in value.values()) else value
    return value


def _samples_as_json() -> dict[str, dict[str, Any]]:
    """Every little-endian sample of which pydicom makes DICOM JSON (a few hold values it
    cannot, such as an IS of "1A")."""
    out = {}
    for name in sample_names():
        path = get_testdata_file(name, download=False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dcmread(path, stop_before_pixels=True).is_little_endian:
                    out[name] = _reference(path)
        except Exception:  # files pydicom cannot read are not this test's
            continue
    return out


def test_every_sample_reads_back_from_our_xml_as_it_was() -> None:
    samples = _samples_as_json()
    assert len(samples) > 80
    for name, reference in samples.items():
        back = from_xml(to_xml(reference))
        assert _same(back) == _same(reference), name


# Files on which pydicom and dcmtk read the same values: private blocks, nested SR content,
# RT sequences, multi-frame, colour, and person names in several groups and character sets
# (dcmtk's character set conversion here takes no ISO 2022 Japanese or Korean).
DCMTK_FILES = [
    get_testdata_file("CT_small.dcm", download=False),
    get_testdata_file("MR_small.dcm", download=False),
    get_testdata_file("test-SR.dcm", download=False),
    get_testdata_file("rtplan.dcm", download=False),
    get_testdata_file("rtstruct.dcm", download=False),
    get_testdata_file("emri_small.dcm", download=False),
    get_testdata_file("SC_rgb.dcm", download=False),
    *get_charset_files("chrX1.dcm"),
    *get_charset_files("chrX2.dcm"),
    *get_charset_files("chrI2.dcm"),
    *get_charset_files("chrRuss.dcm"),
    *get_charset_files("chrGreek.dcm"),
]


def _dcm2xml(path: str) -> bytes:
    done = subprocess.run(
        ["dcm2xml", "--native-format", "--encode-base64", "+U8", path],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def _layout(document: bytes) -> list[tuple[Any, ...]]:
    """Each DicomAttribute (nested ones too) as (depth, tag, vr, keyword, privateCreator)."""
    root = ElementTree.fromstring(document)
    out: list[tuple[Any, ...]] = []

    def walk(node: ElementTree.Element, depth: int) -> None:
        for child in node:
            name = child.tag.rpartition("}")[2]
            if name == "DicomAttribute":
                attributes = child.attrib
                if not attributes["tag"].startswith("0002"):
                    keys = ("vr", "keyword", "privateCreator")
                    out.append((depth, attributes["tag"], *(attributes.get(k) for k in keys)))
                walk(child, depth + 1)
            elif name == "Item":
                walk(child, depth + 1)

    walk(root, 0)
    return out


def _without_copied_phonetic(value: Any) -> Any:
    """dcm2xml 3.6.7 writes a name's Ideographic group again as its Phonetic group when the
    name has none ("Wang^XiaoDong=王^小東" gets a Phonetic 王^小東): left out here."""
    if isinstance(value, dict):
        if value.get("Phonetic") is not None and value.get("Phonetic") == value.get("Ideographic"):
            value = {k: v for k, v in value.items() if k != "Phonetic"}
        return {k: _without_copied_phonetic(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_copied_phonetic(v) for v in value]
    return value


@pytest.mark.skipif(shutil.which("dcm2xml") is None, reason="needs dcmtk's dcm2xml")
@pytest.mark.parametrize("path", DCMTK_FILES, ids=lambda p: Path(p).name)
def test_xml_agrees_with_dcmtk(path: str) -> None:
    theirs = _dcm2xml(path)
    reference = _reference(path)
    # Their document read as ours is: the same values, private elements in their blocks.
    assert _same(_without_copied_phonetic(from_xml(theirs)), binary=False) == _same(
        reference, binary=False
    )
    # Our document laid out as theirs: tags (private ones as gggg00ee), VRs and private
    # creators, attribute by attribute, and the keywords that dcmtk's dictionary has too.
    ours = [a for a in _layout(to_xml(reference)) if a[1] != "00080005"]
    expected = [a for a in _layout(theirs) if a[1] != "00080005"]
    assert [a[:3] + a[4:] for a in ours] == [a[:3] + a[4:] for a in expected]
    keywords = [(a[3], b[3]) for a, b in zip(ours, expected, strict=True) if b[3]]
    assert len(keywords) >= 10
    assert all(mine == theirs for mine, theirs in keywords), keywords


def test_private_elements_are_written_with_their_creator_and_placed_back() -> None:
    dataset = {
        "00090010": {"vr": "LO", "Value": ["ACME 1"]},
        "00090011": {"vr": "LO", "Value": ["ACME 2"]},
        "00091001": {"vr": "DS", "Value": [1.5]},
        "00091101": {"vr": "LO", "Value": ["second block"]},
    }
    document = to_xml(dataset)
    assert b'tag="00090001" vr="DS" privateCreator="ACME 1"' in document
    assert b'tag="00090001" vr="LO" privateCreator="ACME 2"' in document
    assert from_xml(document) == dataset
    # A document naming a creator with no creator element gets a free block for it.
    lone = (
        b'<NativeDicomModel><DicomAttribute tag="00290010" vr="LO"><Value number="1">OTHER'
        b'</Value></DicomAttribute><DicomAttribute tag="00290005" vr="US" privateCreator="NEW">'
        b'<Value number="1">7</Value></DicomAttribute></NativeDicomModel>'
    )
    assert from_xml(lone) == {
        "00290010": {"vr": "LO", "Value": ["OTHER"]},
        "00290011": {"vr": "LO", "Value": ["NEW"]},
        "00291105": {"vr": "US", "Value": [7]},
    }


def test_names_text_and_bulk_data_survive_the_trip() -> None:
    dataset = {
        "00100010": {
            "vr": "PN",
            "Value": [
                {
                    "Alphabetic": "Yamada^Tarou",
                    "Ideographic": "山田^太郎",
                    "Phonetic": "やまだ^たろう",
                },
                None,
                {"Alphabetic": "^^^Dr"},
            ],
        },
        "00081030": {"vr": "LO", "Value": ['<b>&"quoted"</b>']},
        "00204000": {"vr": "LT", "Value": ["line one\r\nline two\ttabbed\x0cpage"]},
        "00280030": {"vr": "DS", "Value": [0.5, 0.25]},
        "00209165": {"vr": "AT", "Value": ["0020000E"]},
        "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00880200": {"vr": "SQ", "Value": []},
        "7FE00010": {"vr": "OW", "BulkDataURI": "http://h/x?a=1&b=2"},
        "00282000": {"vr": "OB", "InlineBinary": "AAEC"},
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]},
    }
    document = to_xml(dataset)
    # XML 1.0 cannot hold a form feed: such a document is XML 1.1, with a reference.
    assert document.startswith(b'<?xml version="1.1"') and b"&#xC;" in document
    assert b"<Ideographic><FamilyName>\xe5\xb1\xb1\xe7\x94\xb0</FamilyName>" in document
    del dataset["00204000"]
    back = from_xml(to_xml(dataset))
    expected = dict(dataset, **{"00880200": {"vr": "SQ"}})
    expected["00100010"] = {
        "vr": "PN",
        "Value": [dataset["00100010"]["Value"][0], None, {"Alphabetic": "^^^Dr"}],
    }
    assert back == dict(sorted(expected.items()))
    carriage = {"00204000": {"vr": "LT", "Value": ["a\r\nb"]}}
    assert from_xml(to_xml(carriage)) == carriage


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><NativeDicomModel>&a;</NativeDicomModel>',
         "document type declaration"),
        (b"<NativeDicomModel><DicomAttribute", "not well-formed"),
        (b"<Other/>", "root element must be NativeDicomModel, not Other"),
        (b'<NativeDicomModel><DicomAttribute tag="0010" vr="PN"/></NativeDicomModel>',
         "tag '0010'"),
        (b'<NativeDicomModel><DicomAttribute tag="00280010" vr="XX"/></NativeDicomModel>',
         "vr 'XX'"),
        (b'<NativeDicomModel><DicomAttribute tag="00280010" vr="US"><Value number="1">big'
         b"</Value></DicomAttribute></NativeDicomModel>", "'big', which is not a whole number"),
        (b'<NativeDicomModel><DicomAttribute tag="00280010" vr="US"><Value number="2">1'
         b"</Value></DicomAttribute></NativeDicomModel>", "numbered 1, 2"),
        (b'<NativeDicomModel><DicomAttribute tag="00280010" vr="US"><Value>1</Value>'
         b"</DicomAttribute></NativeDicomModel>", "number ''"),
        (b'<NativeDicomModel><DicomAttribute tag="00081115" vr="SQ"><Value number="1">1'
         b"</Value></DicomAttribute></NativeDicomModel>", "it takes Item"),
        (b'<NativeDicomModel><DicomAttribute tag="00100010" vr="PN"><PersonName number="1">'
         b"<Alphabetic><Surname>X</Surname></Alphabetic></PersonName></DicomAttribute>"
         b"</NativeDicomModel>", "Surname"),
        (b'<NativeDicomModel><DicomAttribute tag="00282000" vr="OB"><InlineBinary>@@'
         b"</InlineBinary></DicomAttribute></NativeDicomModel>", "not valid base64"),
        (b'<NativeDicomModel><DicomAttribute tag="00100020" vr="LO"/><DicomAttribute '
         b'tag="00100020" vr="LO"/></NativeDicomModel>', "appears twice"),
    ],
)  # fmt: skip
def test_malformed_documents_are_refused_with_the_reason(document: bytes, says: str) -> None:
    with pytest.raises(XmlError, match=None) as raised:
        from_xml(document)
    assert says in str(raised.value)


def test_a_vr_left_out_comes_from_the_dictionary() -> None:
    document = (
        b'<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">'
        b'<DicomAttribute tag="00280010"><Value number="1">512</Value></DicomAttribute>'
        b"</NativeDicomModel>"
    )
    assert from_xml(document) == {"00280010": {"vr": "US", "Value": [512]}}
