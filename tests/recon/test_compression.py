"""SVD coil compression: lossless with every coil kept, close with fewer, and it is recorded."""

from __future__ import annotations

import numpy as np
import pytest

from voxelhub.recon.compression import compress, compression_matrix
from voxelhub.recon.errors import ReconError
from voxelhub.recon.grappa import grappa
from voxelhub.recon.metrics import nmse
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate
from voxelhub.recon.zerofilled import zero_filled


@pytest.fixture(scope="module")
def many_coils() -> PhantomAcquisition:
    """1 slice, 15 coils, 96 x 64, R = 3 with 24 ACS lines, SNR 40."""
    spec = PhantomSpec(readout=96, phase_encode=64, coils=15, acceleration=3, acs_lines=24)
    return simulate(spec, seed=3)


def test_keeping_every_coil_changes_no_image(many_coils: PhantomAcquisition) -> None:
    compressed, found = compress(many_coils.kspace, virtual_coils=15)
    assert found.energy == pytest.approx(1.0)
    np.testing.assert_allclose(
        zero_filled(compressed).images, zero_filled(many_coils.kspace).images, rtol=1e-4
    )


def test_the_matrix_is_orthonormal(many_coils: PhantomAcquisition) -> None:
    matrix = compression_matrix(many_coils.kspace, virtual_coils=6).matrix
    np.testing.assert_allclose(matrix.conj().T @ matrix, np.eye(6), atol=1e-5)


def test_eight_of_fifteen_coils_keep_grappa_close(many_coils: PhantomAcquisition) -> None:
    full = nmse(many_coils.reference, grappa(many_coils.kspace).images)
    compressed, found = compress(many_coils.kspace, virtual_coils=8)
    assert compressed.coils == 8 and compressed.data.shape[2:] == many_coils.kspace.data.shape[2:]
    assert found.energy > 0.99
    reduced = nmse(many_coils.reference, grappa(compressed).images)
    assert reduced < 1.5 * full
    assert reduced < 0.5 * nmse(many_coils.reference, zero_filled(many_coils.kspace).images)


def test_energy_picks_the_fewest_coils_that_keep_it(many_coils: PhantomAcquisition) -> None:
    low = compression_matrix(many_coils.kspace, energy=0.9)
    high = compression_matrix(many_coils.kspace, energy=0.999)
    assert 1 <= low.virtual_coils < high.virtual_coils <= 15
    assert low.energy >= 0.9 and high.energy >= 0.999
    fewer = compression_matrix(many_coils.kspace, virtual_coils=low.virtual_coils - 1 or 1)
    assert low.virtual_coils == 1 or fewer.energy < 0.9


def test_header_records_the_compression(many_coils: PhantomAcquisition) -> None:
    compressed, _ = compress(many_coils.kspace, virtual_coils=4)
    assert compressed.header["coil_compression"]["source_coils"] == 15
    assert compressed.header["coil_compression"]["virtual_coils"] == 4
    assert "coil_compression" not in many_coils.kspace.header


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"virtual_coils": 0}, "between 1 and the 15 coils"),
        ({"virtual_coils": 16}, "between 1 and the 15 coils"),
        ({"energy": 1.5}, r"energy must lie in \(0, 1\]"),
        ({}, "either virtual_coils or energy"),
        ({"virtual_coils": 4, "energy": 0.9}, "either virtual_coils or energy"),
    ],
)
def test_bad_settings_are_refused(
    many_coils: PhantomAcquisition, settings: dict[str, float], message: str
) -> None:
    with pytest.raises(ReconError, match=message):
        compress(many_coils.kspace, **settings)  # type: ignore[arg-type]
