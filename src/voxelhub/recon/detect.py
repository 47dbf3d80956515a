"""Find the sampled lines, the calibration (ACS) block and the acceleration R in k-space, and
refuse, with a message that says why, what cannot be reconstructed."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from voxelhub.recon.errors import ReconError
from voxelhub.recon.model import ComplexArray, Sampling

logger = logging.getLogger(__name__)

__all__ = ["ReconError", "check_kspace", "detect_sampling", "sampled_columns"]

MIN_ACS_LINES = 4


def check_kspace(data: npt.NDArray[np.generic], *, source: str = "k-space") -> None:
    """Refuse data that is not finite complex (slices, coils, readout, phase-encode) k-space
    with something in every slice."""
    if data.ndim != 4:
        raise ReconError(
            f"{source}: expected k-space shaped (slices, coils, readout, phase-encode), "
            f"got {data.ndim} dimensions {tuple(data.shape)}"
        )
    if not np.iscomplexobj(data):
        raise ReconError(f"{source}: k-space must be complex, got {data.dtype}")
    if 0 in data.shape:
        raise ReconError(f"{source}: k-space is empty, shape {tuple(data.shape)}")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise ReconError(
            f"{source}: k-space holds {bad} NaN or infinite samples; the file is damaged"
        )
    # An empty slice would be taken as acquired zeros: calibrated on, and shown as black.
    empty = np.flatnonzero(~data.reshape(data.shape[0], -1).any(axis=1))
    if empty.size:
        raise ReconError(
            f"{source}: slice(s) {', '.join(map(str, empty[:8].tolist()))} of {data.shape[0]} "
            "hold no data (every sample is zero); the file is damaged or the scan was "
            "stopped early"
        )


def sampled_columns(data: ComplexArray) -> npt.NDArray[np.bool_]:
    """Phase-encode columns that hold any non-zero sample, in any slice, coil or readout."""
    return np.asarray(np.any(data != 0, axis=(0, 1, 2)), dtype=bool)


def _runs(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """(start, stop) of every run of consecutive True values, shaped (runs, 2)."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.stack((np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)), axis=1)


def _acs_block(mask: npt.NDArray[np.bool_], *, center: int, source: str) -> tuple[int, int]:
    runs = _runs(mask)
    around = runs[(runs[:, 0] <= center) & (runs[:, 1] > center)]
    if not len(around):
        longest = int((runs[:, 1] - runs[:, 0]).max()) if len(runs) else 0
        raise ReconError(
            f"{source}: no ACS block: the k-space centre line {center} was not acquired "
            f"(longest run of consecutive lines: {longest}); GRAPPA and RAKI need a fully "
            "sampled calibration region at the centre"
        )
    start, stop = (int(v) for v in around[0])
    if stop - start < MIN_ACS_LINES:
        raise ReconError(
            f"{source}: no ACS block: only {stop - start} consecutive lines around the k-space "
            f"centre (line {center}); at least {MIN_ACS_LINES} are needed for calibration"
        )
    return start, stop


def _acceleration(mask: npt.NDArray[np.bool_], *, acs: tuple[int, int], source: str) -> int:
    outside = mask.copy()
    outside[acs[0] : acs[1]] = False
    lines = np.flatnonzero(outside)
    if outside.sum() + acs[1] - acs[0] == mask.size:
        return 1
    if not outside.any() and (acs[0] == 0 or acs[1] == mask.size):
        return 1  # partial Fourier, fully sampled: one block from the centre to an edge
    if len(lines) < 2:
        raise ReconError(
            f"{source}: only the calibration block ({acs[1] - acs[0]} lines) was acquired; "
            "there are no regularly sampled lines to reconstruct from"
        )
    below, above = lines[lines < acs[0]], lines[lines >= acs[1]]
    gaps = np.concatenate((np.diff(below), np.diff(above)))
    if not len(gaps):
        gaps = np.diff(lines)
    values, counts = np.unique(gaps, return_counts=True)
    # Lines are missing, so R is at least 2 even where acquired lines mostly sit side by side
    # (random masks): R = 1 would tell the methods there is nothing to fill.
    skipping = values > 1
    if not skipping.any():
        return 2
    return int(values[skipping][np.argmax(counts[skipping])])


def detect_sampling(
    data: ComplexArray,
    *,
    mask: npt.NDArray[np.bool_] | None = None,
    center: int | None = None,
    acceleration_hint: int | None = None,
    source: str = "k-space",
    require_acs: bool = True,
    reference: npt.NDArray[np.bool_] | None = None,
) -> Sampling:
    """The sampling of `data`: which lines, the ACS block around `center`, and R.

    `mask` overrides the lines found from non-zero columns (a reader that knows them says
    so); `center` is the k-space centre column (default: width // 2). R is the most common
    spacing of the lines outside the ACS block that skips lines (1 only when nothing is
    missing); a hint that disagrees is logged. Without an ACS block (fewer than
    `MIN_ACS_LINES` lines around the centre) this is a ReconError, or with `require_acs`
    False (for methods that do not calibrate) an empty block `(center, center)`.

    `reference` marks the lines of a separate reference scan (calibration only): the ACS
    block is then its run of lines around the centre, and R comes from all the imaging
    lines, which need no fully sampled centre.

    >>> from voxelhub.recon.masks import equispaced_mask
    >>> truth = equispaced_mask(96, 3, acs_lines=16)
    >>> data = np.ones((1, 2, 8, 96), np.complex64) * truth.mask
    >>> found = detect_sampling(data)
    >>> found.acs, found.acceleration
    ((39, 56), 3)
    """
    lines = sampled_columns(data) if mask is None else np.asarray(mask, dtype=bool)
    if lines.shape != (data.shape[-1],):
        raise ReconError(
            f"{source}: the sampling mask has {lines.size} entries for {data.shape[-1]} "
            "phase-encode columns"
        )
    middle = data.shape[-1] // 2 if center is None else int(center)
    if not 0 <= middle < lines.size:
        raise ReconError(
            f"{source}: the k-space centre {middle} lies outside the {lines.size} columns"
        )
    calibrated = lines if reference is None else np.asarray(reference, dtype=bool)
    if calibrated.shape != lines.shape:
        raise ReconError(
            f"{source}: the reference scan's mask has {calibrated.size} entries for "
            f"{lines.size} phase-encode columns"
        )
    try:
        acs = _acs_block(calibrated, center=middle, source=source)
    except ReconError:
        if require_acs:
            raise
        acs = (middle, middle)
    regular = acs if reference is None else (middle, middle)
    acceleration = _acceleration(lines, acs=regular, source=source)
    if acceleration_hint and int(acceleration_hint) != acceleration:
        logger.warning(
            "%s: the file says R=%s, the data show R=%s; using the data",
            source,
            acceleration_hint,
            acceleration,
        )
    return Sampling(mask=lines, acs=acs, acceleration=acceleration)
