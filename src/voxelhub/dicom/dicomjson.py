"""The DICOM JSON model (PS3.18 F.2) of an instance, with bulk data as BulkDataURI.

The pixel data of the top-level dataset is always bulk data; other binary values
(OB, OW, OF, ...) are bulk data above `BULK_DATA_THRESHOLD` bytes of base64 and inline
otherwise. `bulkdata_uri` receives the element's path: its tag as 8 upper-case hex
digits ("7FE00010") at the top level, and for an element inside a sequence the
sequence tag, the item index and the tag joined by "/" ("00880200/0/7FE00010", the
pixel data of an icon image). Without `bulkdata_uri` bulk data is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr
from pydicom.jsonrep import convert_to_python_number

from voxelhub.dicom.byteorder import WORD_BYTES
from voxelhub.dicom.errors import DicomError

BULK_DATA_THRESHOLD = 1024
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", *WORD_BYTES})
_LEFT_OUT = "\0left-out"
_PIXEL_TAGS = {
    "7FE00010": "PixelData",
    "7FE00008": "FloatPixelData",
    "7FE00009": "DoubleFloatPixelData",
}
_TRANSFER_SYNTAX_TAG = "00020010"
# Multi-valued text VRs whose empty values JSON writes as null (PS3.18 F.2.5); LT, ST,
# UT and UR hold one value, backslashes included.
_MULTI_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"})
_NUMBER_TEXT_VRS = frozenset({"DS", "IS"})
_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def dataset_json(
    ds: Dataset,
    *,
    bulkdata_uri: Callable[[str], str] | None = None,
    transfer_syntax_uid: str | None = None,
) -> dict[str, Any]:
    """`ds` as DICOM JSON, with the Transfer Syntax UID as (0002,0010) when given.

    Binary values must be little endian (swap a big endian dataset first).
    """
    # Implicit VR leaves some VRs ambiguous ("OB or OW", "US or SS") until resolved.
    correct_ambiguous_vr(ds, is_little_endian=True)
    paths = _binary_paths(ds, prefix="")

    def handler(elem: DataElement) -> str:
        if bulkdata_uri is None:
            return _LEFT_OUT
        return bulkdata_uri(paths[id(elem)])

    try:
        result = items_json(ds, handler=handler, threshold=BULK_DATA_THRESHOLD)
    except Exception as err:  # pydicom raises on values it cannot convert
        raise DicomError(
            f"The dataset has a value that cannot be written as DICOM JSON ({err}).",
            code="invalid_attribute",
        ) from err
    for tag, keyword in _PIXEL_TAGS.items():
        if tag in result:
            vr = ds[keyword].VR
            result[tag] = {"vr": vr, "BulkDataURI": handler(ds[keyword])}
    _resolve(result)
    for element in result.values():
        plain_uids(element)
    if transfer_syntax_uid:
        result = {_TRANSFER_SYNTAX_TAG: {"vr": "UI", "Value": [transfer_syntax_uid]}, **result}
    return result


def items_json(
    ds: Dataset, *, handler: Callable[[DataElement], str], threshold: int
) -> dict[str, Any]:
    """The elements of `ds` as DICOM JSON, each as `element_json` writes it."""
    return {
        f"{elem.tag:08X}": element_json(elem, handler=handler, threshold=threshold) for elem in ds
    }


def element_json(
    elem: DataElement, *, handler: Callable[[DataElement], str], threshold: int
) -> dict[str, Any]:
    """`elem` as DICOM JSON, as pydicom writes it except that the empty values of a
    multi-valued element are null (PS3.18 F.2.5): `0.5\\` is `[0.5, null]`, which
    pydicom cannot write at all, and `ORIGINAL\\\\AXIAL` is `["ORIGINAL", null, "AXIAL"]`.
    Sequence items are written the same way at any depth.

    >>> from pydicom.dataelem import DataElement
    >>> no_bulk = lambda elem: ""
    >>> element_json(DataElement(0x00280030, "DS", "0.5\\\\"), handler=no_bulk, threshold=1024)
    {'vr': 'DS', 'Value': [0.5, None]}
    """
    vr = elem.VR
    if vr == "SQ":
        items = [items_json(item, handler=handler, threshold=threshold) for item in elem.value]
        return {"vr": vr, "Value": items}
    if elem.VM > 1 and vr in _NUMBER_TEXT_VRS:
        values = list(elem.value)
        present = [v for v in values if v != ""]
        numbers = iter(convert_to_python_number(present, vr) if present else [])
        return {"vr": vr, "Value": [None if v == "" else next(numbers) for v in values]}
    if elem.VM > 1 and vr == "PN":
        return {"vr": vr, "Value": [_name_json(name) for name in elem.value]}
    result = elem.to_json_dict(bulk_data_element_handler=handler, bulk_data_threshold=threshold)
    if elem.VM > 1 and vr in _MULTI_TEXT_VRS:
        result["Value"] = [None if v == "" else v for v in result["Value"]]
    return result


def _name_json(name: Any) -> dict[str, str] | None:
    """One value of a PN element: its component groups, or null when it is empty."""
    groups = dict(zip(_NAME_GROUPS, name.components, strict=False))
    return groups if any(groups.values()) else None


def plain_uids(element: dict[str, Any]) -> dict[str, Any]:
    """One element's DICOM JSON with its UIDs as plain `str`, also inside sequence items
    (changed in place): pydicom's `UID` validates itself again whenever it is unpickled,
    which the web process does for every instance a split worker sends back."""
    values = element.get("Value")
    if values and element.get("vr") == "UI":
        element["Value"] = [str(v) if v is not None else None for v in values]
    elif values and element.get("vr") == "SQ":
        for item in values:
            for nested in item.values():
                plain_uids(nested)
    return element


def _binary_paths(ds: Dataset, *, prefix: str) -> dict[int, str]:
    """Element identity → bulk data path, for every binary element at any depth."""
    paths: dict[int, str] = {}
    for tag in list(ds.keys()):
        elem = ds[tag]
        path = f"{prefix}{tag:08X}"
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value):
                paths.update(_binary_paths(item, prefix=f"{path}/{index}/"))
        elif elem.VR in _BINARY_VRS:
            paths[id(elem)] = path
    return paths


def _resolve(json_ds: dict[str, Any]) -> None:
    """Drop the bulk data elements that are left out."""
    for tag in list(json_ds):
        element = json_ds[tag]
        if element.get("BulkDataURI") == _LEFT_OUT:
            del json_ds[tag]
            continue
        if element.get("vr") == "SQ":
            for item in element.get("Value", []):
                _resolve(item)
