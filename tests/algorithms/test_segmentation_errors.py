"""Segmentation jobs that cannot run say why at the start, and write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import needs_bwrap
from tests.segment.test_train import SHAPE, spleen_bundle
from voxelhub.algorithms.contract import (
    INPUTS_JSON,
    ExecutionRequest,
    Limits,
    Outcome,
    prepare_workdir,
)
from voxelhub.algorithms.executors import _segment_entry as entry
from voxelhub.algorithms.executors._entry import SEGMENT_ENTRY, entry_command
from voxelhub.algorithms.executors.sandbox import SandboxExecutor
from voxelhub.algorithms.warm import WarmBundleExecutor, WarmBundles
from voxelhub.segment.synthetic import ct_case, dicom_series, mr_brain_case, write_series


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spleen_bundle(tmp_path_factory.getbasetemp()).path


def job_dir(tmp_path: Path, series: list | None) -> Path:  # type: ignore[type-arg]
    """A job working directory whose input `ct` holds `series` (None: no instances)."""
    workdir = tmp_path / "job"
    prepare_workdir(workdir)
    folder = workdir / "input" / "ct"
    folder.mkdir()
    if series:
        write_series(series, folder)
    manifest = {
        "job_id": "j",
        "algorithm": "spleen-seg",
        "inputs": [{"interface": "ct", "kind": "dicom_series", "path": "ct"}],
    }
    (workdir / "input" / INPUTS_JSON).write_text(json.dumps(manifest))
    return workdir


def ct_series(seed: int = 7) -> list:  # type: ignore[type-arg]
    case = ct_case(shape=SHAPE, seed=seed)
    return dicom_series(case.image, case.geometry)


def test_bundle_jobs_with_images_use_the_segmentation_entry(tmp_path: Path, bundle: Path) -> None:
    workdir = job_dir(tmp_path, None)
    request = ExecutionRequest(job_id="j", workdir=workdir, package_dir=bundle)
    command = entry_command(request)
    assert command[1:] == ["-m", SEGMENT_ENTRY, "/opt/algorithm"]


@pytest.mark.parametrize(
    ("make_series", "message"),
    [
        (
            lambda: dicom_series(mr_brain_case(shape=(8, 16, 16)).image,
                                 mr_brain_case(shape=(8, 16, 16)).geometry, modality="MR"),
            "is MR, but model 'voxelhub segmentation' segments CT images",
        ),
        (lambda: [ds for i, ds in enumerate(ct_series()) if i != 10], "not evenly spaced"),
        (lambda: None, "the series has no instances in the store"),
    ],
    ids=["wrong-modality", "missing-slice", "missing-series"],
)  # fmt: skip
def test_bad_inputs_stop_before_inference_and_leave_output_empty(
    tmp_path: Path,
    bundle: Path,
    make_series,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    workdir = job_dir(tmp_path, make_series())
    with pytest.raises(entry.EntryError, match=message):
        entry.segment(bundle, workdir / "input", workdir / "output")
    assert not any((workdir / "output").iterdir())


def test_entry_writes_the_contract_layout(tmp_path: Path, bundle: Path) -> None:
    workdir = job_dir(tmp_path, ct_series())
    timings = entry.segment(bundle, workdir / "input", workdir / "output")
    output = workdir / "output"
    written = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    assert written == ["mask.mha", "report/sr.dcm", "segmentation/seg.dcm", "volumes.json"]
    assert {"read_s", "load_s", "inference_s", "write_s"} <= set(timings)
    volumes = json.loads((output / "volumes.json").read_text())
    assert volumes["labels"][0]["name"] == "spleen" and volumes["labels"][0]["voxels"] > 0


@needs_bwrap
@pytest.mark.slow
def test_a_model_that_does_not_load_fails_the_job_with_the_reason(
    tmp_path: Path, bundle: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, broken / "models" / "model.pt")
    workdir = job_dir(tmp_path, ct_series())
    request = ExecutionRequest(
        job_id="broken", workdir=workdir, package_dir=broken, limits=Limits(memory_mb=4096)
    )
    result = SandboxExecutor().run(request)
    assert result.outcome is Outcome.failed, result
    assert result.exit_code == entry.USAGE_ERROR
    assert "the weights do not load into 'network_def'" in result.message
    assert "models/model.pt" in result.message
    assert not any((workdir / "output").iterdir())


@needs_bwrap
@pytest.mark.slow
def test_the_sandbox_runs_the_bundle_through_the_entry(tmp_path: Path, bundle: Path) -> None:
    workdir = job_dir(tmp_path, ct_series())
    request = ExecutionRequest(
        job_id="ok", workdir=workdir, package_dir=bundle, limits=Limits(memory_mb=4096)
    )
    result = SandboxExecutor().run(request)
    assert result.outcome is Outcome.succeeded, result
    assert (workdir / "output" / "segmentation" / "seg.dcm").is_file()
    assert json.loads(result.stdout_tail.strip().splitlines()[-1])["timings"]["inference_s"] > 0


@needs_bwrap
@pytest.mark.slow
def test_a_warm_bundle_keeps_its_model_loaded_between_requests(
    tmp_path: Path, bundle: Path
) -> None:
    bundles = WarmBundles(capacity=1)
    executor = WarmBundleExecutor("spleen", bundles)
    try:
        for name in ("first", "second"):
            workdir = job_dir(tmp_path / name, ct_series())
            request = ExecutionRequest(
                job_id=name, workdir=workdir, package_dir=bundle, limits=Limits(memory_mb=8192)
            )
            result = executor.run(request)
            assert result.outcome is Outcome.succeeded, result
            assert (workdir / "output" / "segmentation" / "seg.dcm").is_file()
            assert "load_s" not in json.loads(result.stdout_tail)["timings"]
        assert bundles.starts == 1
        bad = job_dir(tmp_path / "bad", [ds for i, ds in enumerate(ct_series()) if i != 10])
        failed = executor.run(
            ExecutionRequest(job_id="bad", workdir=bad, package_dir=bundle, limits=Limits())
        )
        assert failed.outcome is Outcome.failed and "not evenly spaced" in failed.message
        assert not any((bad / "output").iterdir())
        assert bundles.starts == 1, "a bad input does not cost the loaded model"
    finally:
        bundles.close()


@needs_bwrap
@pytest.mark.slow
def test_a_warm_bundle_whose_model_does_not_load_says_why(tmp_path: Path, bundle: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "models" / "model.pt").unlink()
    (broken / "models" / "model.ts").unlink()
    bundles = WarmBundles(capacity=1)
    try:
        workdir = job_dir(tmp_path, ct_series())
        result = WarmBundleExecutor("broken", bundles).run(
            ExecutionRequest(
                job_id="b", workdir=workdir, package_dir=broken, limits=Limits(memory_mb=8192)
            )
        )
        assert result.outcome is Outcome.failed
        assert "the bundle has no models/model.pt or models/model.ts" in result.message
    finally:
        bundles.close()
