"""The outbox: one complete folder per series, never a half-written one."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxelhub.recon.errors import ReconError
from voxelhub.recon.outbox import write_series

UID = "1.2.826.0.1.3680043.8.498.1"


def _files(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir()
    files = [folder / f"{i:04d}.dcm" for i in range(count)]
    for index, path in enumerate(files):
        path.write_bytes(bytes([index]) * 100)
    return files


def test_series_lands_in_its_own_folder(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox" / "mr"
    folder = write_series(outbox, UID, _files(tmp_path / "src"))
    assert folder == outbox / UID
    assert sorted(p.name for p in folder.iterdir()) == ["0000.dcm", "0001.dcm", "0002.dcm"]
    assert (folder / "0002.dcm").read_bytes() == bytes([2]) * 100
    assert [p.name for p in outbox.iterdir()] == [UID]  # no staging folder left


def test_writing_again_keeps_the_first_copy(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    write_series(outbox, UID, _files(tmp_path / "a"))
    write_series(outbox, UID, _files(tmp_path / "b", count=1))
    assert len(list((outbox / UID).iterdir())) == 3
    assert [p.name for p in outbox.iterdir()] == [UID]


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    files = [*_files(tmp_path / "src"), tmp_path / "src" / "missing.dcm"]
    with pytest.raises(ReconError, match="failed"):
        write_series(outbox, UID, files)
    assert list(outbox.iterdir()) == []


def test_not_a_uid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReconError, match="not a DICOM UID"):
        write_series(tmp_path, "../etc", [])


def test_unwritable_outbox_says_which_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReconError, match="VOXELHUB_RECON_OUTBOX"):
        write_series(blocker / "outbox", UID, [])
