"""The benchmark client's Part-10 reader gives what pydicom gives, for every server's files."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def client() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_dicomweb", BENCH / "_dicomweb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _part10(syntax: str, pixel: bytes, *, encapsulated: bool, number: int = 7) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    item = Dataset()
    item.CodeValue = "T-D0050"
    ds.AnatomicRegionSequence = [item]
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixel
    ds["PixelData"].VR = "OB" if encapsulated else "OW"
    if encapsulated:
        ds["PixelData"].is_undefined_length = True
        ds["AnatomicRegionSequence"].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _same(client: ModuleType, body: bytes) -> tuple[str, int, bytes]:
    syntax, number, frame = client.read_part10(body)
    expected = client._read_with_pydicom(body)
    assert (syntax, number, bytes(frame)) == (expected[0], expected[1], bytes(expected[2]))
    return syntax, number, bytes(frame)


def test_native_file_is_walked(client: ModuleType) -> None:
    pixels = np.arange(16, dtype="<u2").tobytes()
    body = _part10(ExplicitVRLittleEndian, pixels, encapsulated=False, number=12)
    assert client._walk(body)[1] == 12
    assert _same(client, body) == (ExplicitVRLittleEndian, 12, pixels)


def test_encapsulated_fragments_are_joined(client: ModuleType) -> None:
    fragments = [b"\xff\x4f\xff\x51" + bytes(range(20)), bytes(range(30, 62))]
    pixel = encapsulate([b"".join(fragments)], fragments_per_frame=2)
    body = _part10("1.2.840.10008.1.2.4.201", pixel, encapsulated=True)
    assert client._walk(body)[0] == "1.2.840.10008.1.2.4.201"
    assert _same(client, body)[2] == b"".join(fragments)


def test_implicit_vr_goes_to_pydicom(client: ModuleType) -> None:
    body = _part10(ImplicitVRLittleEndian, bytes(32), encapsulated=False)
    with pytest.raises(client._NotPlain):
        client._walk(body)
    assert _same(client, body)[:2] == (ImplicitVRLittleEndian, 7)


def test_as_pydicom_on_its_test_files(client: ModuleType) -> None:
    compared = 0
    for path in [get_testdata_file("CT_small.dcm"), *get_testdata_files("*.dcm")]:
        if path is None:
            continue
        body = Path(path).read_bytes()
        try:
            client._read_with_pydicom(body)
        except Exception:  # files pydicom itself cannot read this way
            continue
        _same(client, body)
        compared += 1
    assert compared >= 20
