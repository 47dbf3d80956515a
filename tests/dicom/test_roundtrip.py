"""Split → join round trips over every test file of pydicom and pydicom-data."""

from __future__ import annotations

import warnings
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.dicom.helpers import (
    assert_same_elements,
    assert_same_meta,
    sample_bytes,
    sample_names,
    with_uids,
)
from voxelhub.dicom.codecs import (
    decode_frame,
    decode_htj2k,
    decoded_description,
    fits_bits_stored,
    htj2k_encodable,
)
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.frames import native_frames
from voxelhub.dicom.join import join_instance
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, HTJ2K_LOSSLESS, SplitInstance
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.syntax import is_native

# Intentionally broken or non-conformant files: they must be refused with this code.
REFUSED = {
    "no_meta.dcm": ("unreadable", "starts with a stray byte, so no element can be read"),
    "MR_truncated.dcm": ("unreadable", "pixel data cut short"),
    "rtplan_truncated.dcm": ("unreadable", "file cut inside a sequence"),
    "emri_small_jpeg_2k_lossless_too_short.dcm": ("unreadable", "file cut after the meta"),
    "badVR.dcm": ("invalid_attribute", "NumberOfFrames is '1A'"),
    "bad_sequence.dcm": ("invalid_attribute", "StudyInstanceUID is a hex digest"),
}
# Parser test fragments without the UIDs of an instance: refused as they are, and round
# tripped once the UIDs are filled in (their private sequences and odd encodings stay).
FRAGMENTS = frozenset(
    {
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
        "UN_sequence.dcm",
        "empty_charset_LEI.dcm",
        "meta_missing_tsyntax.dcm",
        "nested_priv_SQ.dcm",
        "no_meta_group_length.dcm",
        "priv_SQ.dcm",
    }
)
# Frames no installed decoder can decode: stored and returned untouched, never decoded.
UNDECODABLE = {
    "JPEG2000-embedded-sequence-delimiter.dcm": "codestream corrupted on purpose",
}
# Frames pydicom's plugins here cannot decode but the store can (12-bit JPEG: libjpeg rejects
# a misplaced marker, Pillow reads no 12-bit JPEG; libjpeg-turbo does): their native form is
# checked against the store's own decoding instead of pydicom's.
DECODED_HERE_ONLY = {"JPEG-lossy.dcm"}


def _cases() -> list[object]:
    cases = []
    for name in sample_names():
        if name in REFUSED:
            continue
        if name in UNDECODABLE:
            cases.append(pytest.param(name, id=f"{name}-undecodable: {UNDECODABLE[name]}"))
        elif name in FRAGMENTS:
            cases.append(pytest.param(name, id=f"{name}-UIDs filled in"))
        else:
            cases.append(pytest.param(name, id=name))
    return cases


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about what is broken
@pytest.mark.parametrize(
    ("name", "code"),
    [pytest.param(name, code, id=f"{name}-{reason}") for name, (code, reason) in REFUSED.items()],
)
def test_broken_files_are_refused(name: str, code: str) -> None:
    with pytest.raises(DicomError) as caught:
        split_instance(sample_bytes(name))
    assert caught.value.code == code
    assert caught.value.message


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_fragments_without_uids_are_refused(name: str) -> None:
    with pytest.raises(DicomError) as caught:
        split_instance(sample_bytes(name))
    assert caught.value.code == "missing_attribute"
    assert caught.value.attribute in caught.value.message


@pytest.mark.parametrize("name", _cases())
def test_round_trip(name: str) -> None:
    data = sample_bytes(name)
    if name in FRAGMENTS:
        data = with_uids(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the oddities these files test
        original = read_dataset(data)
        split = split_instance(data)
        decodable = name not in UNDECODABLE and name not in DECODED_HERE_ONLY
        original_pixels = _pixels(original, split, decodable=decodable)
        for target in _targets(split):
            if name in UNDECODABLE and is_native(target) and split.pixel is not None:
                _check_undecodable(split, target)
                continue
            joined = _join(split, target)
            assert str(joined.file_meta.TransferSyntaxUID) == target
            assert_same_meta(original, joined)
            assert_same_elements(original, joined, changed=_changed(split, target))
            if original_pixels is not None:
                assert np.array_equal(joined.pixel_array, original_pixels), target
            elif name in DECODED_HERE_ONLY and is_native(target) and split.pixel is not None:
                ours = decode_frame(split.frames[0], split.frames_transfer_syntax, split.pixel)
                assert joined.pixel_array.tobytes() == ours, target
            elif split.pixel is not None:
                assert _frames_of(joined) == list(split.frames)
    if is_native(split.original_transfer_syntax) and split.pixel is not None:
        _check_native_frames(original, split)


def _targets(split: SplitInstance) -> list[str]:
    first = split.original_transfer_syntax
    if not is_native(first):
        first = split.frames_transfer_syntax
    return list(dict.fromkeys([first, EXPLICIT_VR_LITTLE_ENDIAN]))


def _join(split: SplitInstance, target: str) -> Dataset:
    data = join_instance(
        split.header,
        split.frames,
        split.frames_transfer_syntax,
        target_transfer_syntax=target,
        pixel=split.pixel,
    )
    return dcmread(BytesIO(data))


def _pixels(original: Dataset, split: SplitInstance, *, decodable: bool) -> np.ndarray | None:
    if split.pixel is None or not decodable:
        return None
    return original.pixel_array


def _changed(split: SplitInstance, target: str) -> dict[str, object]:
    """Attributes a decoder changes when compressed frames become native."""
    if split.pixel is None or not is_native(target):
        return {}
    out = decoded_description(split.pixel, split.frames_transfer_syntax)
    changed: dict[str, object] = {}
    if out.photometric_interpretation != split.pixel.photometric_interpretation:
        changed["PhotometricInterpretation"] = out.photometric_interpretation
    if out.planar_configuration != split.pixel.planar_configuration:
        changed["PlanarConfiguration"] = out.planar_configuration
    return changed


def _check_undecodable(split: SplitInstance, target: str) -> None:
    with pytest.raises(DicomError) as caught:
        _join(split, target)
    assert caught.value.code == "undecodable"


def _frames_of(ds: Dataset) -> list[bytes]:
    from pydicom.encaps import generate_frames

    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1))))


def _check_native_frames(original: Dataset, split: SplitInstance) -> None:
    """HTJ2K wherever it holds the frames losslessly, decoding to the original bytes."""
    assert split.pixel is not None
    expected = native_frames(original)
    clean = all(fits_bits_stored(frame, split.pixel) for frame in expected)
    if htj2k_encodable(split.pixel) and clean:
        assert split.frames_transfer_syntax == HTJ2K_LOSSLESS
        assert [decode_htj2k(frame, split.pixel) for frame in split.frames] == expected
    else:
        assert split.frames_transfer_syntax == EXPLICIT_VR_LITTLE_ENDIAN
        assert list(split.frames) == expected


def test_every_kind_of_file_is_covered() -> None:
    names = set(sample_names())
    covered = {name for name in names if name not in REFUSED}
    syntaxes = set()
    for name in covered:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(BytesIO(sample_bytes(name)), force=True, stop_before_pixels=True)
        syntaxes.add(str(ds.file_meta.get("TransferSyntaxUID", "")))
    assert len(covered) >= 130
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    } <= syntaxes
