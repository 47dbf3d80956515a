"""The DICOM JSON model of a split instance (PS3.18 F.2), bulk data as BulkDataURI."""

from __future__ import annotations

import base64
import json
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from pydicom.dataset import Dataset

from tests.dicom.helpers import assert_same_elements, sample_bytes, with_empty_values, with_uids
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.model import SplitInstance
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_general, split_instance
from voxelhub.dicom.synthetic import ct_phantom

TAG = re.compile(r"[0-9A-F]{8}")
VALUE_KEYS = {"Value", "BulkDataURI", "InlineBinary"}


def _uri(path: str) -> str:
    return f"https://store.example/bulk/{path}"


def _ct_json() -> dict[str, Any]:
    return split_instance(
        write_part10(ct_phantom(slices=1, size=32)[0]), bulkdata_uri=_uri
    ).dataset_json


def _assert_ps318_shape(document: dict[str, Any]) -> None:
    for tag, element in document.items():
        assert TAG.fullmatch(tag), tag
        assert set(element) <= {"vr", *VALUE_KEYS}, (tag, element)
        assert len(set(element) & VALUE_KEYS) <= 1, tag
        assert re.fullmatch(r"[A-Z]{2}", element["vr"]), (tag, element["vr"])
        if element["vr"] == "SQ":
            for item in element.get("Value", []):
                _assert_ps318_shape(item)


def test_json_has_the_ps318_shape() -> None:
    document = _ct_json()
    _assert_ps318_shape(document)
    json.dumps(document)  # plain JSON types only
    assert document["7FE00010"] == {"vr": "OW", "BulkDataURI": _uri("7FE00010")}
    assert document["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Demo^Phantom"}]}
    assert document["00020010"] == {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}
    assert document["00280010"] == {"vr": "US", "Value": [32]}


def test_bulk_data_is_left_out_without_a_uri() -> None:
    split = split_instance(write_part10(ct_phantom(slices=1, size=32)[0]))
    assert "7FE00010" not in split.dataset_json
    assert "00100010" in split.dataset_json


def test_small_pixel_data_is_still_bulk_data() -> None:
    document = split_instance(sample_bytes("SC_rgb_small_odd.dcm"), bulkdata_uri=_uri).dataset_json
    assert document["7FE00010"]["BulkDataURI"] == _uri("7FE00010")


def test_nested_bulk_data_gets_its_path() -> None:
    ds = ct_phantom(slices=1, size=32)[0]
    icon = Dataset()
    icon.Rows = icon.Columns = 64
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = bytes(64 * 64)
    ds.IconImageSequence = [icon]
    document = split_instance(write_part10(ds), bulkdata_uri=_uri).dataset_json
    nested = document["00880200"]["Value"][0]["7FE00010"]
    assert nested == {"vr": "OB", "BulkDataURI": _uri("00880200/0/7FE00010")}


def test_big_endian_binary_values_are_little_endian_in_json() -> None:
    little = split_instance(sample_bytes("OBXXXX1A.dcm")).dataset_json
    big = split_instance(sample_bytes("OBXXXX1A_expb.dcm")).dataset_json
    lut = "00281201"  # Red Palette Color Lookup Table Data, OW
    assert big[lut] == little[lut]
    raw = read_dataset(sample_bytes("OBXXXX1A.dcm")).RedPaletteColorLookupTableData
    assert base64.b64decode(little[lut]["InlineBinary"]) == raw


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "test-SR.dcm",
        "rtplan.dcm",
        "rtstruct.dcm",
        "emri_small_jpeg_2k_lossless.dcm",
        "nested_priv_SQ.dcm",
        "liver.dcm",
    ],
)
def test_pydicom_reads_the_json_back_to_equal_values(name: str) -> None:
    data = sample_bytes(name)
    if name == "nested_priv_SQ.dcm":
        data = with_uids(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = read_dataset(data)
        document = split_instance(data, bulkdata_uri=_uri).dataset_json
    _assert_ps318_shape(document)
    bulk = {tag for tag, element in document.items() if "BulkDataURI" in element}
    inline = {tag: element for tag, element in document.items() if tag not in bulk}
    back = Dataset.from_json({k: v for k, v in inline.items() if not k.startswith("0002")})
    for tag in bulk:
        del original[int(tag, 16)]
    assert_same_elements(original, back)


@pytest.mark.parametrize("split", [split_instance, split_general], ids=["fast", "general"])
def test_empty_values_of_multi_valued_elements_are_null(
    split: Callable[..., SplitInstance],
) -> None:
    document = split(with_empty_values(), bulkdata_uri=_uri).dataset_json
    assert document["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]}
    assert document["00080090"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Doe^Jane"}, None, {"Alphabetic": "Roe^R"}],
    }
    assert document["00281050"] == {"vr": "DS", "Value": [40.0, None]}
    assert document["00281051"] == {"vr": "DS", "Value": [None, 400.0]}
    assert document["00200037"]["Value"] == [1.0, 0.0, 0.0, None, 1.0, 0.0]
    back = Dataset.from_json({k: v for k, v in document.items() if "BulkDataURI" not in v})
    assert list(back.ImageType) == ["ORIGINAL", "", "AXIAL"]
    assert back.WindowCenter[0] == 40 and not back.WindowCenter[1]
