"""`mri-recon-*`: raw multi-coil k-space (fastMRI, ISMRMRD or preprocessed HDF5) → a DICOM
MR series (one per echo, repetition and set of a file that holds several; a cine's cardiac
phases are one series, its timing recorded as the settings' `cardiac`).

One built-in per method (zero-filled, GRAPPA, RAKI, residual RAKI) with its default
settings, so a trigger picks the method by the algorithm; and `mri-recon`, which takes the
method and its settings as a `parameters` JSON input, to reconstruct stored raw data again
with other settings. The method, its settings and the raw file (name and SHA-256) are
recorded in every image (DerivationDescription, ImageComments) and as the `settings` output.
They run on the `gpu` queue while a live worker serves it, else on `cpu`. When an outbox
folder is configured (`configure`), each series is also written there, in a folder of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from voxelhub.algorithms.builtins.manifest import (
    InputError,
    input_entry,
    input_json,
    input_path,
    read_manifest,
)
from voxelhub.algorithms.builtins.spec import BuiltinFn, BuiltinSpec, InterfaceSpec, Resources
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.mr_series import mr_series

logger = logging.getLogger(__name__)

METHODS = {
    "zero-filled": "Zero-filled + root-sum-of-squares (reference)",
    "grappa": "GRAPPA (Tikhonov-regularised kernel fitted on the ACS)",
    "raki": "RAKI (scan-specific CNN trained on the ACS)",
    "rraki": "Residual RAKI (linear branch + CNN on its residual)",
}
GENERIC = "mri-recon"
RESOURCES = Resources(queue="gpu", fallback_queue="cpu", memory_mb=8192, time_limit_s=3600)
KSPACE = InterfaceSpec(
    interface="kspace", kind="file", description="fastMRI, ISMRMRD or preprocessed HDF5"
)
OUTPUTS = (
    InterfaceSpec(interface="images", kind="dicom_series"),
    InterfaceSpec(interface="settings", kind="json"),
)


@dataclass
class OutputOptions:
    """Where reconstructions go besides the image store (set once per worker process)."""

    outbox: Path | None = None


OPTIONS = OutputOptions()


def configure(*, outbox: Path | None) -> None:
    """Write every reconstructed series to `outbox` as well (None: only to the store)."""
    OPTIONS.outbox = outbox


def spec_for(method: str) -> BuiltinSpec:
    return BuiltinSpec(
        slug=f"mri-recon-{method}",
        title=f"MRI reconstruction: {method}",
        description=METHODS[method] + ", from undersampled Cartesian k-space to an MR series.",
        inputs=(KSPACE,),
        outputs=OUTPUTS,
        resources=RESOURCES,
    )


GENERIC_SPEC = BuiltinSpec(
    slug=GENERIC,
    title="MRI reconstruction with chosen settings",
    description="Reconstruct k-space with the method and settings given as parameters, e.g. "
    '{"method": "grappa", "kernel": [7, 2], "regularization": 0.05}.',
    inputs=(
        KSPACE,
        InterfaceSpec(
            interface="parameters", kind="json", description='{"method": ..., settings...}'
        ),
    ),
    outputs=OUTPUTS,
    resources=RESOURCES,
)


def _raw_link(path: Path, header: dict[str, Any]) -> dict[str, str]:
    from voxelhub.recon.preprocess import sha256_of

    provenance = header.get("provenance") or {}
    if provenance.get("raw_sha256"):
        return {"file": str(provenance["raw_file"]), "sha256": str(provenance["raw_sha256"])}
    return {"file": path.name, "sha256": sha256_of(path)}


def _deliver(outbox: Path, datasets: list[Dataset], files: list[Path]) -> dict[str, Any]:
    """Write each series to its outbox folder; what happened, to record: `folder` for one
    series, `folders` for several."""
    from voxelhub.recon.errors import ReconError
    from voxelhub.recon.outbox import write_series

    by_series: dict[str, list[Path]] = {}
    for ds, path in zip(datasets, files, strict=True):
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(path)
    # A failed delivery is recorded, not fatal: the series still go to the store.
    try:
        folders = [str(write_series(outbox, uid, paths)) for uid, paths in by_series.items()]
    except ReconError as err:
        logger.warning("outbox delivery failed: %s", err, exc_info=True)
        return {"delivered": False, "error": str(err)}
    if len(folders) == 1:
        return {"delivered": True, "folder": folders[0]}
    return {"delivered": True, "folders": folders}


def reconstruct_to(
    input_dir: Path, output_dir: Path, *, method: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """Reconstruct the job's `kspace` input with `method` and write the series and the
    settings JSON under `output_dir`; returns what was recorded."""
    from voxelhub.recon.errors import ReconError
    from voxelhub.recon.methods import reconstruct
    from voxelhub.recon.readers import read_kspace
    from voxelhub.recon.series import cardiac_report, fov_mm, series_parts

    path = input_path(input_dir, input_entry(read_manifest(input_dir), "kspace"))
    try:
        kspace = read_kspace(path)
        fov_mm(kspace.header, (1, 1))  # a header without geometry fails before the work
        result = reconstruct(kspace, method, **settings)
    except ReconError as err:
        raise InputError(str(err)) from err
    raw = _raw_link(path, kspace.header)
    described = {
        "method": method,
        **result.settings,
        "raw_data": raw,
        "coil_compression": (kspace.header.get("provenance") or {}).get("coil_compression"),
    }
    # The timing stays out of the images: the same reconstruction is the same objects.
    recorded = {**described, "seconds_per_slice": round(result.seconds_per_slice, 3)}
    header = kspace.header
    cardiac = cardiac_report(header)
    if cardiac is not None:
        recorded["cardiac"] = cardiac
    try:
        fov = fov_mm(header, result.images.shape[1:])
        datasets = [
            ds
            for part in series_parts(header, result.images, recorded=described, raw=raw)
            for ds in mr_series(
                part.images,
                fov_mm=fov,
                geometry=part.geometry,
                context=part.context,
                cardiac=part.cardiac,
            )
        ]
    except (DicomError, ReconError) as err:
        raise InputError(f"the reconstruction cannot be stored as an MR series: {err}") from err
    folder = output_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, ds in enumerate(datasets):
        files.append(folder / f"{index + 1:04d}.dcm")
        dcmwrite(files[-1], ds, enforce_file_format=True)
    if OPTIONS.outbox is not None and datasets:
        recorded["outbox"] = _deliver(OPTIONS.outbox, datasets, files)
    (output_dir / "settings.json").write_text(json.dumps(recorded, default=str))
    return recorded


def runner_for(method: str) -> BuiltinFn:
    def run(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
        reconstruct_to(input_dir, output_dir, method=method, settings={})

    return run


def run_generic(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
    """`mri-recon`: the method and settings come from the `parameters` input."""
    manifest = read_manifest(input_dir)
    parameters = input_json(input_dir, input_entry(manifest, "parameters"))
    if not isinstance(parameters, dict) or not isinstance(parameters.get("method"), str):
        raise InputError(
            'parameters must be a JSON object naming the method, e.g. {"method": "grappa", '
            f'"kernel": [5, 2]}}; got {json.dumps(parameters)[:200]}'
        )
    settings = {key: value for key, value in parameters.items() if key != "method"}
    reconstruct_to(input_dir, output_dir, method=parameters["method"], settings=settings)


SPECS: dict[str, BuiltinSpec] = {spec_for(m).slug: spec_for(m) for m in METHODS}
SPECS[GENERIC] = GENERIC_SPEC
RUNNERS: dict[str, Callable[[Path, Path, Path], None]] = {
    f"mri-recon-{m}": runner_for(m) for m in METHODS
}
RUNNERS[GENERIC] = run_generic
