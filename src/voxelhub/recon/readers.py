"""Read k-space from an HDF5 file of either format, told apart by what it holds."""

from __future__ import annotations

from pathlib import Path

import h5py

from voxelhub.recon.errors import ReconError
from voxelhub.recon.h5 import open_h5
from voxelhub.recon.io_fastmri import read_fastmri
from voxelhub.recon.io_ismrmrd import read_ismrmrd
from voxelhub.recon.model import KSpace
from voxelhub.recon.preprocess import is_preprocessed, read_preprocessed


def detect_format(path: str | Path) -> str:
    """ "preprocessed" (written by `voxelhub.recon.preprocess`), "fastmri" (a `kspace`
    dataset) or "ismrmrd" (`/dataset/data`); ReconError otherwise."""
    with open_h5(path) as handle:
        if is_preprocessed(handle):
            return "preprocessed"
        if "kspace" in handle:
            return "fastmri"
        if isinstance(handle.get("dataset"), h5py.Group) and "data" in handle["dataset"]:
            return "ismrmrd"
        found = ", ".join(sorted(handle.keys())[:8]) or "nothing"
    raise ReconError(
        f"{Path(path).name} has no 'kspace' dataset (fastMRI) and no /dataset/data (ISMRMRD); "
        f"it holds: {found}"
    )


def read_kspace(
    path: str | Path, *, prewhiten_noise: bool = False, require_acs: bool = True
) -> KSpace:
    """k-space of a fastMRI or ISMRMRD file (`prewhiten_noise` applies to ISMRMRD files with
    noise scans; `require_acs` False accepts raw data without an ACS block, for methods that
    do not calibrate)."""
    found = detect_format(path)
    if found == "preprocessed":
        return read_preprocessed(path)
    if found == "fastmri":
        return read_fastmri(path, require_acs=require_acs)
    return read_ismrmrd(path, prewhiten_noise=prewhiten_noise, require_acs=require_acs)
