"""Where GRAPPA-like methods must fill: the missing phase-encode lines, grouped by the
geometry of the acquired lines around them (one kernel per group)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxelhub.recon.errors import ReconError


@dataclass(frozen=True)
class GapGroup:
    """Missing lines that share one kernel geometry.

    Offsets are in lines from each occurrence's base line (the acquired line just below the
    gap, or the first acquired line for the gap at the k-space edge): `sources` are the
    acquired lines the kernel reads, `targets` the missing lines it writes.
    """

    sources: tuple[int, ...]
    targets: tuple[int, ...]
    bases: npt.NDArray[np.intp]

    @property
    def span(self) -> int:
        offsets = self.sources + self.targets
        return max(offsets) - min(offsets) + 1


def _gap(
    lines: npt.NDArray[np.intp], index: int, width: int, blocks: int
) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    below, above = blocks // 2, blocks - blocks // 2
    first = int(lines[index]) + 1 if index >= 0 else 0
    stop = int(lines[index + 1]) if index + 1 < lines.size else width
    base = int(lines[max(index, 0)])
    sources = (
        np.concatenate(
            (lines[max(0, index - below + 1) : index + 1], lines[index + 1 : index + 1 + above])
        )
        - base
    )
    return base, tuple(int(s) for s in sources), tuple(range(first - base, stop - base))


def _fit_to(group: GapGroup, acs_lines: int) -> GapGroup:
    """Drop the sources farthest from the targets until the geometry fits in the ACS."""
    trimmed, middle = group, float(np.mean(group.targets))
    while len(trimmed.sources) > 1 and trimmed.span > acs_lines:
        farthest = max(trimmed.sources, key=lambda s: abs(s - middle))
        sources = tuple(s for s in trimmed.sources if s != farthest)
        trimmed = GapGroup(sources, group.targets, group.bases)
    if trimmed.span > acs_lines:
        raise ReconError(
            f"the ACS block ({acs_lines} lines) is too small to calibrate a gap of "
            f"{len(group.targets)} missing lines; acquire more calibration lines"
        )
    return trimmed


def gap_groups(mask: npt.NDArray[np.bool_], *, blocks: int, acs_lines: int) -> list[GapGroup]:
    """The missing lines of `mask`, grouped by the `blocks` nearest acquired lines around
    them (half below, half above), each geometry trimmed to fit in `acs_lines`. A gap at a
    k-space edge wider than every gap between acquired lines (partial Fourier) is left out:
    its lines stay zero.

    >>> mask = np.zeros(12, bool); mask[::3] = True; mask[4:8] = True
    >>> [(g.sources, g.targets, g.bases.tolist()) for g in gap_groups(mask, blocks=2, acs_lines=4)]
    [((0, 3), (1, 2), [0]), ((0, 2), (1,), [7]), ((0,), (1, 2), [9])]
    """
    lines = np.flatnonzero(mask)
    if lines.size == 0:
        raise ReconError("no phase-encode line was acquired")
    # An edge gap wider than every gap between acquired lines is not undersampling but
    # partial Fourier: extrapolating a kernel across it makes the image worse than zeros.
    widest = int(np.diff(lines).max()) - 1 if lines.size > 1 else 0
    found: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}
    for index in range(-1, lines.size):
        base, sources, targets = _gap(lines, index, mask.size, blocks)
        edge = index in (-1, lines.size - 1)
        if targets and not (edge and len(targets) > widest):
            found.setdefault((sources, targets), []).append(base)
    groups = [GapGroup(s, t, np.asarray(b, dtype=np.intp)) for (s, t), b in found.items()]
    return [_fit_to(group, acs_lines) for group in groups]
