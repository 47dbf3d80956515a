"""The ingest format check for raw k-space agrees with what the reconstruction reads."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.recon.helpers import fastmri_file
from voxelhub.ingest.formats import kspace as kspace_format
from voxelhub.ingest.formats.base import Recognition
from voxelhub.recon.header import format_header
from voxelhub.recon.io_fastmri import read_fastmri
from voxelhub.recon.phantom import PhantomAcquisition


def _inspect(path: Path) -> Recognition:
    return kspace_format.inspect(path, path.read_bytes()[:16])


def test_multi_coil_fastmri_file_is_accepted(tiny: PhantomAcquisition, tmp_path: Path) -> None:
    found = _inspect(fastmri_file(tmp_path / "multi.h5", tiny.kspace))
    assert found.ok and found.details["shape"] == [2, 4, 64, 48]


def test_single_coil_fastmri_file_is_accepted_as_the_reader_reads_it(
    tiny: PhantomAcquisition, tmp_path: Path
) -> None:
    path = tmp_path / "single.h5"
    with h5py.File(path, "w") as handle:  # as fastMRI's singlecoil_* files: no coil axis
        handle["kspace"] = tiny.kspace.data[:, 0]
        handle["ismrmrd_header"] = np.bytes_(format_header(tiny.kspace.header).encode())
    found = _inspect(path)
    assert found.ok, found.reason
    assert read_fastmri(path).data.shape == (2, 1, 64, 48)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones((2, 64), np.complex64), "expected slices x coils x readout x phase-encode"),
        (np.ones((2, 4, 64, 48), np.float32), "must be complex"),
    ],
)
def test_unusable_kspace_is_refused_with_the_reason(
    data: np.ndarray, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as handle:
        handle["kspace"] = data
    found = _inspect(path)
    assert not found.ok
    assert message in found.reason
