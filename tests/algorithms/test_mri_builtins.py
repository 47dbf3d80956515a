"""The reconstruction pipeline's built-ins on prepared working directories, as the built-in
executor runs them: preprocessing (archives with junk, coil compression) → reconstruction
(default and chosen settings) → DICOM linked to its raw data, and the outbox."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from voxelhub.algorithms.builtins import RUNNERS, InputError
from voxelhub.algorithms.builtins import mri_reconstruction as recon_builtins
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.metrics import nmse
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate
from voxelhub.recon.preprocess import sha256_of
from voxelhub.recon.readers import read_kspace


@pytest.fixture(scope="module")
def acquisition() -> PhantomAcquisition:
    spec = PhantomSpec(readout=64, phase_encode=48, coils=8, slices=2, acs_lines=12)
    return simulate(spec, seed=4)


@pytest.fixture
def raw(acquisition: PhantomAcquisition, tmp_path: Path) -> Path:
    path = tmp_path / "knee_scan.h5"
    write_fastmri(path, acquisition.kspace)
    return path


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "outbox"
    recon_builtins.configure(outbox=folder)
    yield folder
    recon_builtins.configure(outbox=None)


def _run(slug: str, root: Path, inputs: dict[str, Path | object]) -> Path:
    """Run built-in `slug` on `inputs` (files are copied into input/); returns output/."""
    for name in ("input", "output", "model"):
        (root / name).mkdir(parents=True)
    entries: list[dict[str, Any]] = []
    for interface, given in inputs.items():
        if isinstance(given, Path):
            (root / "input" / interface).mkdir()
            (root / "input" / interface / given.name).write_bytes(given.read_bytes())
            entries.append(
                {"interface": interface, "kind": "file", "path": f"{interface}/{given.name}"}
            )
        else:
            entries.append({"interface": interface, "kind": "json", "value": given})
    manifest = {"job_id": "job-1", "algorithm": slug, "inputs": entries}
    (root / "input" / "inputs.json").write_text(json.dumps(manifest))
    RUNNERS[slug](root / "input", root / "output", root / "model")
    return root / "output"


def _series(output: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((output / "images").iterdir())]


def test_preprocess_then_reconstruct(
    raw: Path, acquisition: PhantomAcquisition, tmp_path: Path
) -> None:
    prepared = _run("mri-preprocess", tmp_path / "pre", {"kspace": raw})
    report = json.loads((prepared / "preprocessing.json").read_text())
    assert report["acceleration"] == 4 and report["acs_lines"] == 12
    assert report["source"] == "knee_scan.h5" and report["rejected"] == []
    assert report["compression_ratio"] > 1.2  # three of four lines are not sampled
    stored = prepared / "kspace-preprocessed.h5"
    np.testing.assert_array_equal(read_kspace(stored).data, read_kspace(raw).data)

    output = _run("mri-recon-grappa", tmp_path / "recon", {"kspace": stored})
    series = _series(output)
    assert len(series) == 2 and series[0].Modality == "MR"
    assert series[0].ImageComments == f"raw data: knee_scan.h5 sha256:{sha256_of(raw)}"
    derivation = json.loads(series[0].DerivationDescription)
    assert derivation["method"] == "grappa" and derivation["raw_data"]["file"] == "knee_scan.h5"
    settings = json.loads((output / "settings.json").read_text())
    assert settings["raw_data"]["sha256"] == sha256_of(raw)
    images = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in series])
    assert nmse(acquisition.reference, images.astype(np.float32)) < 0.05


def test_coil_compressed_preprocessing(raw: Path, tmp_path: Path) -> None:
    prepared = _run("mri-preprocess-cc", tmp_path / "pre", {"kspace": raw})
    report = json.loads((prepared / "preprocessing.json").read_text())
    compression = report["provenance"]["coil_compression"]
    assert compression["source_coils"] == 8 and compression["virtual_coils"] < 8
    assert compression["energy"] >= 0.995
    output = _run(
        "mri-recon-zero-filled", tmp_path / "recon", {"kspace": prepared / "kspace-preprocessed.h5"}
    )
    assert json.loads((output / "settings.json").read_text())["coil_compression"] == compression


def test_archive_with_junk_uses_the_kspace_and_reports_the_rest(raw: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "upload.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(raw, "scan/knee_scan.h5")
        archive.writestr("scan/notes.txt", "not k-space")
        archive.writestr("scan/broken.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    prepared = _run("mri-preprocess", tmp_path / "pre", {"kspace": bundle})
    report = json.loads((prepared / "preprocessing.json").read_text())
    assert report["source"] == "scan/knee_scan.h5"
    assert {r["file"] for r in report["rejected"]} == {"scan/notes.txt", "scan/broken.h5"}
    assert all(r["error"] for r in report["rejected"])


def test_archive_without_kspace_says_why(tmp_path: Path) -> None:
    bundle = tmp_path / "junk.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match=r"holds no readable k-space.*readme.txt"):
        _run("mri-preprocess", tmp_path / "pre", {"kspace": bundle})


def test_nans_fail_the_job_with_a_clear_error(
    acquisition: PhantomAcquisition, tmp_path: Path
) -> None:
    data = acquisition.kspace.data.copy()
    data[0, 0, 3, 3] = np.nan
    path = tmp_path / "nan.h5"
    write_fastmri(path, acquisition.kspace.__class__(data, acquisition.kspace.sampling,
                                                     acquisition.kspace.header))  # fmt: skip
    with pytest.raises(InputError, match="NaN or infinite"):
        _run("mri-preprocess", tmp_path / "pre", {"kspace": path})
    with pytest.raises(InputError, match="NaN or infinite"):
        _run("mri-recon-grappa", tmp_path / "recon", {"kspace": path})


def test_reconstruct_again_with_other_settings(raw: Path, tmp_path: Path) -> None:
    parameters = {"method": "grappa", "kernel": [3, 2], "regularization": 0.05}
    output = _run("mri-recon", tmp_path / "again", {"kspace": raw, "parameters": parameters})
    settings = json.loads((output / "settings.json").read_text())
    assert settings["method"] == "grappa" and settings["kernel"] == [3, 2]
    assert settings["regularization"] == 0.05
    assert json.loads(_series(output)[0].DerivationDescription)["kernel"] == [3, 2]


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"kernel": [3, 2]}, "must be a JSON object naming the method"),
        ({"method": "magic"}, "unknown reconstruction method 'magic'"),
        ({"method": "grappa", "speed": 11}, r"grappa does not take \['speed'\]"),
    ],
)
def test_bad_parameters_are_refused(
    raw: Path, tmp_path: Path, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        _run("mri-recon", tmp_path / "bad", {"kspace": raw, "parameters": parameters})
    assert not (tmp_path / "bad" / "output" / "images").exists()


def test_outbox_gets_one_folder_per_series(raw: Path, tmp_path: Path, outbox: Path) -> None:
    output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    uid = _series(output)[0].SeriesInstanceUID
    assert [p.name for p in outbox.iterdir()] == [uid]
    delivered = sorted(p.name for p in (outbox / uid).iterdir())
    assert delivered == sorted(p.name for p in (output / "images").iterdir())
    recorded = json.loads((output / "settings.json").read_text())["outbox"]
    assert recorded == {"delivered": True, "folder": str(outbox / uid)}


def test_failed_delivery_is_recorded_and_the_series_kept(raw: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    recon_builtins.configure(outbox=blocker / "outbox")
    try:
        output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    finally:
        recon_builtins.configure(outbox=None)
    assert len(_series(output)) == 2
    recorded = json.loads((output / "settings.json").read_text())["outbox"]
    assert recorded["delivered"] is False and "VOXELHUB_RECON_OUTBOX" in recorded["error"]
