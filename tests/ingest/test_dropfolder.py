"""The drop folder: only settled entries are taken; they end in done/ or failed/."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from sqlalchemy import func, select

from tests.ingest.conftest import Uploader, dicom_files, shuffled_ct, zip_bytes
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.ingest.dropfolder import DropFolder, open_for_writing
from voxelhub.store.models import Instance

SETTLE = 0.4


def instances(database_url: str, uploader: Uploader) -> int:
    with session_scope(database_url) as db:
        statement = select(func.count()).where(Instance.archive_id == uploader.archive_id)
        return db.scalar(statement) or 0


def test_a_file_written_slowly_is_taken_once_settled(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, database_url: str
) -> None:
    drop = tmp_path / "drop"
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=SETTLE)
    data = zip_bytes(dicom_files(shuffled_ct(slices=4, size=32)))
    target = drop / "study.zip"
    with target.open("wb") as out:
        for piece in range(4):  # a modality writing in bursts
            out.write(data[piece * len(data) // 4 : (piece + 1) * len(data) // 4])
            out.flush()
            assert folder.run_once() == []
            time.sleep(SETTLE / 3)
    assert folder.run_once() == []  # complete, but not yet still for long enough
    assert target.exists() and instances(database_url, uploader) == 0

    time.sleep(SETTLE + 0.1)
    [result] = folder.run_once()
    assert result.outcome == "done", result
    assert result.report is not None and result.report.counts["stored"] == 4
    assert not target.exists()
    assert (drop / "done" / "study.zip").read_bytes() == data
    assert instances(database_url, uploader) == 4


def test_bad_entries_go_to_failed_with_the_reason(
    tmp_path: Path, runtime: Runtime, uploader: Uploader
) -> None:
    drop = tmp_path / "drop"
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=0)
    (drop / "noise.bin").write_bytes(os.urandom(2048))
    (drop / ".hidden.dcm").write_bytes(b"being written")
    (drop / "scan.dcm.part").write_bytes(b"being written")
    assert folder.run_once() == []
    [result] = folder.run_once()
    assert result.outcome == "failed"
    error = (drop / "failed" / "noise.bin.error.txt").read_text()
    assert error.startswith("noise.bin: the content is not a recognised image format")
    assert (drop / "failed" / "noise.bin").exists()
    assert (drop / ".hidden.dcm").exists() and (drop / "scan.dcm.part").exists()


def test_a_folder_and_a_claim_left_by_a_crash(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, database_url: str
) -> None:
    drop = tmp_path / "drop"
    series = shuffled_ct(slices=3, size=32)
    for name, data in dicom_files(series, folder="CT1").items():
        path = drop / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # A previous run claimed this entry and died before it was done.
    crashed = drop / "processing" / "again.zip"
    crashed.parent.mkdir(parents=True)
    crashed.write_bytes(zip_bytes(dicom_files(series)))

    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=0.05)
    stop = threading.Event()
    worker = threading.Thread(target=folder.run_forever, args=(stop,), daemon=True)
    worker.start()
    deadline = time.monotonic() + 20
    while not (drop / "done" / "CT1").exists() or not (drop / "done" / "again.zip").exists():
        assert time.monotonic() < deadline, sorted(p.name for p in drop.rglob("*"))
        time.sleep(0.05)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert sorted(p.name for p in (drop / "done" / "CT1").iterdir()) == ["0001.dcm", "0002.dcm",
                                                                        "0003.dcm"]  # fmt: skip
    assert instances(database_url, uploader) == 3
    assert list((drop / "failed").iterdir()) == []


def test_a_writer_pausing_longer_than_the_settle_time_is_waited_for(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, database_url: str
) -> None:
    drop = tmp_path / "drop"
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=SETTLE)
    stop = threading.Event()
    worker = threading.Thread(target=folder.run_forever, args=(stop,), daemon=True)
    worker.start()
    data = zip_bytes(dicom_files(shuffled_ct(slices=4, size=32)))
    try:
        with (drop / "study.zip").open("wb") as out:  # an SMB write that stalls halfway
            out.write(data[: len(data) // 2])
            out.flush()
            time.sleep(SETTLE * 5)
            out.write(data[len(data) // 2 :])
        deadline = time.monotonic() + 20
        while not (drop / "done" / "study.zip").exists():
            assert time.monotonic() < deadline, sorted(p.name for p in drop.rglob("*"))
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=10)
    assert (drop / "done" / "study.zip").read_bytes() == data
    assert list((drop / "failed").iterdir()) == []
    assert instances(database_url, uploader) == 4


def test_failures_of_the_same_name_in_one_second_are_all_kept(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "strftime", lambda *_: "20250101T000000")  # all in one second
    drop = tmp_path / "drop"
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=0)
    contents = [os.urandom(2048) for _ in range(3)]
    for content in contents:
        (drop / "noise.bin").write_bytes(content)
        assert folder.run_once() == []
        [result] = folder.run_once()
        assert result.outcome == "failed"
    failed = sorted((drop / "failed").iterdir())
    kept = [p for p in failed if not p.name.endswith(".error.txt")]
    assert sorted(p.read_bytes() for p in kept) == sorted(contents)
    assert len(failed) == 6
    for path in kept:
        reason = (path.parent / f"{path.name}.error.txt").read_text()
        assert "not a recognised image format" in reason


def _hdf5_kspace(tmp_path: Path) -> bytes:
    path = tmp_path / "kspace.h5"
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as handle:  # as a fastMRI file: (slices, coils, ky, kx)
        shape = (2, 4, 64, 48)
        handle["kspace"] = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(
            np.complex64
        )
    return path.read_bytes()


def _invalid(kind: str, tmp_path: Path) -> tuple[str, bytes]:
    """A file name and content that no more bytes will make readable."""
    files = dicom_files(shuffled_ct(slices=2, size=32))
    first = next(iter(files.values()))
    if kind == "dicom":
        return "cut.dcm", first[: len(first) // 2]
    if kind == "zip":
        data = zip_bytes(files)
        return "cut.zip", data[: len(data) // 2]
    if kind == "hdf5":
        data = _hdf5_kspace(tmp_path)
        return "cut.h5", data[: len(data) // 2]
    # A DICOM preamble and prefix, then garbage where the data elements should be.
    return "garbage.dcm", bytes(128) + b"DICM" + bytes(range(256)) * 4


@pytest.mark.parametrize("kind", ["dicom", "zip", "hdf5", "garbage"])
def test_a_complete_but_invalid_file_goes_to_failed_once_settled(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, kind: str
) -> None:
    drop = tmp_path / "drop"
    # The default give-up time (10 minutes) must not apply: nothing is writing the file.
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=SETTLE)
    name, data = _invalid(kind, tmp_path)
    (drop / name).write_bytes(data)
    assert folder.run_once() == []
    time.sleep(SETTLE + 0.1)
    [result] = folder.run_once()
    assert result.outcome == "failed", result
    assert not (drop / name).exists()
    assert (drop / "failed" / name).read_bytes() == data
    assert (drop / "failed" / f"{name}.error.txt").read_text().startswith(f"{name}: ")


@pytest.mark.parametrize("kind", ["dicom", "zip", "hdf5"])
def test_a_cut_off_file_held_open_by_a_stalled_writer_waits_for_the_give_up_time(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, kind: str
) -> None:
    drop = tmp_path / "drop"
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=0,
                        retry_seconds=0.3, give_up_seconds=1.5)  # fmt: skip
    name, data = _invalid(kind, tmp_path)
    with (drop / name).open("wb") as writer:  # a writer that stalls and never finishes
        writer.write(data)
        writer.flush()
        assert folder.run_once() == []
        [first] = folder.run_once()
        assert first.outcome == "incomplete", first
        assert (drop / name).exists() and list((drop / "failed").iterdir()) == []
        assert folder.run_once() == []  # unchanged and not due again yet

        outcomes = [first.outcome]
        deadline = time.monotonic() + 20
        while not (drop / "failed" / name).exists():
            assert time.monotonic() < deadline, outcomes
            outcomes += [r.outcome for r in folder.run_once()]
            time.sleep(0.05)
    assert set(outcomes) == {"incomplete", "failed"}
    assert outcomes.count("incomplete") >= 2  # tried again after the retry interval
    assert (drop / "failed" / name).read_bytes() == data
    assert (drop / "failed" / f"{name}.error.txt").read_text().startswith(f"{name}: ")
    assert not (drop / name).exists()


def test_a_file_growing_in_separate_writes_is_not_failed_early(
    tmp_path: Path, runtime: Runtime, uploader: Uploader, database_url: str
) -> None:
    drop = tmp_path / "drop"
    settle = 1.0  # well above the pauses below, however slow the polls are
    folder = DropFolder(drop, uploader.archive_name, runtime=runtime, settle_seconds=settle)
    data = zip_bytes(dicom_files(shuffled_ct(slices=4, size=32)))
    target = drop / "study.zip"
    results = []
    for piece in range(4):  # appended and closed each time: only its size shows the writer
        with target.open("ab") as out:
            out.write(data[piece * len(data) // 4 : (piece + 1) * len(data) // 4])
        results += folder.run_once()
        time.sleep(settle / 8)
        results += folder.run_once()
    assert results == [] and instances(database_url, uploader) == 0
    deadline = time.monotonic() + 20
    while not results:
        assert time.monotonic() < deadline
        results += folder.run_once()
        time.sleep(0.05)
    assert [r.outcome for r in results] == ["done"], results
    assert (drop / "done" / "study.zip").read_bytes() == data
    assert instances(database_url, uploader) == 4


def test_open_for_writing_sees_writers_on_this_host(tmp_path: Path) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"partial")
    assert open_for_writing([path]) is not True
    with path.open("rb"):
        assert open_for_writing([path]) is not True  # a reader is no writer
    with path.open("ab"):
        assert open_for_writing([tmp_path / "other.dcm", path]) is True
    script = "import sys, time; f = open(sys.argv[1], 'ab'); print(flush=True); time.sleep(60)"
    writer = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline()
        assert open_for_writing([path]) is True
    finally:
        writer.kill()
        writer.wait()
    # As root every process's open files can be listed: that none writes is known.
    assert open_for_writing([path]) in ((False,) if os.geteuid() == 0 else (False, None))
