"""The element-by-element split of plain files, against the general (pydicom) split."""

from __future__ import annotations

import warnings
from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.dicom.helpers import sample_bytes, sample_names
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.fastsplit import read_plain
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.model import SplitInstance
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_general, split_instance
from voxelhub.dicom.synthetic import ct_phantom


def _uri(tag: str) -> str:
    return f"/bulk/{tag}"


def _both(data: bytes) -> tuple[SplitInstance | str, SplitInstance | str]:
    """The fast and the general split of `data`, or the error each raised."""
    out: list[SplitInstance | str] = []
    for split in (split_instance, split_general):
        try:
            out.append(split(data, bulkdata_uri=_uri))
        except DicomError as err:
            out.append(f"{err.code}: {err}")
    return out[0], out[1]


def _plain_variant(data: bytes) -> bytes | None:
    """A sample as an explicit VR little endian image with native 16-bit pixel data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(BytesIO(data), force=True)
            tags = list(ds.keys())
            for tag in [t for t in tags if t >= 0x7FE00000 or t.group == 0x0002]:
                del ds[tag]
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                if not ds.get(keyword):
                    setattr(ds, keyword, generate_uid())
            if not ds.get("SOPClassUID"):
                ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
            ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PhotometricInterpretation = "MONOCHROME2"
            for keyword in ("NumberOfFrames", "PlanarConfiguration"):
                if keyword in ds:
                    delattr(ds, keyword)
            ds.add_new(0x7FE00010, "OW", np.arange(64, dtype="<u2").tobytes())
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            return write_part10(ds)
        except Exception:  # samples pydicom cannot rewrite are no plain files
            return None


def test_plain_samples_split_as_the_general_way_splits_them() -> None:
    plain = 0
    for name in sample_names():
        data = _plain_variant(sample_bytes(name))
        if data is None or read_plain(data) is None:
            continue
        plain += 1
        fast, general = _both(data)
        assert fast == general, name
    # Character sets, sequences, private tags and odd values among them.
    assert plain >= 100


def test_a_ct_series_splits_as_the_general_way_splits_it() -> None:
    for ds in ct_phantom(slices=3, size=64):
        data = write_part10(ds)
        assert read_plain(data) is not None
        fast, general = _both(data)
        assert fast == general
        assert isinstance(fast, SplitInstance)
        assert fast.header == data[: len(fast.header)]
        assert fast.dataset_json["7FE00010"] == {"vr": "OW", "BulkDataURI": "/bulk/7FE00010"}


def test_the_uri_maker_gets_the_instance_keys() -> None:
    data = write_part10(ct_phantom(slices=1, size=16)[0])
    split = split_instance(data, bulkdata_uri_for=lambda keys: lambda tag: keys.sop_instance_uid)
    assert split.dataset_json["7FE00010"]["BulkDataURI"] == split.keys.sop_instance_uid


def _ct(**changes: object) -> Dataset:
    ds = ct_phantom(slices=1, size=16)[0]
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def _with_trailing_element(ds: Dataset) -> bytes:
    return write_part10(ds) + b"\xfc\xff\xfc\xff" + b"OB\0\0" + (4).to_bytes(4, "little") + b"pad!"


def test_cut_files_and_elements_after_the_pixel_data_are_not_plain() -> None:
    data = write_part10(_ct())
    assert read_plain(data[:-10]) is None
    assert read_plain(_with_trailing_element(_ct())) is None
    fast, general = _both(data[:-10])
    assert isinstance(fast, str)
    assert fast == general


def test_implicit_big_bulky_and_compressed_files_are_not_plain() -> None:
    implicit = _ct()
    implicit.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    assert read_plain(write_part10(implicit)) is None
    bulky = _ct()
    bulky.add_new(0x00091010, "LO", "VOXELHUB")
    bulky.add_new(0x00091000, "LO", "VOXELHUB")
    bulky.add_new(0x00091100, "OB", bytes(2000))
    assert read_plain(write_part10(bulky)) is None
    fast, general = _both(write_part10(bulky))
    assert fast == general


def test_an_invalid_plain_file_fails_as_the_general_way_fails() -> None:
    for changes in ({"SOPInstanceUID": "1.2.x"}, {"BitsStored": 20}, {"Rows": 17}):
        data = write_part10(_ct(**changes))
        fast, general = _both(data)
        assert isinstance(fast, str)
        assert fast == general


def test_uids_in_the_json_model_are_plain_strings() -> None:
    """Both splits give UIDs as `str`, in sequences too: pydicom's `UID` would validate
    itself again each time a split crosses from a worker process."""

    def uids(element: dict, found: list) -> list:  # type: ignore[type-arg]
        if element.get("vr") == "UI":
            found.extend(element.get("Value", []))
        for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
            for nested in item.values():
                uids(nested, found)
        return found

    ds = ct_phantom(slices=1, size=16)[0]
    ds.ReferencedImageSequence = [Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = generate_uid()
    for data in (write_part10(ds), sample_bytes("rtplan.dcm")):
        for split in _both(data):
            assert isinstance(split, SplitInstance)
            found = [v for e in split.dataset_json.values() for v in uids(e, [])]
            assert len(found) >= 5
            assert {type(v) for v in found} == {str}


# What validation, the index keys and the pixel layout read, present or not.
_READ_KEYWORDS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "PatientID",
    "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName", "Modality",
    "SeriesNumber", "SeriesDescription", "InstanceNumber", "NumberOfFrames", "Rows",
    "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "PixelRepresentation",
    "PlanarConfiguration", "PhotometricInterpretation", "PixelData", "FloatPixelData",
    "DoubleFloatPixelData",
)  # fmt: skip


def test_plain_attributes_answer_as_the_datasets_do() -> None:
    """As the plain file's own Dataset, and with values equal to the general way's (an
    empty sequence is a list on the plain path, and Pixel Data a view of the file)."""
    absent = object()
    for name in sample_names():
        data = _plain_variant(sample_bytes(name))
        plain = read_plain(data) if data is not None else None
        if plain is None:
            continue
        general, ds = read_dataset(data), plain.dataset
        attributes = plain.attributes
        keywords = {elem.keyword for elem in general if elem.keyword} | set(_READ_KEYWORDS)
        for keyword in sorted(keywords):
            assert (keyword in attributes) == (keyword in general), (name, keyword)
            value = attributes.get(keyword, absent)
            assert value == general.get(keyword, absent), (name, keyword)
            assert getattr(attributes, keyword, absent) == value, (name, keyword)
            assert type(value) is type(ds.get(keyword, absent)), (name, keyword)
        pixel = attributes["PixelData"]
        assert pixel.is_undefined_length is general["PixelData"].is_undefined_length
        assert bytes(pixel.value) == bytes(general.PixelData)
        meta = attributes.file_meta
        assert meta.TransferSyntaxUID == general.file_meta.TransferSyntaxUID
        assert meta.get("TransferSyntaxUID") == general.file_meta.get("TransferSyntaxUID")


def test_a_plain_file_has_the_dataset_the_general_way_reads() -> None:
    data = write_part10(_ct())
    plain = read_plain(data)
    assert plain is not None
    ds = read_dataset(data)
    assert plain.dataset == ds
    assert plain.dataset.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert plain.dataset.original_encoding == ds.original_encoding
    assert plain.dataset is plain.dataset
