from __future__ import annotations

import logging

import numpy as np
import pytest

from voxelhub.recon.detect import ReconError, check_kspace, detect_sampling
from voxelhub.recon.masks import equispaced_mask


def _data(mask: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1, 2, 8, mask.size)) + 1j * rng.standard_normal((1, 2, 8, 1))
    return (data * mask).astype(np.complex64)


@pytest.mark.parametrize(
    ("columns", "acceleration", "acs_lines"),
    [(96, 2, 16), (96, 3, 16), (320, 4, 24), (320, 5, 26), (368, 6, 32), (320, 8, 12)],
)
def test_acceleration_and_acs_are_found(columns: int, acceleration: int, acs_lines: int) -> None:
    truth = equispaced_mask(columns, acceleration, acs_lines=acs_lines)
    found = detect_sampling(_data(truth.mask))
    assert found.acceleration == acceleration
    np.testing.assert_array_equal(found.mask, truth.mask)
    # a regular line touching the block is indistinguishable from an ACS line
    assert truth.acs[0] - 1 <= found.acs[0] <= truth.acs[0]
    assert truth.acs[1] <= found.acs[1] <= truth.acs[1] + 1


def test_fastmri_style_irregular_spacing_gives_the_usual_gap() -> None:
    mask = np.zeros(368, bool)
    mask[np.round(np.arange(1, 367, 4.35)).astype(int)] = True
    mask[170:200] = True
    assert detect_sampling(_data(mask)).acceleration == 4


def test_fully_sampled_is_r1() -> None:
    found = detect_sampling(_data(np.ones(64, bool)))
    assert (found.acceleration, found.acs) == (1, (0, 64))


def test_hint_that_disagrees_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        found = detect_sampling(
            _data(equispaced_mask(96, 3, acs_lines=16).mask), acceleration_hint=4
        )
    assert found.acceleration == 3
    assert "the file says R=4" in caplog.text


def test_no_acs_is_refused() -> None:
    mask = np.zeros(96, bool)
    mask[::2] = True
    with pytest.raises(ReconError, match="no ACS block: only 1 consecutive"):
        detect_sampling(_data(mask))


def test_unsampled_centre_is_refused() -> None:
    mask = np.zeros(96, bool)
    mask[1::4] = True
    mask[10:30] = True
    with pytest.raises(ReconError, match="centre line 48 was not acquired"):
        detect_sampling(_data(mask))


def test_only_acs_is_refused() -> None:
    mask = np.zeros(96, bool)
    mask[40:56] = True
    with pytest.raises(ReconError, match="only the calibration block"):
        detect_sampling(_data(mask))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((2, 8, 8), np.complex64), "3 dimensions"),
        (np.zeros((1, 2, 8, 8), np.float32), "must be complex"),
        (np.zeros((1, 0, 8, 8), np.complex64), "empty"),
        (np.full((1, 1, 2, 2), np.nan, np.complex64), "4 NaN or infinite"),
        (
            np.concatenate((np.ones((1, 2, 4, 4)), np.zeros((2, 2, 4, 4)))).astype(np.complex64),
            r"slice\(s\) 1, 2 of 3 hold no data",
        ),
    ],
)
def test_bad_arrays_are_refused(data: np.ndarray, message: str) -> None:
    with pytest.raises(ReconError, match=message):
        check_kspace(data, source="x.h5")


@pytest.mark.parametrize("side", ["start", "end"])
def test_fully_sampled_partial_fourier_is_r1(side: str) -> None:
    mask = np.ones(96, bool)
    mask[:24] = False  # 3/4 partial Fourier: the first (or last) quarter never acquired
    mask = mask if side == "start" else mask[::-1].copy()
    found = detect_sampling(_data(mask))
    assert found.acceleration == 1
    assert found.acs_lines == 72


def test_random_mask_of_mostly_neighbouring_lines_is_not_r1() -> None:
    # fastMRI's test-set random masks: many acquired lines sit side by side, yet lines are
    # missing; R = 1 would make RAKI return the zero-filled image as if fully sampled.
    mask = np.zeros(64, bool)
    mask[[2, 9, 16, 18, 19, 21, 39, 43, 48, 52, 54, 55, 60, 61]] = True
    mask[26:38] = True
    found = detect_sampling(_data(mask))
    assert found.acceleration >= 2
    assert found.acs == (26, 38)
