"""Shared test helpers: reading pydicom's test files and comparing datasets element by element."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import DATA_ROOT, DataTypes, external_data_sources
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.tag import Tag
from pydicom.uid import UID, generate_uid

from voxelhub.dicom.byteorder import WORD_BYTES
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import AIR, BONE, RESCALE_INTERCEPT, ct_phantom
from voxelhub.dicom.volume import Geometry

# Pixel data and the tags that only describe its encapsulation are stored as frames.
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009, 0x7FE00001, 0x7FE00002})
# File meta elements a writer sets for itself.
WRITER_META_TAGS = frozenset(
    {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
)


def sample_names() -> list[str]:
    """Names of every .dcm file of pydicom and of the installed pydicom-data package.

    The same files `get_testdata_files("*.dcm")` finds, listed without its attempts to
    download the rest of pydicom-data (tests never use the network).
    """
    names = {path.name for path in Path(DATA_ROOT, "test_files").glob("*.dcm")}
    for source in external_data_sources().values():
        names.update(Path(path).name for path in source.get_paths("*.dcm", DataTypes.DATASET))
    return sorted(names)


def sample_bytes(name: str) -> bytes:
    """The bytes of one test file of pydicom or pydicom-data."""
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), name
    return Path(path).read_bytes()


def with_uids(data: bytes) -> bytes:
    """`data` re-written with the UIDs a storable instance needs, filled in where missing.

    Pixel data without any image attribute (a parser test fragment) is dropped.
    """
    ds = dcmread(BytesIO(data), force=True)
    if "PixelData" in ds and "Rows" not in ds:
        del ds.PixelData
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not ds.get(keyword):
            setattr(ds, keyword, generate_uid())
    if not ds.get("SOPClassUID"):
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    implicit, little = ds.original_encoding
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=little)
    return buffer.getvalue()


def assert_same_elements(
    original: Dataset,
    joined: Dataset,
    *,
    changed: dict[str, Any] | None = None,
) -> None:
    """Every non-pixel element of `original` is in `joined` with the same VR and value.

    OW/OL/OF/OD/OV values are compared as numbers, so a big endian original equals its
    little endian copy. `changed` gives the expected value of attributes meant to change.
    """
    endianness = (
        original.original_encoding[1] is not False,
        joined.original_encoding[1] is not False,
    )
    _compare(original, joined, changed=changed or {}, little=endianness, path="")


def _compare(
    original: Dataset,
    joined: Dataset,
    *,
    changed: dict[str, Any],
    little: tuple[bool, bool],
    path: str,
) -> None:
    for tag in sorted(set(original.keys()) | set(joined.keys())):
        if tag in PIXEL_TAGS or tag.group == 0x0002 or tag.element == 0x0000:
            continue  # pydicom writes no group lengths (retired, PS3.5 7.2)
        where = f"{path}({tag.group:04X},{tag.element:04X})"
        keyword = joined[tag].keyword if tag in joined else ""
        if keyword in changed and not path:
            assert joined[tag].value == changed[keyword], where
            continue
        assert tag in original, f"{where} was added"
        assert tag in joined, f"{where} was lost"
        a, b = original[tag], joined[tag]
        assert a.VR == b.VR, f"{where}: VR {a.VR} became {b.VR}"
        if a.VR == "SQ":
            assert len(a.value) == len(b.value), f"{where}: item count"
            for index, (item_a, item_b) in enumerate(zip(a.value, b.value, strict=True)):
                _compare(item_a, item_b, changed={}, little=little, path=f"{where}/{index}/")
        else:
            left = _comparable(a.VR, a.value, little[0])
            right = _comparable(b.VR, b.value, little[1])
            assert left == right, f"{where} {a.keyword}: {_short(a.value)} became {_short(b.value)}"


def assert_same_meta(original: Dataset, joined: Dataset) -> None:
    """The file meta elements of `original` that no writer changes are kept.

    pydicom sets the media storage UIDs to the dataset's SOP Class and Instance UIDs.
    """
    assert joined.file_meta.MediaStorageSOPClassUID == joined.SOPClassUID
    assert joined.file_meta.MediaStorageSOPInstanceUID == joined.SOPInstanceUID
    for tag in list(original.file_meta.keys()):
        if tag not in WRITER_META_TAGS:
            assert original.file_meta[tag].value == joined.file_meta[tag].value, tag


def _comparable(vr: str, value: Any, little: bool) -> Any:
    if vr in WORD_BYTES and value:
        order = "<" if little else ">"
        kind = "f" if vr in ("OF", "OD") else "u"
        dtype = np.dtype(f"{order}{kind}{WORD_BYTES[vr]}")
        whole = len(value) - len(value) % dtype.itemsize
        return np.frombuffer(value[:whole], dtype=dtype).tolist()
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:120]}..."


def with_empty_values() -> bytes:
    """A CT slice whose multi-valued attributes hold empty values, as some modalities
    write them: `0.5\\` and `ORIGINAL\\\\AXIAL`."""
    ds = ct_phantom(slices=1, size=8)[0]
    for tag, vr, raw in [
        (0x00080008, "CS", b"ORIGINAL\\\\AXIAL "),
        (0x00080090, "PN", b"Doe^Jane\\\\Roe^R "),
        (0x00281050, "DS", b"40\\ "),
        (0x00281051, "DS", b"\\400"),
        (0x00200037, "DS", b"1\\0\\0\\\\1\\0 "),
    ]:
        ds[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
    return write_part10(ds)


def enhanced(series: list[Dataset], *, sop_class_uid: str | None = None) -> Dataset:
    """`series` as one Legacy Converted Enhanced CT image, written and read back.

    highdicom lists the frames from the highest slice down, so frame order is not
    position order. `sop_class_uid` relabels it (e.g. Enhanced MR): the functional
    groups that place the frames are the same.
    """
    import highdicom as hd

    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        series, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1,
    )  # fmt: skip
    if sop_class_uid is not None:
        image.SOPClassUID = image.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    return dcmread(BytesIO(write_part10(image)))


def assert_same_volume(
    got: tuple[npt.NDArray[Any], Geometry], expected: tuple[npt.NDArray[Any], Geometry]
) -> None:
    """Two `series_to_volume` results hold the same voxels on the same grid."""
    (volume, geometry), (expected_volume, expected_geometry) = got, expected
    assert np.array_equal(volume, expected_volume)
    assert geometry.origin == pytest.approx(expected_geometry.origin)
    assert geometry.spacing == pytest.approx(expected_geometry.spacing)
    assert geometry.direction == pytest.approx(expected_geometry.direction)


def sampled_series(
    inside: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.bool_]],
    *,
    orientation: Sequence[float],
    positions: Sequence[Sequence[float]],
    size: int,
    spacing_mm: float,
) -> list[Dataset]:
    """A CT series whose slices sample an object given in patient space (LPS, mm).

    `inside` takes points (..., 3) and says which lie in the object; each pixel holds
    BONE HU where its centre does, AIR elsewhere. Slice k lies at `positions[k]` with the
    row and column cosines of `orientation`, as a scanner with any gantry tilt places it.
    """
    series = ct_phantom(slices=len(positions), size=size, spacing_mm=spacing_mm)
    row, column = np.array(orientation[:3], float), np.array(orientation[3:], float)
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float64) * spacing_mm
    for ds, position in zip(series, positions, strict=True):
        points = np.asarray(position, float) + columns[..., None] * row + rows[..., None] * column
        hu = np.where(inside(points), BONE, AIR)
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.PixelData = (hu - RESCALE_INTERCEPT).astype(np.uint16).tobytes()
    return series


def ball(
    centre: Sequence[float], radius_mm: float
) -> Callable[[npt.NDArray[np.float64]], npt.NDArray[np.bool_]]:
    """The points of a ball in patient space, for `sampled_series`."""

    def inside(points: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.linalg.norm(points - np.asarray(centre, float), axis=-1) <= radius_mm

    return inside


def voxel_centres(volume: npt.NDArray[Any], geometry: Geometry) -> npt.NDArray[np.float64]:
    """The patient-space centre (LPS, mm) of every voxel of a (slice, row, column) volume."""
    k, i, j = np.indices(volume.shape).astype(np.float64)
    index = np.stack([j, i, k], axis=-1) * np.asarray(geometry.spacing)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    return np.asarray(geometry.origin) + index @ direction.T
