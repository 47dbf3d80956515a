from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from voxelhub.recon.errors import ReconError
from voxelhub.recon.gaps import gap_groups
from voxelhub.recon.grappa import grappa, grappa_kspace
from voxelhub.recon.masks import equispaced_mask
from voxelhub.recon.metrics import nmse
from voxelhub.recon.model import Sampling
from voxelhub.recon.phantom import PhantomAcquisition, PhantomSpec, simulate
from voxelhub.recon.zerofilled import zero_filled


@pytest.fixture(scope="module")
def small_r2() -> PhantomAcquisition:
    return simulate(PhantomSpec(acceleration=2, acs_lines=24, snr=40.0), seed=2)


def test_r2_is_close_to_the_truth(small_r2: PhantomAcquisition) -> None:
    error = nmse(small_r2.reference, grappa(small_r2.kspace).images)
    assert error < 0.005
    assert error < 0.2 * nmse(small_r2.reference, zero_filled(small_r2.kspace).images)


def test_r3_is_much_better_than_zero_filled(small_r3: PhantomAcquisition) -> None:
    error = nmse(small_r3.reference, grappa(small_r3.kspace).images)
    assert error < 0.3 * nmse(small_r3.reference, zero_filled(small_r3.kspace).images)


def test_noiseless_r2_is_nearly_exact() -> None:
    acq = simulate(PhantomSpec(acceleration=2, acs_lines=24, snr=float("inf")), seed=2)
    assert nmse(acq.reference, grappa(acq.kspace, regularization=1e-3).images) < 1e-4


def test_acquired_lines_are_kept(small_r3: PhantomAcquisition) -> None:
    kspace = small_r3.kspace
    filled = grappa_kspace(kspace.data, kspace.sampling)
    np.testing.assert_array_equal(
        filled[..., kspace.sampling.mask], kspace.data[..., kspace.sampling.mask]
    )
    assert np.all(np.abs(filled[..., ~kspace.sampling.mask]).sum(axis=(0, 1, 2)) > 0)


def test_settings_are_recorded(small_r3: PhantomAcquisition) -> None:
    result = grappa(small_r3.kspace, kernel=(3, 2), regularization=0.02)
    assert result.settings == {"kernel": [3, 2], "regularization": 0.02, "acceleration": 3,
                               "acs_lines": small_r3.kspace.sampling.acs_lines}  # fmt: skip
    assert result.images.shape == (1, 128, 96)
    assert result.seconds_per_slice > 0


def test_irregular_lines_are_filled(small_r2: PhantomAcquisition) -> None:
    mask = np.zeros(96, bool)
    mask[np.round(np.arange(0, 96, 2.6)).astype(int)] = True
    mask[36:60] = True
    kspace = replace(small_r2.kspace, data=small_r2.fully_sampled * mask,
                     sampling=Sampling(mask, (36, 60), 3))  # fmt: skip
    error = nmse(small_r2.reference, grappa(kspace).images)
    assert error < 0.5 * nmse(small_r2.reference, zero_filled(kspace).images)


def test_gap_groups_share_one_kernel_per_geometry() -> None:
    sampling = equispaced_mask(96, 4, acs_lines=24)
    groups = gap_groups(sampling.mask, blocks=4, acs_lines=24)
    regular = max(groups, key=lambda g: g.bases.size)
    assert (regular.sources, regular.targets) == ((-4, 0, 4, 8), (1, 2, 3))
    filled = sorted(int(b) + t for g in groups for b in g.bases for t in g.targets)
    assert filled == np.flatnonzero(~sampling.mask).tolist()


def test_acs_too_small_for_the_gap_is_refused() -> None:
    mask = np.zeros(96, bool)
    mask[::8] = True
    mask[46:51] = True
    with pytest.raises(ReconError, match=r"ACS block .* too small"):
        gap_groups(mask, blocks=4, acs_lines=5)


def test_too_few_calibration_equations_are_refused(small_r2: PhantomAcquisition) -> None:
    with pytest.raises(ReconError, match="calibration equations"):
        grappa(small_r2.kspace, kernel=(120, 4))


def test_no_regularization_with_a_dead_coil_takes_the_minimum_norm_kernel(
    small_r3: PhantomAcquisition,
) -> None:
    data = small_r3.kspace.data.copy()
    data[:, -1] = 0  # a coil element that delivered nothing
    full = grappa_kspace(data, small_r3.kspace.sampling, regularization=0.0)
    assert np.isfinite(full).all()
    assert not full[:, -1].any()
    assert np.abs(full[:, 0, :, ~small_r3.kspace.sampling.mask]).sum() > 0


def test_partial_fourier_region_is_left_unfilled(small_r2: PhantomAcquisition) -> None:
    sampling = equispaced_mask(96, 2, acs_lines=24)
    mask = sampling.mask.copy()
    mask[:24] = False  # partial Fourier: the first quarter of the lines was never acquired
    kspace = replace(small_r2.kspace, data=small_r2.fully_sampled * mask,
                     sampling=Sampling(mask, sampling.acs, 2))  # fmt: skip
    full = grappa_kspace(kspace.data, kspace.sampling)
    assert not full[..., :24].any()  # no kernel extrapolated across the gap
    assert full[..., 24:].all()
    truth = replace(kspace, data=small_r2.fully_sampled * (np.arange(96) >= 23))
    reference = zero_filled(truth).images
    assert nmse(reference, grappa(kspace).images) < 0.5 * nmse(
        reference, zero_filled(kspace).images
    )
