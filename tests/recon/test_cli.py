from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from tests.recon.helpers import fastmri_file
from voxelhub.recon.cli import parse_settings, parse_slices, recon_command
from voxelhub.recon.errors import ReconError
from voxelhub.recon.io_ismrmrd import write_ismrmrd
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
