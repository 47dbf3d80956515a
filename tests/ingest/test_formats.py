"""Format recognition by content, upload names and ranges, and safe unpacking."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK
import tifffile
from pydicom.filewriter import dcmwrite

from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.ingest.errors import InvalidContentRange, InvalidUploadName
from voxelhub.ingest.extract import Budget, archive_kind, extract
from voxelhub.ingest.formats import nifti, recognise
from voxelhub.ingest.limits import Limits
from voxelhub.ingest.ranges import ByteSpan, clean_name, parse_content_range


def _image() -> SimpleITK.Image:
    image = SimpleITK.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    image.SetSpacing((0.5, 0.75, 2.0))
    return image


def _bare_dicom(*, implicit: bool) -> bytes:
    ds = ct_phantom(slices=1, size=8)[0]
    del ds.file_meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


def _bigtiff(width: int, height: int) -> bytes:
    """A minimal little-endian BigTIFF: header and one directory of two LONG8 entries."""
    header = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16)
    entries = struct.pack("<HHQQ", 256, 16, 1, width) + struct.pack("<HHQQ", 257, 16, 1, height)
    return header + struct.pack("<Q", 2) + entries + struct.pack("<Q", 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ct.nii", "nifti"), ("ct.nii.gz", "nifti"), ("ct.nrrd", "nrrd"), ("ct.mha", "metaimage"),
     ("ct.mhd", "metaimage"), ("ct.tif", "tiff")],
)  # fmt: skip
def test_images_written_by_simpleitk_are_recognised(
    name: str, expected: str, tmp_path: Path
) -> None:
    image = _image() if not name.endswith(".tif") else SimpleITK.GetImageFromArray(
        np.zeros((6, 9), np.uint8))  # fmt: skip
    SimpleITK.WriteImage(image, str(tmp_path / name), useCompression=name.endswith(".gz"))
    # The content decides, not the extension.
    renamed = tmp_path / name.replace("ct.", "upload-")
    (tmp_path / name).rename(renamed)
    if name.endswith(".mhd"):
        renamed = renamed.rename(tmp_path / "upload.mhd")
    found = recognise(renamed)
    assert (found.format, found.ok, found.reason) == (expected, True, "")
    assert found.details["size"][:2] == ([5, 4] if expected != "tiff" else [9, 6])


@pytest.mark.parametrize(
    "data",
    [write_part10(ct_phantom(slices=1, size=8)[0]), _bare_dicom(implicit=True),
     _bare_dicom(implicit=False)],
    ids=["part10", "bare-implicit", "bare-explicit"],
)  # fmt: skip
def test_dicom_with_and_without_preamble(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(data)
    assert recognise(path).format == "dicom"


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"\x00" * 2000, "not a recognised image format"),
     (b"", "the file is empty"),
     (b"II*\x00" + struct.pack("<I", 10**9), "truncated TIFF"),
     (b"ObjectType = Image\nNDims = 1\nDimSize = 4\nElementType = MET_UCHAR\n"
      b"ElementDataFile = /etc/passwd\n", "outside its folder"),
     (b"ObjectType = Image\nElementDataFile = missing.raw\n", "not in the upload"),
     (b"NRRD0004\ntype: uchar\ndimension: 1\nsizes: 4\ndata file: /etc/passwd\n\n", "detached"),
     (struct.pack("<i", 348) + b"\x00" * 340 + b"ni1\x00", "pair")],
    ids=["zeros", "empty", "tiff-cut", "mhd-escape", "mhd-missing", "nrrd-detached", "nifti-pair"],
)  # fmt: skip
def test_unusable_files_say_why(data: bytes, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "upload.mhd"
    path.write_bytes(data)
    found = recognise(path)
    assert not found.ok
    assert reason in found.reason


def test_bigtiff_and_nifti2_by_magic(tmp_path: Path) -> None:
    path = tmp_path / "slide"
    path.write_bytes(_bigtiff(70_000, 50_000))
    found = recognise(path)
    assert found.ok and found.details == {"size": [70_000, 50_000], "bigtiff": True}
    assert nifti.sniff(struct.pack("<i", 540) + b"n+2\x00\r\n\x1a\n" + b"\x00" * 528)


def test_content_range_and_names() -> None:
    assert parse_content_range("bytes 0-99/100") == ByteSpan(0, 99, 100)
    assert parse_content_range("bytes */0").length == 0
    for bad in ("bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "bytes */5"):
        with pytest.raises(InvalidContentRange):
            parse_content_range(bad)
    assert clean_name("./CT//a.dcm") == "CT/a.dcm"
    for bad in ("../a", "/etc/passwd", "C:\\x", "a\\..\\..\\b", "a\x00b", "", "./"):
        with pytest.raises(InvalidUploadName):
            clean_name(bad)


def test_unpacking_stops_at_the_entry_limit(tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for index in range(5):
            out.writestr(f"f{index}.txt", b"x")
    assert archive_kind(archive, archive.read_bytes()[:512]) == "zip"
    result = extract(archive, name="many.zip", dest=tmp_path / "out",
                     budget=Budget(Limits(max_entries=3)))  # fmt: skip
    assert [m.path for m in result.members] == ["many.zip/f0.txt", "many.zip/f1.txt",
                                                "many.zip/f2.txt"]  # fmt: skip
    assert {p.reason for p in result.problems} == {
        "not extracted: the upload has more than 3 entries"}  # fmt: skip


def test_a_corrupt_zip_keeps_what_came_before(tmp_path: Path) -> None:
    archive = tmp_path / "cut.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("a.txt", b"a" * 100)
    archive.write_bytes(buffer.getvalue()[:60])
    result = extract(archive, name="cut.zip", dest=tmp_path / "out", budget=Budget(Limits()))
    assert result.members == []
    assert "truncated or corrupt" in result.problems[0].reason


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz"])
def test_a_nifti_cut_short_is_refused(name: str, tmp_path: Path) -> None:
    """ITK reads a cut NIfTI without complaint, filling the missing voxels with zeros."""
    image = SimpleITK.GetImageFromArray(np.arange(20 * 30 * 40, dtype=np.int16).reshape(20, 30, 40))
    SimpleITK.WriteImage(image, str(tmp_path / name), useCompression=name.endswith(".gz"))
    whole = (tmp_path / name).read_bytes()
    assert recognise(tmp_path / name).ok
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(whole[: len(whole) - 1000])
    found = recognise(cut)
    assert (found.format, found.ok) == ("nifti", False)
    assert "cut short" in found.reason or "truncated" in found.reason


def _pyramid(path: Path) -> None:
    """A tiled whole-slide-like BigTIFF whose lower resolutions are SubIFDs."""
    level = np.zeros((512, 512), np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(level, tile=(128, 128), subifds=2)
        writer.write(level[::2, ::2], tile=(128, 128), subfiletype=1)
        writer.write(level[::4, ::4], tile=(128, 128), subfiletype=1)


@pytest.mark.parametrize("kind", ["strips", "multipage", "pyramid"])
def test_a_tiff_cut_inside_its_pixel_data_is_refused(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "slide.tif"
    if kind == "pyramid":
        _pyramid(path)
    else:
        pages = 3 if kind == "multipage" else 1
        tifffile.imwrite(path, np.ones((pages, 300, 200), np.uint8), photometric="minisblack")
    found = recognise(path)
    assert (found.format, found.ok) == ("tiff", True)
    assert found.details["size"] == ([512, 512] if kind == "pyramid" else [200, 300])
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 100])
    found = recognise(path)
    assert (found.format, found.ok) == ("tiff", False)
    assert "truncated TIFF" in found.reason


@pytest.mark.parametrize("name", ["t1.nii", "t1.nii.gz"])
def test_nifti2_is_refused_with_a_reason_a_person_can_act_on(name: str, tmp_path: Path) -> None:
    """ITK cannot read NIfTI-2; its own message named a temporary link, not what to do."""
    nibabel.save(nibabel.Nifti2Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), tmp_path / name)
    found = recognise(tmp_path / name)
    assert (found.format, found.ok) == ("nifti", False)
    assert "save the image as NIfTI-1" in found.reason


def _placed_by_us(path: Path) -> tuple[SimpleITK.Image, dict[str, object]]:
    found = recognise(path)
    assert (found.format, found.ok) == ("nifti", True), found.reason
    return nifti.place(SimpleITK.ReadImage(str(path)), found.details), dict(found.details)


def _assert_placed_as(image: SimpleITK.Image, affine: np.ndarray) -> None:
    """Every corner voxel (and one inside) lies where the RAS `affine` puts it."""
    size = image.GetSize()[:3]
    corners = [(i, j, k) for i in (0, size[0] - 1) for j in (0, size[1] - 1)
               for k in (0, size[2] - 1)] + [(1, 2, 3)]  # fmt: skip
    for index in corners:
        lps = image.TransformIndexToPhysicalPoint((*index, *[0] * (image.GetDimension() - 3)))
        ras = nibabel.affines.apply_affine(affine, index)
        assert np.allclose(np.multiply(lps[:3], (-1, -1, 1)), ras, atol=1e-3), index


def _nifti_with(
    path: Path,
    *,
    qform: np.ndarray | None,
    sform: np.ndarray | None,
    sform_code: int = 1,
    shape: tuple[int, ...] = (4, 5, 6),
) -> Path:
    """A NIfTI-1 file written by nibabel with the given transforms (code 0 where None)."""
    image = nibabel.Nifti1Image(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), None)
    image.set_qform(qform, code=0 if qform is None else 1)
    image.set_sform(sform, code=0 if sform is None else sform_code)
    nibabel.save(image, path)
    return path


def _rotated(degrees: float, zooms: tuple[float, ...], offset: tuple[float, ...]) -> np.ndarray:
    """A RAS affine: a rotation about z, voxel sizes and an offset."""
    cosine, sine = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[cosine, -sine, 0], [sine, cosine, 0], [0, 0, 1]]) @ np.diag(zooms)
    affine[:3, 3] = offset
    return affine


QFORM = _rotated(10.0, (1.0, 1.0, 2.0), (10.0, 20.0, 30.0))
SFORM = _rotated(-25.0, (0.9, 1.1, 2.5), (-5.0, -6.0, -7.0))


@pytest.mark.parametrize("sform_code", [1, 2, 4], ids=["scanner", "aligned", "mni"])
@pytest.mark.parametrize("name", ["t1.nii", "t1.nii.gz"])
def test_a_nifti_whose_sform_and_qform_disagree_is_placed_by_its_sform_with_a_warning(
    sform_code: int, name: str, tmp_path: Path
) -> None:
    """As nibabel and FSL place it; ITK alone would take the qform for codes 2 and 4, and
    the sform's direction with the qform's voxel sizes for code 1."""
    path = _nifti_with(tmp_path / name, qform=QFORM, sform=SFORM, sform_code=sform_code)
    image, details = _placed_by_us(path)
    _assert_placed_as(image, nibabel.load(path).affine)
    assert details["transform"] == "sform"
    assert image.GetSpacing() == pytest.approx((0.9, 1.1, 2.5))
    assert details["spacing"] == pytest.approx([0.9, 1.1, 2.5])
    [warning] = details["warnings"]  # type: ignore[misc]
    assert f"the sform (code {sform_code}" in warning and "the qform (code 1" in warning
    assert "the sform was used" in warning


@pytest.mark.parametrize(
    ("qform", "sform", "transform"),
    [(QFORM, None, "qform"), (None, SFORM, "sform"), (SFORM, SFORM, "sform"),
     (np.diag([-0.8, 1.2, 3.0, 1.0]), np.diag([-0.8, 1.2, 3.0, 1.0]), "sform")],
    ids=["qform-only", "sform-only", "both-agree", "both-agree-flipped"],
)  # fmt: skip
def test_a_nifti_placed_by_one_transform_or_two_that_agree_has_no_warning(
    qform: np.ndarray | None, sform: np.ndarray | None, transform: str, tmp_path: Path
) -> None:
    path = _nifti_with(tmp_path / "t1.nii", qform=qform, sform=sform)
    image, details = _placed_by_us(path)
    _assert_placed_as(image, nibabel.load(path).affine)
    assert (details["transform"], details["warnings"]) == (transform, [])
    # What ITK reads, where it reads one transform the way nibabel does.
    itk = SimpleITK.ReadImage(str(path))
    assert itk.GetOrigin() == pytest.approx(image.GetOrigin(), abs=1e-4)
    assert itk.GetDirection() == pytest.approx(image.GetDirection(), abs=1e-5)


def test_a_nifti_with_a_sheared_sform_is_placed_by_its_qform_or_refused(tmp_path: Path) -> None:
    sheared = SFORM.copy()
    sheared[0, 1] += 0.4
    path = _nifti_with(tmp_path / "with-qform.nii", qform=QFORM, sform=sheared)
    image, details = _placed_by_us(path)
    _assert_placed_as(image, QFORM)
    assert details["transform"] == "qform"
    [warning] = details["warnings"]  # type: ignore[misc]
    assert "has shear" in warning and "the qform was used instead" in warning
    found = recognise(_nifti_with(tmp_path / "alone.nii", qform=None, sform=sheared))
    assert (found.format, found.ok) == ("nifti", False)
    assert "has shear" in found.reason and "no usable qform to use instead" in found.reason


def test_a_nifti_with_neither_transform_is_placed_as_itk_reads_it_with_a_warning(
    tmp_path: Path,
) -> None:
    path = _nifti_with(tmp_path / "bare.nii", qform=None, sform=None)
    image, details = _placed_by_us(path)
    itk = SimpleITK.ReadImage(str(path))
    assert (image.GetOrigin(), image.GetDirection()) == (itk.GetOrigin(), itk.GetDirection())
    assert details["transform"] == "none"
    assert "neither a qform nor an sform" in details["warnings"][0]  # type: ignore[index]


def test_a_4d_nifti_keeps_its_fourth_axis_and_a_big_endian_header_is_read(
    tmp_path: Path,
) -> None:
    path = _nifti_with(tmp_path / "bold.nii", qform=QFORM, sform=SFORM, shape=(4, 5, 6, 3))
    image, details = _placed_by_us(path)
    assert image.GetDimension() == 4 and image.GetSize() == (4, 5, 6, 3)
    _assert_placed_as(image, SFORM)
    assert np.array(image.GetDirection()).reshape(4, 4)[3].tolist() == [0, 0, 0, 1]
    original = nibabel.load(tmp_path / "bold.nii")
    swapped = nibabel.Nifti1Image(np.asarray(original.dataobj), None,
                                  original.header.as_byteswapped(">"))  # fmt: skip
    nibabel.save(swapped, tmp_path / "big.nii")
    assert (tmp_path / "big.nii").read_bytes()[:4] == struct.pack(">i", 348)
    assert recognise(tmp_path / "big.nii").details["warnings"] == details["warnings"]


@pytest.mark.parametrize(
    ("layout", "reason"),
    [("scalar-dataset", "without MRI k-space"), ("kspace-group", "'kspace' is an HDF5 group")],
)
def test_an_hdf5_file_of_another_layout_is_refused_saying_why(
    layout: str, reason: str, tmp_path: Path
) -> None:
    import h5py

    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as h5:
        if layout == "scalar-dataset":
            h5["dataset"] = 1
        else:
            h5.create_group("kspace")
    found = recognise(path)
    assert not found.ok
    assert reason in found.reason
