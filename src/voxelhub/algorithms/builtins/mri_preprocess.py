"""`mri-preprocess[-cc]`: the first stage of the reconstruction pipeline.

Raw k-space (a fastMRI or ISMRMRD file, or a zip/tar holding one) → validated, the sampling
(R, ACS) detected, padding columns removed, coils optionally compressed (`-cc`: SVD to the
fewest virtual coils keeping 99.5 % of the calibration energy) → `kspace-preprocessed`, a
compressed HDF5 file that any `mri-recon-*` reads, and `preprocessing`, a JSON report (what
was found, the compression ratio, and one line per archive member that could not be used).
The job stores them as the case values `mri-preprocess[-cc].kspace-preprocessed` and
`….preprocessing`; a trigger on the former (value_interface) starts the reconstruction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxelhub.algorithms.builtins.manifest import (
    InputError,
    input_entry,
    input_path,
    read_manifest,
)
from voxelhub.algorithms.builtins.spec import BuiltinFn, BuiltinSpec, InterfaceSpec, Resources

OUTPUT = "kspace-preprocessed"
CC_ENERGY = 0.995
VARIANTS: dict[str, float | None] = {"mri-preprocess": None, "mri-preprocess-cc": CC_ENERGY}


def spec_for(slug: str) -> BuiltinSpec:
    compression = (
        f", coils SVD-compressed to keep {VARIANTS[slug]:.1%} of the energy"
        if VARIANTS[slug]
        else ""
    )
    return BuiltinSpec(
        slug=slug,
        title="MRI k-space preprocessing" + (" with coil compression" if VARIANTS[slug] else ""),
        description="Validate raw k-space, detect R and the ACS block, remove padding"
        + compression
        + "; writes compressed HDF5 for the reconstruction.",
        inputs=(
            InterfaceSpec(
                interface="kspace", kind="file", description="fastMRI/ISMRMRD HDF5, zip or tar"
            ),
        ),
        outputs=(
            InterfaceSpec(interface=OUTPUT, kind="file"),
            InterfaceSpec(interface="preprocessing", kind="json"),
        ),
        resources=Resources(queue="cpu", memory_mb=8192, time_limit_s=1800),
    )


def _one_kspace(path: Path) -> tuple[Any, list[dict[str, str]]]:
    from voxelhub.recon.archive import read_inputs

    found, rejected = [], []
    for result in read_inputs(path):
        if result.kspace is not None:
            found.append(result)
        else:
            rejected.append({"file": result.name, "error": str(result.error)})
    if len(found) != 1:
        problems = "; ".join(f"{r['file']}: {r['error']}" for r in rejected) or "none"
        what = "no readable k-space" if not found else f"{len(found)} k-space files"
        raise InputError(
            f"{path.name} holds {what} (one is needed per job; upload an archive through "
            f"ingest to store each file as its own case). Problems: {problems}"
        )
    return found[0], rejected


def runner_for(slug: str) -> BuiltinFn:
    def run(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
        from voxelhub.recon.errors import ReconError
        from voxelhub.recon.preprocess import preprocess, sha256_of, write_preprocessed

        path = input_path(input_dir, input_entry(read_manifest(input_dir), "kspace"))
        member, rejected = _one_kspace(path)
        try:
            prepared = preprocess(
                member.kspace, energy=VARIANTS[slug], source_sha256=sha256_of(path)
            )
        except ReconError as err:
            raise InputError(f"{member.name}: {err}") from err
        sizes = write_preprocessed(output_dir / f"{OUTPUT}.h5", prepared.kspace)
        report = {
            **prepared.report,
            "source": member.name,
            **sizes,
            "compression_ratio": round(sizes["raw_bytes"] / max(sizes["stored_bytes"], 1), 3),
            "rejected": rejected,
        }
        (output_dir / "preprocessing.json").write_text(json.dumps(report, default=str))

    return run


SPECS: dict[str, BuiltinSpec] = {slug: spec_for(slug) for slug in VARIANTS}
RUNNERS: dict[str, Callable[[Path, Path, Path], None]] = {
    slug: runner_for(slug) for slug in VARIANTS
}
