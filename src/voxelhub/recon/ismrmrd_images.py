"""Sorting ISMRMRD acquisitions into images and putting their lines on the k-space grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from voxelhub.recon.errors import ReconError
from voxelhub.recon.model import ComplexArray

Records = npt.NDArray[np.void]


IMAGE_COUNTERS = ("set", "repetition", "phase", "contrast", "slice")


def image_index(heads: Records) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Which image each acquisition belongs to, and the counters (set, repetition, phase,
    contrast, slice) of each image."""
    counters = np.stack(
        [heads["idx"][name].astype(np.intp) for name in IMAGE_COUNTERS], axis=1
    ).reshape(len(heads), len(IMAGE_COUNTERS))
    found, inverse = np.unique(counters, axis=0, return_inverse=True)
    return inverse.reshape(-1), found


def image_keys(found: npt.NDArray[np.intp]) -> dict[str, Any]:
    """The header keys that name each image's counters, when more than the slice varies."""
    if len(np.unique(found[:, :-1], axis=0)) <= 1:
        return {}
    return {"images": [dict(zip(IMAGE_COUNTERS, map(int, row), strict=True)) for row in found]}


def check_same_lines(
    slices: npt.NDArray[np.intp],
    columns: npt.NDArray[np.intp],
    *,
    found: npt.NDArray[np.intp],
    low: int,
    width: int,
    name: str,
) -> None:
    """Refuse images that lack lines the others hold: one sampling mask serves them all, and
    a line it calls acquired but an image lacks would be taken as acquired zeros."""
    present = np.zeros((len(found), width), dtype=bool)
    present[slices, columns] = True
    union = present.any(axis=0)
    short = np.flatnonzero((present != union).any(axis=1))
    if not short.size:
        return
    row = found[short[0]]
    image = ", ".join(
        f"{counter} {value}"
        for counter, value in zip(IMAGE_COUNTERS, row.tolist(), strict=True)
        if value or counter == "slice"
    )
    missing = np.flatnonzero(union & ~present[short[0]]) + low
    shown = ", ".join(map(str, missing[:8].tolist())) + (", ..." if missing.size > 8 else "")
    raise ReconError(
        f"{name}: the image of {image} lacks {missing.size} of the {int(union.sum())} "
        f"phase-encode lines the others hold (kspace_encode_step_1 {shown}); every slice, "
        "echo and repetition must sample the same lines: was the scan stopped early, or the "
        "calibration acquired for one of them only?"
    )


def grid(
    lines: ComplexArray,
    slices: npt.NDArray[np.intp],
    *,
    columns: npt.NDArray[np.intp],
    shape: tuple[int, int, int, int],
    start: int,
) -> ComplexArray:
    """Put lines into (slices, coils, readout, phase-encode), averaging repeated lines."""
    kspace = np.zeros(shape, dtype=np.complex64)
    window = slice(start, start + lines.shape[-1])
    keys = slices * shape[-1] + columns
    unique, first, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    if unique.size == keys.size:
        kspace[slices, :, window, columns] = lines
        return kspace
    sums = np.zeros((unique.size, *lines.shape[1:]), dtype=np.complex64)
    np.add.at(sums, inverse, lines)
    kspace[slices[first], :, window, columns[first]] = sums / counts[:, None, None]
    return kspace


def geometry(heads: Records, slices: npt.NDArray[np.intp]) -> dict[str, Any]:
    """The header keys of the images' positions (mm) and orientation."""
    _, first = np.unique(slices, return_index=True)
    directions = {key: heads[key][0].tolist() for key in ("read_dir", "phase_dir", "slice_dir")}
    return {"slice_positions_mm": heads["position"][first].tolist(), **directions}


# ISMRMRD leaves the unit of `physiology_time_stamp` to the vendor; scanners count it in ticks
# of 2.5 ms (Siemens' PMU clock, which siemens_to_ismrmrd copies and Gadgetron's cine
# reconstruction assumes), element 0 being the time since the last ECG trigger.
PHYSIOLOGY_TICK_MS = 2.5


def trigger_times(
    heads: Records, slices: npt.NDArray[np.intp], found: npt.NDArray[np.intp]
) -> dict[str, Any]:
    """The header key of each image's trigger time (ms after the R wave) when the file holds
    several cardiac phases and its acquisitions carry ECG time stamps: the median stamp of
    the image's acquisitions (the lines of a segmented cine come from many heartbeats, at
    nearly the same delay). Nothing when the stamps are all zero: that is no trigger time.

    >>> from voxelhub.recon.ismrmrd_types import ACQUISITION_HEADER
    >>> heads = np.zeros(4, dtype=ACQUISITION_HEADER)
    >>> heads["physiology_time_stamp"][:, 0] = (0, 2, 160, 162)
    >>> found = np.array([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    >>> trigger_times(heads, np.array([0, 0, 1, 1]), found)
    {'trigger_times_ms': [2.5, 402.5]}
    """
    stamps = heads["physiology_time_stamp"][:, 0].astype(np.float64)
    phases = found[:, IMAGE_COUNTERS.index("phase")]
    if len(np.unique(phases)) <= 1 or not stamps.any():
        return {}
    times = [float(np.median(stamps[slices == image])) for image in range(len(found))]
    return {"trigger_times_ms": [time * PHYSIOLOGY_TICK_MS for time in times]}
