"""RAKI and residual RAKI on the lines off the regular grid: GRAPPA kernels of their geometry."""

from __future__ import annotations

import doctest
from dataclasses import replace

import numpy as np
import pytest

from voxelhub.recon import grappa as grappa_module
from voxelhub.recon.errors import ReconError
from voxelhub.recon.grappa import grappa_kspace, irregular_groups
from voxelhub.recon.masks import equispaced_mask
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate
from voxelhub.recon.raki import fill
from voxelhub.recon.rraki import fill as rraki_fill


@pytest.fixture(scope="module")
def off_grid() -> PhantomAcquisition:
    """1 slice, 6 coils, 64 x 64, R = 4, 16 ACS lines (24-39) off the grid 1, 5, 9, ..."""
    spec = PhantomSpec(readout=64, phase_encode=64, coils=6, acceleration=4, acs_lines=16)
    acq = simulate(spec, seed=7)
    sampling = equispaced_mask(64, 4, acs_lines=16, offset=1)
    assert sampling.acs[0] % 4 != 1
    kspace = replace(acq.kspace, data=acq.fully_sampled * sampling.mask, sampling=sampling)
    return replace(acq, kspace=kspace)


def irregular_lines(acq: PhantomAcquisition) -> np.ndarray:
    sampling = acq.kspace.sampling
    lines = np.zeros(sampling.mask.size, dtype=bool)
    for group in irregular_groups(sampling):
        lines[group.bases[:, None] + np.asarray(group.targets)] = True
    return lines


def test_irregular_lines_are_beside_the_acs_and_at_the_edges(off_grid: PhantomAcquisition) -> None:
    sampling = off_grid.kspace.sampling
    lines = np.flatnonzero(irregular_lines(off_grid))
    start = sampling.acs[0]
    assert lines.size > 0
    assert not sampling.mask[lines].any()
    acquired = np.flatnonzero(sampling.mask)
    for line in lines:
        below, above = acquired[acquired < line], acquired[acquired > line]
        assert below.size == 0 or above.size == 0 or above[0] - below[-1] != 4
    assert any(start - 4 < line < start for line in lines)


def test_irregular_lines_are_grappas_and_the_others_the_networks(
    off_grid: PhantomAcquisition,
) -> None:
    data, sampling = off_grid.kspace.data, off_grid.kspace.sampling
    lines = irregular_lines(off_grid)
    regular = ~sampling.mask & ~lines
    reference = grappa_kspace(data, sampling)[0]
    filled = fill(data[0], sampling, iterations=20, threads=1)
    # The same fit, batched in torch on the networks' device: equal to float32 rounding.
    scale = np.abs(reference[..., lines]).max()
    np.testing.assert_allclose(
        filled[..., lines], reference[..., lines], rtol=1e-4, atol=1e-5 * scale
    )
    assert not np.allclose(filled[..., regular], reference[..., regular], rtol=1e-2)
    network = fill(data[0], sampling, iterations=20, threads=1, irregular_gaps="network")
    np.testing.assert_array_equal(network[..., regular], filled[..., regular])
    assert not np.allclose(network[..., lines], reference[..., lines], rtol=1e-2)


def test_untrained_residual_raki_is_our_grappa_on_every_line(off_grid: PhantomAcquisition) -> None:
    data, sampling = off_grid.kspace.data, off_grid.kspace.sampling
    reference = grappa_kspace(data, sampling)[0]
    filled = rraki_fill(
        data[0], sampling, iterations=0, threads=1, precision="float32", calibration_extension=0
    )
    scale = np.abs(reference).max()
    np.testing.assert_allclose(filled, reference, rtol=0, atol=1e-4 * scale)


def test_irregular_lines_lower_the_error_beside_the_acs(off_grid: PhantomAcquisition) -> None:
    data, sampling = off_grid.kspace.data, off_grid.kspace.sampling
    lines = irregular_lines(off_grid)
    truth = off_grid.fully_sampled[0][..., lines]

    def error(method: str) -> float:
        filled = rraki_fill(data[0], sampling, iterations=0, threads=1, irregular_gaps=method)
        return float(np.sum(np.abs(filled[..., lines] - truth) ** 2))

    assert error("grappa") < error("network")


def test_unknown_irregular_gaps_is_refused(off_grid: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match="irregular_gaps must be one of grappa, network"):
        fill(off_grid.kspace.data[0], off_grid.kspace.sampling, irregular_gaps="zero")


def test_grappa_docstring_examples() -> None:
    result = doctest.testmod(grappa_module)
    assert result.attempted > 0
    assert result.failed == 0
