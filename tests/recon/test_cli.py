from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tests.recon.helpers import fastmri_file
from voxelhub.recon import cli, readers
from voxelhub.recon.cli import parse_settings, parse_slices, recon_command
from voxelhub.recon.errors import ReconError
from voxelhub.recon.io_ismrmrd import write_ismrmrd
from voxelhub.recon.model import KSpace, Reconstruction
from voxelhub.recon.phantom import PhantomAcquisition

app = typer.Typer()
app.command("recon")(recon_command)
app.command("other")(lambda: None)  # two commands, so "recon" is a subcommand as in voxelhub
runner = CliRunner()


def test_writes_images_and_settings(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    out = tmp_path / "out.h5"
    result = runner.invoke(app, ["recon", str(source), "--method", "grappa", "--output", str(out),
                                 "--set", "kernel=3,2", "--slices", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        dataset = handle["reconstruction"]
        assert dataset.shape == (1, 64, 48) and dataset.dtype == np.float32
        assert dataset.attrs["method"] == "grappa"
        assert list(dataset.attrs["kernel"]) == [3, 2]
        assert dataset.attrs["regularization"] > 0
        assert json.loads(dataset.attrs["settings"])["kernel"] == [3, 2]
        assert dataset.attrs["acceleration"] == 2
        assert dataset.attrs["seconds_per_slice"] > 0


def test_ismrmrd_input_zero_filled(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    write_ismrmrd(tmp_path / "meas.h5", tiny.kspace)
    out = tmp_path / "zf.h5"
    result = runner.invoke(app, ["recon", str(tmp_path / "meas.h5"), "-o", str(out),
                                 "--method", "zero-filled"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        assert handle["reconstruction"].shape == (2, 64, 48)


def test_archive_gets_a_group_per_file_and_reports_junk(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(source, "a/in.h5")
        handle.writestr("junk.bin", b"\x00" * 100)
    out = tmp_path / "out.h5"
    result = runner.invoke(app, ["recon", str(archive), "-o", str(out), "--method", "zero-filled"])
    assert result.exit_code == 1
    assert "junk.bin" in result.output and "failed" in result.output
    with h5py.File(out) as handle:
        assert handle["a_in.h5/reconstruction"].shape == (2, 64, 48)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--method", "sense"], "unknown reconstruction method 'sense'"),
        (["--set", "kernel"], "expected KEY=VALUE"),
        (["--set", "lamda=1"], "does not take"),
        (["--slices", "7"], "selects nothing"),
    ],
)
def test_bad_options_exit_2(
    arguments: list[str], message: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    out = tmp_path / "out.h5"
    result = runner.invoke(app, ["recon", str(source), "-o", str(out), *arguments])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_bad_input_exits_2(tmp_path: Path) -> None:
    source = tmp_path / "corrupt.h5"
    source.write_bytes(b"garbage" * 50)
    result = runner.invoke(app, ["recon", str(source), "-o", str(tmp_path / "out.h5")])
    assert result.exit_code == 2
    assert "not a readable HDF5 file" in " ".join(result.output.split())


def test_option_parsers() -> None:
    assert parse_slices(":2", 5) == [0, 1]
    assert parse_settings(['mode="fast"', "flag=true"]) == {"mode": "fast", "flag": True}
    with pytest.raises(ReconError):
        parse_slices("a:b", 5)


def test_without_torch_grappa_still_runs_and_raki_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from voxelhub.recon.io_fastmri import write_fastmri\n"
        "from voxelhub.recon.phantom import PhantomSpec, simulate\n"
        "spec = PhantomSpec(readout=64, phase_encode=48, coils=4, acceleration=2, acs_lines=16)\n"
        "write_fastmri(sys.argv[1], simulate(spec).kspace)\n"
        "from voxelhub.cli import app\n"
        "sys.argv = ['voxelhub', 'recon', sys.argv[1], '--method', sys.argv[2],\n"
        "            '--output', sys.argv[3]]\n"
        "app()\n"
    )
    raw = tmp_path / "raw.h5"
    for method, code in (("grappa", 0), ("raki", 2)):
        out = tmp_path / f"{method}.h5"
        done = subprocess.run(
            [sys.executable, "-c", script, str(raw), method, str(out)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert out.exists() == (code == 0)
    assert "pip install 'voxelhub[ai]'" in " ".join((done.stdout + done.stderr).split())


def test_output_that_is_the_input_is_refused_and_the_input_kept(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    before = source.read_bytes()
    result = runner.invoke(app, ["recon", str(source), "-o", str(tmp_path / "." / "in.h5")])
    assert result.exit_code == 2
    assert "is the input" in " ".join(result.output.split())
    assert source.read_bytes() == before


@pytest.mark.parametrize("where", ["missing/out.h5", "."])
def test_unwritable_output_is_a_clear_error(
    where: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    result = runner.invoke(app, ["recon", str(source), "-o", str(tmp_path / where)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "cannot write" in " ".join(result.output.split())


def test_archive_members_whose_group_names_collide_all_get_written(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(source, "a b.h5")
        handle.write(source, "a_b.h5")
        handle.write(source, "c.h5")
    out = tmp_path / "out.h5"
    result = runner.invoke(app, ["recon", str(archive), "-o", str(out), "--method", "zero-filled"])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        assert len(handle) == 3
        names = sorted(handle)
        assert all(handle[name]["reconstruction"].shape == (2, 64, 48) for name in names)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("kernel=abc", "kernel"),
        ("kernel=5", "kernel"),
        ("kernel=5,2,3", "kernel"),
        ("regularization=abc", "regularization"),
    ],
)
def test_setting_of_the_wrong_type_is_a_clear_error(
    setting: str, message: str, tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    result = runner.invoke(app, ["recon", str(source), "-o", str(tmp_path / "o.h5"),
                                 "--set", setting])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output


def _batch(tmp_path: Path, source: Path, count: int = 3) -> Path:
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for index in range(count):
            handle.write(source, f"scan{index}.h5")
    return archive


def _others(tmp_path: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p not in keep)


def test_existing_output_is_kept_when_every_input_fails(tmp_path: Path) -> None:
    source = tmp_path / "corrupt.h5"
    source.write_bytes(b"garbage" * 50)
    out = tmp_path / "out.h5"
    out.write_bytes(b"the results of yesterday")
    result = runner.invoke(app, ["recon", str(source), "-o", str(out)])
    assert result.exit_code == 2
    assert out.read_bytes() == b"the results of yesterday"
    assert _others(tmp_path, source, out) == []


def test_existing_output_is_replaced_when_a_reconstruction_succeeds(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    out = tmp_path / "out.h5"
    out.write_bytes(b"the results of yesterday")
    result = runner.invoke(app, ["recon", str(source), "-o", str(out), "--method", "zero-filled"])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        assert handle["reconstruction"].shape == (2, 64, 48)
    assert _others(tmp_path, source, out) == []


def test_ctrl_c_keeps_the_existing_output_and_leaves_no_temporary_file(
    tiny: PhantomAcquisition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    archive = _batch(tmp_path, source)
    out = tmp_path / "out.h5"
    out.write_bytes(b"the results of yesterday")
    calls: list[str] = []
    original = cli.reconstruct

    def interrupted(kspace: KSpace, method: str, **settings: Any) -> Reconstruction:
        calls.append(kspace.source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(kspace, method, **settings)

    monkeypatch.setattr(cli, "reconstruct", interrupted)
    result = runner.invoke(app, ["recon", str(archive), "-o", str(out), "--method", "zero-filled"])
    assert result.exit_code != 0
    assert len(calls) == 2  # the batch stopped at once
    assert out.read_bytes() == b"the results of yesterday"
    assert _others(tmp_path, source, archive, out) == []


@pytest.mark.parametrize("error", [RuntimeError("CUDA out of memory"), IndexError("bug")])
def test_unexpected_error_fails_its_file_and_the_batch_goes_on(
    error: Exception,
    tiny: PhantomAcquisition,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    archive = _batch(tmp_path, source)
    original = cli.reconstruct

    def flaky(kspace: KSpace, method: str, **settings: Any) -> Reconstruction:
        if kspace.source.endswith("scan1.h5"):
            raise error
        return original(kspace, method, **settings)

    monkeypatch.setattr(cli, "reconstruct", flaky)
    out = tmp_path / "out.h5"
    with caplog.at_level(logging.DEBUG, logger="voxelhub.recon.cli"):
        result = runner.invoke(
            app, ["recon", str(archive), "-o", str(out), "--method", "zero-filled"]
        )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"scan1.h5: {type(error).__name__}: {error}" in text
    assert any(record.exc_info and record.exc_info[1] is error for record in caplog.records)
    with h5py.File(out) as handle:
        assert sorted(handle) == ["scan0.h5", "scan2.h5"]


def test_unexpected_error_while_reading_fails_only_that_file(
    tiny: PhantomAcquisition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = fastmri_file(tmp_path / "in.h5", tiny.kspace)
    archive = _batch(tmp_path, source)
    original = readers.read_fastmri
    seen: list[Path] = []

    def flaky(path: Path, **options: Any) -> KSpace:
        seen.append(path)
        if len(seen) == 2:
            raise MemoryError("cannot allocate 80 GiB")
        return original(path, **options)

    monkeypatch.setattr(readers, "read_fastmri", flaky)
    out = tmp_path / "out.h5"
    result = runner.invoke(app, ["recon", str(archive), "-o", str(out), "--method", "zero-filled"])
    assert result.exit_code == 1, result.output
    assert "MemoryError: cannot allocate 80 GiB" in " ".join(result.output.split())
    with h5py.File(out) as handle:
        assert sorted(handle) == ["scan0.h5", "scan2.h5"]


def _without_acs(path: Path, kspace: KSpace) -> Path:
    fastmri_file(path, kspace)
    with h5py.File(path, "r+") as handle:
        mask = np.zeros(handle["kspace"].shape[-1], bool)
        mask[::2] = True
        handle["kspace"][...] = handle["kspace"][()] * mask
        handle["mask"][...] = mask
    return path


def test_zero_filled_needs_no_acs_block(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    source = _without_acs(tmp_path / "noacs.h5", tiny.kspace)
    out = tmp_path / "zf.h5"
    result = runner.invoke(app, ["recon", str(source), "-o", str(out), "--method", "zero-filled"])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as handle:
        assert handle["reconstruction"].shape == (2, 64, 48)
        assert handle["reconstruction"].attrs["acs_lines"] == 0
        assert handle["reconstruction"].attrs["acceleration"] == 2


def test_grappa_still_refuses_data_without_an_acs_block(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    source = _without_acs(tmp_path / "noacs.h5", tiny.kspace)
    out = tmp_path / "g.h5"
    result = runner.invoke(app, ["recon", str(source), "-o", str(out), "--method", "grappa"])
    assert result.exit_code == 2
    assert "no ACS block" in " ".join(result.output.split())
    assert not out.exists()
