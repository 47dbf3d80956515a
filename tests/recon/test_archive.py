from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.recon.helpers import fastmri_file
from voxelhub.recon.archive import ArchiveLimits, read_archive, read_inputs
from voxelhub.recon.errors import ReconError
from voxelhub.recon.io_ismrmrd import write_ismrmrd
from voxelhub.recon.phantom import PhantomAcquisition


@pytest.fixture
def files(tiny: PhantomAcquisition, tmp_path: Path) -> dict[str, bytes]:
    fastmri_file(tmp_path / "a.h5", tiny.kspace)
    write_ismrmrd(tmp_path / "b.h5", tiny.kspace)
    return {
        "scans/a.h5": (tmp_path / "a.h5").read_bytes(),
        "notes.txt": b"not k-space",
        "scans/b.h5": (tmp_path / "b.h5").read_bytes(),
    }


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def _tar(path: Path, members: dict[str, bytes], *, link: bool = False) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        if link:
            info = tarfile.TarInfo("evil-link")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return path


def test_zip_with_junk_reads_the_rest(files: dict[str, bytes], tmp_path: Path) -> None:
    results = {r.name: r for r in read_archive(_zip(tmp_path / "batch.zip", files))}
    assert results["scans/a.h5"].kspace is not None
    assert results["scans/b.h5"].kspace is not None
    assert results["scans/b.h5"].kspace.header["format"] == "ismrmrd"
    assert results["notes.txt"].kspace is None
    assert "notes.txt is not a readable HDF5 file" in str(results["notes.txt"].error)


def test_tar_with_unsafe_members(files: dict[str, bytes], tmp_path: Path) -> None:
    members = {**files, "../escape.h5": files["scans/a.h5"]}
    results = {r.name: r for r in read_archive(_tar(tmp_path / "b.tgz", members, link=True))}
    assert results["scans/a.h5"].kspace is not None
    assert "unsafe path" in str(results["../escape.h5"].error)
    assert "not a regular file" in str(results["evil-link"].error)
    assert not (tmp_path / "escape.h5").exists()


def test_size_cap_skips_large_members(files: dict[str, bytes], tmp_path: Path) -> None:
    limits = ArchiveLimits(max_member_bytes=1000)
    results = list(read_archive(_zip(tmp_path / "c.zip", files), limits=limits))
    assert [r.name for r in results if r.kspace is not None] == []
    assert "larger than the 1000 bytes allowed" in str(results[0].error)


def test_member_count_cap(files: dict[str, bytes], tmp_path: Path) -> None:
    results = list(
        read_archive(_zip(tmp_path / "d.zip", files), limits=ArchiveLimits(max_members=1))
    )
    assert [r.kspace is not None for r in results] == [True, False]
    assert "archive limits reached" in str(results[1].error)


def test_damaged_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.tar"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(ReconError):
        list(read_archive(path))


def test_read_inputs_takes_a_plain_file(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    [result] = read_inputs(fastmri_file(tmp_path / "one.h5", tiny.kspace))
    assert result.name == "one.h5" and result.kspace is not None
    [missing] = read_inputs(tmp_path / "nope.h5")
    assert "no such file" in str(missing.error)


def test_member_k_space_names_the_archive_member_as_its_source(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    results = {r.name: r for r in read_archive(_zip(tmp_path / "batch.zip", files))}
    kspace = results["scans/a.h5"].kspace
    assert kspace is not None
    assert kspace.source == "batch.zip/scans/a.h5"  # not the deleted temporary copy
