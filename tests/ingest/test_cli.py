"""The upload client against a real server: folders and archives, dropped connections."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import pytest
import SimpleITK
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.dicom.helpers import ball, sampled_series
from tests.ingest.conftest import Uploader, dicom_files, shuffled_ct, zip_bytes
from voxelhub.core.db import session_scope
from voxelhub.ingest import client as client_module
from voxelhub.ingest.cli import upload_command
from voxelhub.ingest.client import ApiClient, upload_files
from voxelhub.ingest.errors import UploadClientError
from voxelhub.store.models import Instance


class FlakyNetwork:
    """Drops chosen PUT requests: before sending, or after the server took the bytes."""

    def __init__(self, *, lost_answers: set[int], refused: set[int]) -> None:
        self.lost_answers = lost_answers
        self.refused = refused
        self.puts = 0
        self.calls: list[str] = []
        self.real = client_module.urlopen

    def __call__(self, request: urllib.request.Request, *, timeout: float) -> Any:
        self.calls.append(f"{request.get_method()} {request.full_url.split('/api/v1')[-1]}")
        if request.get_method() == "PUT":
            self.puts += 1
            if self.puts in self.refused:
                raise ConnectionRefusedError("connection refused")
            if self.puts in self.lost_answers:
                with self.real(request, timeout=timeout) as response:
                    response.read()
                raise ConnectionResetError("connection reset by peer")
        return self.real(request, timeout=timeout)


def instances(database_url: str, uploader: Uploader) -> int:
    with session_scope(database_url) as db:
        statement = select(func.count()).where(Instance.archive_id == uploader.archive_id)
        return db.scalar(statement) or 0


def _inputs(tmp_path: Path) -> list[Path]:
    tmp_path = tmp_path / "in"
    folder = tmp_path / "exam"
    for name, data in dicom_files(shuffled_ct(slices=4, size=64), folder="CT").items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    archive = tmp_path / "other.zip"
    archive.write_bytes(zip_bytes(dicom_files(shuffled_ct(slices=3, size=32, seed=3))))
    image = tmp_path / "mask.nii.gz"
    SimpleITK.WriteImage(SimpleITK.GetImageFromArray(np.ones((3, 4, 5), np.uint8)), str(image))
    return [folder, archive, image]


def test_upload_resumes_after_dropped_connections(
    tmp_path: Path,
    upload_server: str,
    uploader: Uploader,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = FlakyNetwork(lost_answers={3, 9}, refused={6})
    monkeypatch.setattr(client_module, "urlopen", network)
    seen: list[int] = []
    paths = _inputs(tmp_path)
    report = upload_files(
        paths, uploader.archive_name, server=upload_server,
        token=uploader.account.token, chunk_size=4096,
        client=ApiClient(upload_server, uploader.account.token, backoff=0.01),
        progress=lambda name, sent, total: seen.append(sent),
    )  # fmt: skip
    assert report["state"] == "done", report
    assert report["counts"] == {"stored": 8, "series_converted": 2}
    assert {f["path"].split("/")[0] for f in report["files"]} == {"exam", "other.zip",
                                                                  "mask.nii.gz"}  # fmt: skip
    assert instances(database_url, uploader) == 7
    # After each drop the client asked how far the file got before going on.
    assert network.puts > 9
    assert sum(1 for call in network.calls if call.startswith("GET /uploads/")) >= 4
    assert seen[-1] == sum(p.stat().st_size for p in (tmp_path / "in").rglob("*") if p.is_file())


def test_an_interrupted_upload_is_continued_by_its_id(
    tmp_path: Path,
    upload_server: str,
    uploader: Uploader,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths = _inputs(tmp_path)
    token = uploader.account.token
    network = FlakyNetwork(lost_answers=set(), refused=set(range(4, 100)))
    monkeypatch.setattr(client_module, "urlopen", network)
    with pytest.raises(UploadClientError, match="resume=") as failure:
        upload_files(
            paths, uploader.archive_name, server=upload_server, token=token, chunk_size=4096,
            client=ApiClient(upload_server, token, retries=1, backoff=0.01),
        )  # fmt: skip
    upload_id = failure.value.message.rsplit("resume=", 1)[1]
    monkeypatch.setattr(client_module, "urlopen", network.real)
    report = upload_files(paths, uploader.archive_name, server=upload_server, token=token,
                          chunk_size=4096, resume=upload_id)  # fmt: skip
    assert report["upload_id"] == upload_id
    assert report["counts"]["stored"] == 8
    assert instances(database_url, uploader) == 7


def test_the_upload_command_prints_the_report(
    tmp_path: Path, upload_server: str, uploader: Uploader
) -> None:
    app = typer.Typer()
    app.command("upload")(upload_command)
    app.command("noop")(lambda: None)  # keeps `upload` a subcommand, as in voxelhub's CLI
    noise = tmp_path / "noise.bin"
    noise.write_bytes(b"\x01" * 300)
    paths = [str(p) for p in _inputs(tmp_path)]
    runner = CliRunner()
    common = ["--server", upload_server, "--token", uploader.account.token]
    ok = runner.invoke(app, ["upload", *paths, "--archive", uploader.archive_name, *common])
    assert ok.exit_code == 0, ok.output
    assert "stored" in ok.output and "converted" in ok.output
    bad = runner.invoke(app, ["upload", str(noise), "--archive", uploader.archive_name, *common])
    assert bad.exit_code == 1, bad.output
    assert "not a recognised image format" in bad.output.replace("\n", " ")
    missing = runner.invoke(app, ["upload", str(noise), "--archive", "nope", *common])
    assert missing.exit_code == 2
    assert "no archive named 'nope'" in missing.output


def _with_warnings(folder: Path) -> tuple[list[Path], str]:
    """A gantry-tilted CT (its volume is resampled) and a NIfTI whose sform and qform
    disagree (the sform places it): both are stored, each with a warning. Also the CT's
    SeriesInstanceUID."""
    cosine, sine = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
    series = sampled_series(
        ball((1.0, -2.0, 16.0), 7.0), orientation=[1, 0, 0, 0, cosine, sine],
        positions=[(-16.0, -16.0, 2.5 * k) for k in range(13)], size=32, spacing_mm=1.0,
    )  # fmt: skip
    for name, data in dicom_files(series, folder="tilted").items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    nifti = nibabel.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), None)
    nifti.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    nifti.set_sform(np.diag([0.9, 1.1, 2.5, 1.0]), code=2)
    nibabel.save(nifti, folder / "t1.nii.gz")
    return [folder / "tilted", folder / "t1.nii.gz"], str(series[0].SeriesInstanceUID)


def test_the_upload_command_prints_the_warnings_of_what_it_stored(
    tmp_path: Path, upload_server: str, uploader: Uploader
) -> None:
    app = typer.Typer()
    app.command("upload")(upload_command)
    app.command("noop")(lambda: None)
    paths, uid = _with_warnings(tmp_path)
    common = ["--server", upload_server, "--token", uploader.account.token]
    runner = CliRunner()
    arguments = ["upload", *map(str, paths), "--archive", uploader.archive_name, *common]
    done = runner.invoke(app, arguments)
    assert done.exit_code == 0, done.output  # warnings are not failures
    output = " ".join(done.output.split())
    assert "converted" in output and "rejected" not in output
    assert output.count("1 warning") == 2  # flagged in the files and in the series table
    warnings = output.split("Warnings (stored, but worth knowing):", 1)[1]
    assert "warning t1.nii.gz: the sform (code 2, aligned) and the qform (code 1" in warnings
    tilt = "the slices were resampled to correct a gantry tilt of 20.0 degrees"
    assert f"warning series {uid}: {tilt}" in warnings


class Interrupted(FlakyNetwork):
    """Ctrl-C while the chosen PUT request is being sent."""

    def __call__(self, request: urllib.request.Request, *, timeout: float) -> Any:
        if request.get_method() == "PUT" and self.puts + 1 in self.refused:
            raise KeyboardInterrupt
        return super().__call__(request, timeout=timeout)


def test_an_upload_interrupted_with_ctrl_c_names_the_id_to_resume(
    tmp_path: Path, upload_server: str, uploader: Uploader, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    app = typer.Typer()
    app.command("upload")(upload_command)
    app.command("noop")(lambda: None)
    paths = [str(p) for p in _inputs(tmp_path)]
    common = ["--server", upload_server, "--token", uploader.account.token, "--chunk-mb", "1"]
    network = Interrupted(lost_answers=set(), refused={4})
    monkeypatch.setattr(client_module, "urlopen", network)
    runner = CliRunner()
    stopped = runner.invoke(app, ["upload", *paths, "--archive", uploader.archive_name, *common])
    assert stopped.exit_code == 130, stopped.output
    output = " ".join(stopped.output.split())
    assert "--resume " in output, output
    upload_id = output.rsplit("--resume ", 1)[1].split()[0]
    monkeypatch.setattr(client_module, "urlopen", network.real)
    resumed = runner.invoke(app, ["upload", *paths, "--archive", uploader.archive_name, *common,
                                  "--resume", upload_id])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert instances(database_url, uploader) == 7
