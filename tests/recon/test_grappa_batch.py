"""The learned methods' batched GRAPPA kernels against the reference GRAPPA, slice by slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelhub.recon import _grappa_batch
from voxelhub.recon.errors import ReconError
from voxelhub.recon.gaps import gap_groups
from voxelhub.recon.grappa import fill_groups, fit_kernel, irregular_groups
from voxelhub.recon.masks import equispaced_mask
from voxelhub.recon.model import Sampling
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU here"
))]  # fmt: skip


@pytest.fixture(scope="module")
def three_slices() -> PhantomAcquisition:
    spec = PhantomSpec(readout=48, phase_encode=40, coils=6, slices=3, acceleration=3, acs_lines=12)
    return simulate(spec, seed=4)


def off_grid(acq: PhantomAcquisition) -> Sampling:
    """R = 3 with the ACS block one line off the grid: groups of several geometries."""
    mask = np.zeros(acq.kspace.data.shape[-1], dtype=bool)
    mask[1::3] = True
    mask[15:27] = True
    return Sampling(mask=mask, acs=(15, 27), acceleration=3)


@pytest.mark.parametrize("device", DEVICES)
def test_kernels_are_grappas_fit_slice_by_slice(
    three_slices: PhantomAcquisition, device: str
) -> None:
    data, sampling = three_slices.fully_sampled, off_grid(three_slices)
    start, stop = sampling.acs
    acs = torch.from_numpy(data[..., start:stop]).to(device)
    for group in gap_groups(sampling.mask, blocks=2, acs_lines=sampling.acs_lines):
        batched = _grappa_batch.fit_kernels(acs, group, taps=5, regularization=0.1).cpu().numpy()
        for index in range(data.shape[0]):
            reference = fit_kernel(data[index, ..., start:stop], group, taps=5, regularization=0.1)
            scale = np.abs(reference).max()
            np.testing.assert_allclose(batched[index], reference, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("device", DEVICES)
def test_filling_is_grappas_every_slice_with_its_own_kernel(
    three_slices: PhantomAcquisition, device: str
) -> None:
    sampling = off_grid(three_slices)
    measured = three_slices.fully_sampled * sampling.mask
    groups = gap_groups(sampling.mask, blocks=2, acs_lines=sampling.acs_lines)
    assert len(irregular_groups(sampling)) >= 2  # geometries beside the ACS block and edges
    reference = measured.copy()
    fill_groups(reference, sampling, groups, taps=5, regularization=0.1)
    batch = torch.from_numpy(measured.copy()).to(device)
    _grappa_batch.fill_groups(batch, sampling, groups, taps=5, regularization=0.1)
    filled = batch.cpu().numpy()
    scale = np.abs(reference).max()
    np.testing.assert_allclose(filled, reference, rtol=0, atol=1e-5 * scale)
    # Every slice got its own kernel: slice 1 filled with slice 0's would differ.
    assert not np.allclose(filled[1][..., ~sampling.mask], 0)
    np.testing.assert_array_equal(filled[..., sampling.mask], measured[..., sampling.mask])


def test_too_few_calibration_equations_are_refused() -> None:
    acq = simulate(PhantomSpec(readout=8, phase_encode=32, coils=8, acceleration=2, acs_lines=6))
    sampling = equispaced_mask(32, 2, acs_lines=6)
    start, stop = sampling.acs
    acs = torch.from_numpy(acq.fully_sampled[..., start:stop])
    group = gap_groups(sampling.mask, blocks=2, acs_lines=6)[0]
    with pytest.raises(ReconError, match="calibration equations"):
        _grappa_batch.fit_kernels(acs, group, taps=5, regularization=0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_no_regularization_with_a_dead_coil_takes_the_minimum_norm_kernel(
    three_slices: PhantomAcquisition, device: str
) -> None:
    data, sampling = three_slices.fully_sampled.copy(), off_grid(three_slices)
    data[1, -1] = 0  # slice 1: a coil element that delivered nothing
    start, stop = sampling.acs
    group = gap_groups(sampling.mask, blocks=2, acs_lines=sampling.acs_lines)[0]
    acs = torch.from_numpy(np.ascontiguousarray(data[..., start:stop])).to(device)
    weights = _grappa_batch.fit_kernels(acs, group, taps=5, regularization=0.0).cpu().numpy()
    assert np.isfinite(weights).all()
    for index in (0, 2):  # full-rank slices: the exact solution as before
        expected = fit_kernel(data[index, ..., start:stop], group, taps=5, regularization=0.0)
        np.testing.assert_allclose(weights[index], expected, rtol=0.05, atol=1e-3)
