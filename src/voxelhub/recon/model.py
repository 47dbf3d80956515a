"""Value objects of the reconstruction package."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from voxelhub.recon.errors import ReconError

ComplexArray = npt.NDArray[np.complex64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Sampling:
    """Which phase-encode lines were acquired.

    `mask` is a boolean vector over the phase-encode axis (True = sampled); `acs` the
    (start, stop) range of the fully sampled calibration block; `acceleration` R the
    spacing of the regular lines outside it.
    """

    mask: npt.NDArray[np.bool_]
    acs: tuple[int, int]
    acceleration: int

    @property
    def acs_lines(self) -> int:
        return self.acs[1] - self.acs[0]


@dataclass(frozen=True)
class Calibration:
    """A separate reference scan: lines acquired only to calibrate parallel imaging.

    `data` is complex64, shaped (slices, coils, readout, reference lines), the lines in
    increasing phase-encode order; `lines` says which phase-encode column (of the k-space
    it belongs to) each one is. It may have another contrast than the image, so it is never
    put into the image: the methods calibrate on it and fill every missing imaging line.
    """

    data: ComplexArray
    lines: npt.NDArray[np.intp]

    def __post_init__(self) -> None:
        lines = np.asarray(self.lines, dtype=np.intp).reshape(-1)
        object.__setattr__(self, "lines", lines)
        if self.data.ndim != 4 or lines.shape != (self.data.shape[-1],):
            raise ReconError(
                f"a calibration block is (slices, coils, readout, lines) with one phase-encode "
                f"index per line; got data {self.data.shape} and {lines.size} indices"
            )
        if lines.size > 1 and not (np.diff(lines) > 0).all():
            raise ReconError("the calibration lines must be in increasing phase-encode order")

    def block(self, acs: tuple[int, int]) -> ComplexArray:
        """The reference lines `acs[0]` to `acs[1] - 1`, which it must all hold.

        >>> lines = np.arange(10, 16)
        >>> ref = Calibration(np.zeros((1, 2, 4, 6), np.complex64), lines)
        >>> ref.block((11, 15)).shape
        (1, 2, 4, 4)
        """
        wanted = np.arange(*acs)
        where = np.searchsorted(self.lines, wanted)
        if wanted.size and (where[-1] >= self.lines.size or (self.lines[where] != wanted).any()):
            raise ReconError(f"the reference scan does not hold every line of {acs}")
        start = int(where[0]) if wanted.size else 0
        return self.data[..., start : start + wanted.size]


@dataclass(frozen=True)
class KSpace:
    """Multi-coil Cartesian k-space of one acquisition.

    `data` is complex64, shaped (slices, coils, readout, phase-encode); columns outside
    the encoding limits (padding) are already removed. `header` keeps what the source file
    said (matrix size, field of view, sequence parameters, patient/study info if any) for
    the DICOM writer. `calibration` is a separate reference scan (see `Calibration`):
    then `data` holds the imaging lines only and `sampling.acs` is the reference's block.
    """

    data: ComplexArray
    sampling: Sampling
    header: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    calibration: Calibration | None = None

    def with_slices(self, chosen: list[int] | npt.NDArray[np.intp]) -> KSpace:
        """The same acquisition reduced to slices `chosen` (its reference scan too)."""
        calibration = self.calibration
        if calibration is not None:
            calibration = replace(calibration, data=calibration.data[chosen])
        return replace(self, data=self.data[chosen], calibration=calibration)

    def acs_data(self) -> ComplexArray:
        """The lines the methods calibrate on (slices, coils, readout, ACS lines): the
        separate reference scan's ACS block, else the ACS block of `data`."""
        if self.calibration is not None:
            return self.calibration.block(self.sampling.acs)
        start, stop = self.sampling.acs
        return self.data[..., start:stop]

    @property
    def slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def coils(self) -> int:
        return int(self.data.shape[1])


@dataclass(frozen=True)
class Reconstruction:
    """Magnitude images (slices x rows x columns, float32) and how they were made."""

    images: FloatArray
    method: str
    settings: dict[str, Any] = field(default_factory=dict)
    seconds_per_slice: float = 0.0
