"""GRAPPA kernels for a batch of slices as tensors on the learned methods' device.

The same fit as `grappa.fit_kernel` (Tikhonov-regularised least squares on the ACS block,
λ relative to the largest singular value of the source matrix, found by power iteration)
and the same application as `grappa.apply_kernel`, for every slice of a batch at once, so
that RAKI and residual RAKI on a GPU need not bring their k-space back to the host for the
lines off the regular grid or for residual RAKI's linear branch. Weights are laid out as
`grappa.fit_kernel` lays them out: rows (tap, coil, source), columns (coil, target line).
"""

from __future__ import annotations

import torch

from voxelhub.recon.gaps import GapGroup
from voxelhub.recon.grappa import check_calibration
from voxelhub.recon.model import Sampling

POWER_ITERATIONS = 30


def _offsets(values: tuple[int, ...], bases: torch.Tensor) -> torch.Tensor:
    """Line indices (bases x offsets) of every occurrence."""
    offsets = torch.as_tensor(values, dtype=torch.long, device=bases.device)
    return bases[:, None] + offsets


def calibration(
    acs: torch.Tensor, group: GapGroup, *, taps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source patches (slices, positions, taps·coils·sources) and targets (slices,
    positions, coils·targets) of every kernel position inside the ACS blocks (slices,
    coils, readout, lines)."""
    offsets = group.sources + group.targets
    positions = torch.arange(-min(offsets), acs.shape[-1] - max(offsets), device=acs.device)
    slices, coils, readout = acs.shape[:3]
    sources = acs[..., _offsets(group.sources, positions)]  # (S, C, X, P, sources)
    windows = sources.unfold(2, taps, 1)  # (S, C, X - taps + 1, P, sources, taps)
    patches = windows.permute(0, 2, 3, 5, 1, 4).reshape(
        slices, -1, taps * coils * len(group.sources)
    )
    half = taps // 2
    targets = acs[:, :, half : half + readout - taps + 1][..., _offsets(group.targets, positions)]
    return patches, targets.permute(0, 2, 3, 1, 4).reshape(slices, patches.shape[1], -1)


def _largest_eigenvalues(gram: torch.Tensor) -> torch.Tensor:
    """σ₁² of each calibration matrix (slices,) by power iteration on its Gram matrix."""
    vector = torch.ones(*gram.shape[:2], 1, dtype=gram.dtype, device=gram.device)
    value = torch.zeros(gram.shape[0], dtype=torch.float64, device=gram.device)
    for _ in range(POWER_ITERATIONS):
        product = torch.bmm(gram, vector)
        value = torch.linalg.vector_norm(product, dim=(1, 2))
        vector = product / value.clamp_min(1e-300)[:, None, None]
    return value


def fit_kernels(
    acs: torch.Tensor, group: GapGroup, *, taps: int, regularization: float
) -> torch.Tensor:
    """Complex weights (slices, taps·coils·sources, coils·targets) per slice minimising
    ‖S W - T‖² + (λσ₁)²‖W‖² on that slice's ACS block (complex64, slices x coils x readout
    x lines)."""
    patches, targets = calibration(acs, group, taps=taps)
    check_calibration(patches.shape[1], patches.shape[2], lines=acs.shape[-1], samples=acs.shape[2])
    adjoint = patches.mH
    gram = torch.bmm(adjoint, patches).to(torch.complex128)
    rhs = torch.bmm(adjoint, targets).to(torch.complex128)
    damping = regularization**2 * _largest_eigenvalues(gram).clamp_min(1e-30)
    gram.diagonal(dim1=1, dim2=2).add_(damping[:, None])
    factor, info = torch.linalg.cholesky_ex(gram)
    weights = torch.cholesky_solve(rhs, factor)
    singular = info != 0
    if bool(singular.any()):
        # λ = 0 on a rank-deficient calibration (a dead coil): the minimum-norm solution.
        pseudo = torch.linalg.pinv(gram[singular], hermitian=True)
        weights[singular] = torch.bmm(pseudo, rhs[singular])
    return weights.to(torch.complex64)


def apply_kernels(
    kspace: torch.Tensor, group: GapGroup, *, weights: torch.Tensor, taps: int
) -> None:
    """Fill the group's missing lines of every slice of `kspace` (slices, coils, readout,
    phase-encode) in place, slice s with weights[s]."""
    slices, coils, readout = kspace.shape[:3]
    bases = torch.as_tensor(group.bases, dtype=torch.long, device=kspace.device)
    source = kspace[..., _offsets(group.sources, bases)]  # (S, C, X, B, sources)
    half = taps // 2
    padded = source.new_zeros(slices, coils, readout + taps - 1, *source.shape[3:])
    padded[:, :, half : half + readout] = source
    windows = padded.unfold(2, taps, 1)  # (S, C, X, B, sources, taps)
    patches = windows.permute(0, 2, 3, 5, 1, 4).reshape(slices, -1, weights.shape[1])
    filled = torch.bmm(patches, weights).reshape(slices, readout, bases.numel(), coils, -1)
    kspace[..., _offsets(group.targets, bases)] = filled.permute(0, 3, 1, 2, 4)


def fill_groups(
    kspace: torch.Tensor, sampling: Sampling, groups: list[GapGroup], *, taps: int,
    regularization: float, calibration: torch.Tensor | None = None,
) -> None:  # fmt: skip
    """`grappa.fill_groups` for a tensor of k-space, every slice of it at once; kernels are
    calibrated on `calibration` (a separate reference scan's ACS blocks) where given."""
    start, stop = sampling.acs
    acs = kspace[..., start:stop].clone() if calibration is None else calibration
    for group in groups:
        weights = fit_kernels(acs, group, taps=taps, regularization=regularization)
        apply_kernels(kspace, group, weights=weights, taps=taps)
