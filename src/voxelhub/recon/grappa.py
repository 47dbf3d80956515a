"""GRAPPA: missing k-space lines as linear combinations of acquired neighbours in all coils.

Griswold et al., Magn Reson Med 2002. For every gap geometry (see `gaps`) a kernel of
`kernel[0]` readout points x `kernel[1]` acquired lines x all coils is fitted on the ACS block
by Tikhonov-regularised least squares, then applied to all occurrences at once (one matrix
product per readout tap); acquired lines, ACS included, are kept as measured. With a separate
reference scan the kernels are fitted on it and every missing imaging line is filled, the
centre included: the reference never enters the image.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np
import numpy.typing as npt
import scipy.linalg
from numpy.lib.stride_tricks import sliding_window_view

from voxelhub.recon.errors import ReconError
from voxelhub.recon.gaps import GapGroup, gap_groups
from voxelhub.recon.image import kspace_to_images
from voxelhub.recon.model import ComplexArray, KSpace, Reconstruction, Sampling

DEFAULT_KERNEL = (5, 2)
DEFAULT_REGULARIZATION = 0.1
Weights = npt.NDArray[np.complex64]


def _sources(acs: ComplexArray, group: GapGroup, *, taps: int) -> tuple[ComplexArray, ComplexArray]:
    """Calibration matrices: source patches (positions x taps·coils·sources) and targets."""
    offsets = group.sources + group.targets
    positions = np.arange(-min(offsets), acs.shape[-1] - max(offsets))
    coils, readout = acs.shape[:2]
    src = acs[:, :, positions[:, None] + np.asarray(group.sources)]
    windows = sliding_window_view(src, taps, axis=1)
    patches = windows.transpose(1, 2, 4, 0, 3).reshape(-1, taps * coils * len(group.sources))
    half = taps // 2
    tgt = acs[:, half : half + readout - taps + 1][
        :, :, positions[:, None] + np.asarray(group.targets)
    ]
    return patches, tgt.transpose(1, 2, 0, 3).reshape(patches.shape[0], -1)


def _largest_eigenvalue(gram: npt.NDArray[np.complex128], *, iterations: int = 30) -> float:
    """σ₁² of the calibration matrix by power iteration (a few per cent is precise enough)."""
    vector = np.ones(gram.shape[0], dtype=np.complex128)
    value = 0.0
    for _ in range(iterations):
        product = gram @ vector
        value = float(np.linalg.norm(product))
        if value == 0.0:
            return 0.0
        vector = product / value
    return value


def check_calibration(equations: int, weights: int, *, lines: int, samples: int) -> None:
    """Refuse a kernel the ACS block (`lines` x `samples`) gives too few equations for."""
    if equations < weights:
        raise ReconError(
            f"the ACS block ({lines} lines x {samples} samples) gives {equations} calibration "
            f"equations for {weights} kernel weights; use a smaller kernel or acquire more "
            "calibration lines"
        )


def fit_kernel(acs: ComplexArray, group: GapGroup, *, taps: int, regularization: float) -> Weights:
    """Weights (taps·coils·sources x coils·targets) minimising ‖S W - T‖² + (λσ₁)²‖W‖²,
    with σ₁ the largest singular value of the source matrix S and λ = `regularization`."""
    patches, targets = _sources(acs, group, taps=taps)
    check_calibration(patches.shape[0], patches.shape[1], lines=acs.shape[-1], samples=acs.shape[1])
    adjoint = patches.conj().T
    gram = (adjoint @ patches).astype(np.complex128)
    rhs = (adjoint @ targets).astype(np.complex128)
    gram[np.diag_indices_from(gram)] += regularization**2 * max(_largest_eigenvalue(gram), 1e-30)
    try:
        weights = scipy.linalg.solve(gram, rhs, assume_a="pos", check_finite=False)
    except np.linalg.LinAlgError:
        # λ = 0 on a rank-deficient calibration (a dead coil): the minimum-norm solution.
        weights = scipy.linalg.lstsq(gram, rhs, check_finite=False)[0]
    return weights.astype(np.complex64)


def apply_kernel(kspace: ComplexArray, group: GapGroup, *, weights: Weights, taps: int) -> None:
    """Fill the group's missing lines of one slice (coils x readout x phase-encode) in place."""
    coils, readout = kspace.shape[:2]
    source = kspace[:, :, group.bases[:, None] + np.asarray(group.sources)]
    half = taps // 2
    padded = np.pad(source, ((0, 0), (half, taps - 1 - half), (0, 0), (0, 0)))
    per_tap = weights.reshape(taps, coils * len(group.sources), -1)
    filled = np.zeros((readout * group.bases.size, per_tap.shape[-1]), dtype=np.complex64)
    for tap in range(taps):
        block = padded[:, tap : tap + readout].transpose(1, 2, 0, 3)
        filled += block.reshape(filled.shape[0], -1) @ per_tap[tap]
    filled_lines = filled.reshape(readout, group.bases.size, coils, len(group.targets))
    kspace[:, :, group.bases[:, None] + np.asarray(group.targets)] = filled_lines.transpose(
        2, 0, 1, 3
    )


def _kernel(kernel: object) -> tuple[int, int]:
    """(readout points, acquired lines) from a setting that may come from the command line."""
    try:
        if isinstance(kernel, str | bytes):
            raise TypeError(kernel)
        taps, blocks = (int(k) for k in kernel)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise ReconError(
            f"the GRAPPA kernel must be two whole numbers (readout points, acquired lines), "
            f"e.g. kernel=5,2; got {kernel!r}"
        ) from err
    return taps, blocks


def _regularization(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ReconError(
            f"the GRAPPA regularization must be a number >= 0, e.g. regularization=0.1; "
            f"got {value!r}"
        ) from err


def grappa_kspace(
    data: ComplexArray,
    sampling: Sampling,
    *,
    kernel: tuple[int, int] = DEFAULT_KERNEL,
    regularization: float = DEFAULT_REGULARIZATION,
    calibration: ComplexArray | None = None,
) -> ComplexArray:
    """Full k-space (slices x coils x readout x phase-encode) with missing lines filled.

    One kernel per slice and gap geometry, calibrated on that slice's ACS block, or on
    `calibration` (slices x coils x readout x ACS lines: a separate reference scan).
    """
    taps, blocks = _kernel(kernel)
    regularization = _regularization(regularization)
    if taps < 1 or blocks < 1 or not regularization >= 0:
        raise ReconError(
            "GRAPPA needs a positive kernel and regularization >= 0; "
            f"got {kernel}, {regularization}"
        )
    out = np.array(data, dtype=np.complex64, copy=True)
    out[..., ~sampling.mask] = 0
    groups = gap_groups(sampling.mask, blocks=blocks, acs_lines=sampling.acs_lines)
    fill_groups(
        out, sampling, groups, taps=taps, regularization=regularization, calibration=calibration
    )
    return out


def fill_groups(
    kspace: ComplexArray,
    sampling: Sampling,
    groups: list[GapGroup],
    *,
    taps: int,
    regularization: float,
    calibration: ComplexArray | None = None,
) -> None:
    """Fill the missing lines of `groups` in k-space (slices x coils x readout x PE) in place,
    one kernel per slice and group calibrated on that slice's ACS block, or on that slice of
    `calibration` (a separate reference scan's ACS block); the groups' source lines must hold
    the acquired data."""
    start, stop = sampling.acs
    if calibration is not None and calibration.shape[:3] != kspace.shape[:3]:
        raise ReconError(
            f"the calibration block {calibration.shape} does not match the k-space "
            f"{kspace.shape} in slices, coils and readout"
        )
    for index in range(kspace.shape[0]):
        block = kspace[index, :, :, start:stop] if calibration is None else calibration[index]
        acs = np.ascontiguousarray(block)
        for group in groups:
            weights = fit_kernel(acs, group, taps=taps, regularization=regularization)
            apply_kernel(kspace[index], group, weights=weights, taps=taps)


def irregular_groups(sampling: Sampling, *, blocks: int = DEFAULT_KERNEL[1]) -> list[GapGroup]:
    """The gap groups off the regular grid: every missing line whose nearest acquired lines
    are not R apart (beside an ACS block off the grid, before the first and after the last
    acquired line).

    >>> mask = np.zeros(16, bool); mask[::4] = True; mask[5:11] = True
    >>> [(g.sources, g.targets) for g in irregular_groups(Sampling(mask, (5, 11), 4))]
    [((0, 2), (1,)), ((0,), (1, 2, 3))]
    """
    rate = sampling.acceleration
    regular = ((0, rate), tuple(range(1, rate)))
    groups = gap_groups(sampling.mask, blocks=blocks, acs_lines=sampling.acs_lines)
    return [g for g in groups if (g.sources, g.targets) != regular]


def grappa(
    kspace: KSpace,
    *,
    kernel: tuple[int, int] = DEFAULT_KERNEL,
    regularization: float = DEFAULT_REGULARIZATION,
) -> Reconstruction:
    """GRAPPA images: `kernel` is (readout points, acquired lines); `regularization` is the
    Tikhonov λ relative to the largest singular value of the calibration matrix."""
    begin = perf_counter()
    reference = None if kspace.calibration is None else kspace.acs_data()
    full = grappa_kspace(
        kspace.data,
        kspace.sampling,
        kernel=kernel,
        regularization=regularization,
        calibration=reference,
    )
    images = kspace_to_images(full, kspace.header)
    settings = {
        "kernel": [int(k) for k in kernel],
        "regularization": float(regularization),
        "acceleration": kspace.sampling.acceleration,
        "acs_lines": kspace.sampling.acs_lines,
    }
    seconds = (perf_counter() - begin) / max(kspace.slices, 1)
    return Reconstruction(
        images=images, method="grappa", settings=settings, seconds_per_slice=seconds
    )
