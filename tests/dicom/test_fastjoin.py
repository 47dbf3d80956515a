"""The byte-level join of a stored header and encapsulated frames, against the pydicom join."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.dicom.helpers import sample_bytes
from voxelhub.dicom.fastjoin import join_as_stored
from voxelhub.dicom.header import header_bytes, header_of_file, write_part10
from voxelhub.dicom.join import join_instance
from voxelhub.dicom.model import IMPLICIT_VR_LITTLE_ENDIAN, SplitInstance
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.synthetic import ct_phantom


def _slow(split: SplitInstance) -> bytes:
    return join_instance(
        split.header,
        split.frames,
        split.frames_transfer_syntax,
        target_transfer_syntax=split.frames_transfer_syntax,
        pixel=split.pixel,
    )


def _fast(split: SplitInstance) -> bytes | None:
    assert split.pixel is not None
    return join_as_stored(split.header, split.frames, split.frames_transfer_syntax, split.pixel)


def _ct(**changes: object) -> Dataset:
    ds = ct_phantom(slices=1, size=16)[0]
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def test_htj2k_of_a_native_ct_is_the_same_file_as_the_pydicom_join() -> None:
    split = split_instance(write_part10(_ct()))
    fast = _fast(split)
    assert fast is not None
    assert fast == _slow(split)
    assert dcmread(BytesIO(fast)).pixel_array.shape == (16, 16)


def test_undefined_length_sequences_are_walked() -> None:
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    nested = Dataset()
    nested.CodeMeaning = "Chest"
    item.PurposeOfReferenceCodeSequence = Sequence([nested])
    ds = _ct()
    ds.AnatomicRegionSequence = Sequence([item])
    ds["AnatomicRegionSequence"].is_undefined_length = True
    split = split_instance(write_part10(ds))
    assert _fast(split) == _slow(split)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_rle.dcm", "MR_small_RLE.dcm"])
def test_compressed_samples_kept_in_their_syntax(name: str) -> None:
    split = split_instance(sample_bytes(name))
    fast = _fast(split)
    if fast is not None:  # None only where the slow path must do it
        assert fast == _slow(split)


def test_what_it_leaves_to_the_slow_path() -> None:
    implicit = _ct()
    implicit.file_meta.TransferSyntaxUID = IMPLICIT_VR_LITTLE_ENDIAN
    assert _fast(split_instance(write_part10(implicit))) is None
    native = split_instance(write_part10(_ct()), encode=False)
    assert _fast(native) is None
    padded = _ct()
    padded.add_new(0xFFFCFFFC, "OB", b"\0\0")
    assert _fast(split_instance(write_part10(padded))) is None


def test_header_of_a_file_is_the_written_header() -> None:
    explicit = write_part10(_ct())
    implicit_ds = _ct()
    implicit_ds.file_meta.TransferSyntaxUID = IMPLICIT_VR_LITTLE_ENDIAN
    implicit = write_part10(implicit_ds)
    padded_ds = _ct()
    padded_ds.add_new(0xFFFCFFFC, "OB", b"\0\0")
    padded = write_part10(padded_ds)
    for data in (explicit, implicit, padded):
        assert header_of_file(data, read_dataset(data)) == header_bytes(read_dataset(data))
    assert (
        header_of_file(explicit, read_dataset(explicit))
        == explicit[: len(header_bytes(read_dataset(explicit)))]
    )
