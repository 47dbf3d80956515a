import json
import shutil
from pathlib import Path

import pytest
import SimpleITK
from typer.testing import CliRunner

from tests.segment.conftest import SPLEEN_CARD, image_of
from voxelhub.cli import app
from voxelhub.segment.synthetic import SyntheticCase, dicom_series, mr_brain_case, write_series

runner = CliRunner()


def segment(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["segment", *map(str, args)])
    return result.exit_code, result.output


def test_a_dicom_series_gets_mask_volumes_seg_and_sr(
    tent_model: tuple[Path, Path], ct_series: Path, tmp_path: Path
) -> None:
    code, output = segment(
        "--model",
        tent_model[0],
        "--card",
        tent_model[1],
        ct_series,
        "--output",
        tmp_path / "out",
        "--runtime",
        "onnx",
        "--threads",
        "2",
    )
    assert code == 0, output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["mask.mha", "seg.dcm", "sr.dcm", "volumes.json"]
    volumes = json.loads((tmp_path / "out" / "volumes.json").read_text())
    assert volumes["model"]["runtime"] == "onnx"
    assert volumes["labels"][0]["name"] == "spleen" and volumes["labels"][0]["volume_ml"] > 0


def test_a_bundle_runs_on_a_nifti_file(
    spleen_bundle: Path, small_ct: SyntheticCase, tmp_path: Path
) -> None:
    path = tmp_path / "ct.nii.gz"
    SimpleITK.WriteImage(image_of(small_ct), str(path))
    code, output = segment(
        "--bundle",
        spleen_bundle,
        path,
        "--output",
        tmp_path / "out",
        "--runtime",
        "eager",
        "--mask-format",
        "nifti",
    )
    assert code == 0, output
    mask = SimpleITK.ReadImage(str(tmp_path / "out" / "mask.nii.gz"))
    assert mask.GetSize() == (32, 32, 12)
    assert not (tmp_path / "out" / "seg.dcm").exists()


def _one_line_error(code: int, output: str, message: str) -> None:
    assert code == 2
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("error:") and message in output, output


def test_wrong_modality(tent_model: tuple[Path, Path], tmp_path: Path) -> None:
    case = mr_brain_case(shape=(6, 16, 16))
    folder = write_series(
        dicom_series(case.channels["t1"], case.geometry, modality="MR", series_description="T1"),
        tmp_path / "mr",
    )
    code, output = segment(
        "--model", tent_model[0], "--card", tent_model[1], folder, "--output", tmp_path / "out"
    )
    _one_line_error(code, output, "is MR, but model 'Spleen tent' segments CT images")


def test_missing_series_for_a_multi_series_model(
    tent_model: tuple[Path, Path], tmp_path: Path
) -> None:
    card = tmp_path / "card.json"
    inputs = [{"role": role, "modality": "MR"} for role in ("t1c", "t1", "t2", "flair")]
    card.write_text(json.dumps({**SPLEEN_CARD, "modality": "MR", "inputs": inputs}))
    case = mr_brain_case(shape=(6, 16, 16))
    paths = []
    for role in ("t1", "t2"):
        path = tmp_path / f"{role}.mha"
        SimpleITK.WriteImage(case.to_image(case.channels[role]), str(path))
        paths.append(f"{role}={path}")
    code, output = segment(
        "--model", tent_model[0], "--card", card, *paths, "--output", tmp_path / "out"
    )
    _one_line_error(code, output, "none found for t1c, flair")


def test_inconsistent_slice_spacing(
    tent_model: tuple[Path, Path], ct_series: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(ct_series, tmp_path / "gappy"))
    sorted(folder.iterdir())[3].unlink()
    code, output = segment(
        "--model", tent_model[0], "--card", tent_model[1], folder, "--output", tmp_path / "out"
    )
    _one_line_error(code, output, "not evenly spaced")


def test_malformed_bundle_config(spleen_bundle: Path, ct_series: Path, tmp_path: Path) -> None:
    root = Path(shutil.copytree(spleen_bundle, tmp_path / "bundle"))
    config = root / "configs" / "inference.json"
    document = json.loads(config.read_text())
    document["inferer"]["_target_"] = "NoSuchInferer"
    config.write_text(json.dumps(document))
    code, output = segment("--bundle", root, ct_series, "--output", tmp_path / "out")
    _one_line_error(code, output, "inference.json: key 'inferer' cannot be built")


@pytest.mark.parametrize("content", [b"", b"garbage"])
def test_a_model_that_does_not_load(
    tent_model: tuple[Path, Path], ct_series: Path, tmp_path: Path, content: bytes
) -> None:
    broken = tmp_path / "model.ts"
    broken.write_bytes(content)
    code, output = segment(
        "--model", broken, "--card", tent_model[1], ct_series, "--output", tmp_path / "out"
    )
    _one_line_error(code, output, "is not a TorchScript model")


def test_bundle_or_model_is_required(ct_series: Path, tmp_path: Path) -> None:
    code, output = segment(ct_series, "--output", tmp_path / "out")
    _one_line_error(code, output, "give either --bundle DIR or --model FILE")


def test_without_the_deep_learning_extra_the_error_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    blocked = (
        "import sys; sys.modules['torch'] = None; sys.modules['monai'] = None\n"
        "from voxelhub.cli import app\n"
        "app()\n"
    )
    arguments = ["segment", "--bundle", str(tmp_path), "x.mha", "--output", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-c", blocked, *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'voxelhub[ai]'" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
