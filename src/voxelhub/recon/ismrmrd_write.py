"""ISMRMRD HDF5 writing: the sampled lines of k-space as Cartesian acquisitions, as a scanner
export would hold them (calibration flags, noise scans, reversed lines)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt

from voxelhub.recon import ismrmrd_types as mrd
from voxelhub.recon.header import format_header
from voxelhub.recon.model import ComplexArray, KSpace

NOISE_SAMPLES_PER_SCAN = 256
Records = npt.NDArray[np.void]


def _line_flags(kspace: KSpace, columns: npt.NDArray[np.intp]) -> npt.NDArray[np.uint64]:
    sampling = kspace.sampling
    in_acs = (columns >= sampling.acs[0]) & (columns < sampling.acs[1])
    if kspace.calibration is not None:  # the calibration lines are the reference scan's
        in_acs[:] = False
    regular = columns[~in_acs]
    phase = int(regular[0]) % sampling.acceleration if regular.size else 0
    on_lattice = (columns - phase) % sampling.acceleration == 0
    flags = np.zeros(columns.size, dtype=np.uint64)
    flags[in_acs & on_lattice] = mrd.bits(mrd.PARALLEL_CALIBRATION_AND_IMAGING)
    flags[in_acs & ~on_lattice] = mrd.bits(mrd.PARALLEL_CALIBRATION)
    flags[0] |= mrd.bits(mrd.FIRST_IN_SLICE)
    flags[-1] |= mrd.bits(mrd.LAST_IN_SLICE)
    return flags


def _records(lines: ComplexArray, heads: Records) -> Records:
    records = np.zeros(len(heads), dtype=mrd.ACQUISITION)
    records["head"] = heads
    payload = lines.view(np.float32).reshape(len(heads), -1)
    data, traj = np.empty(len(heads), dtype=object), np.empty(len(heads), dtype=object)
    for index, row in enumerate(payload):
        data[index], traj[index] = row, np.zeros(0, np.float32)
    records["data"], records["traj"] = data, traj
    return records


def _heads(count: int, *, channels: int, samples: int) -> Records:
    heads = np.zeros(count, dtype=mrd.ACQUISITION_HEADER)
    heads["version"] = 1
    heads["scan_counter"] = np.arange(count)
    heads["number_of_samples"] = samples
    heads["available_channels"] = heads["active_channels"] = channels
    heads["channel_mask"][:, 0] = np.uint64((1 << min(channels, 64)) - 1)
    heads["center_sample"] = samples // 2
    heads["sample_time_us"] = 5.0
    heads["read_dir"], heads["phase_dir"], heads["slice_dir"] = (1, 0, 0), (0, 1, 0), (0, 0, 1)
    return heads


def _noise_records(noise: ComplexArray) -> Records:
    channels = noise.shape[0]
    scans = noise.shape[1] // NOISE_SAMPLES_PER_SCAN
    lines = noise[:, : scans * NOISE_SAMPLES_PER_SCAN].reshape(channels, scans, -1)
    heads = _heads(scans, channels=channels, samples=NOISE_SAMPLES_PER_SCAN)
    heads["flags"] = mrd.bits(mrd.NOISE_MEASUREMENT)
    return _records(np.ascontiguousarray(lines.transpose(1, 0, 2)), heads)


def _reference_records(kspace: KSpace, *, low: int) -> Records:
    """The separate reference scan as calibration-only acquisitions, slice by slice."""
    if kspace.calibration is None:
        return np.zeros(0, dtype=mrd.ACQUISITION)
    data, columns = kspace.calibration.data, kspace.calibration.lines
    slices, coils, readout, _ = data.shape
    slice_index = np.repeat(np.arange(slices), columns.size)
    lines = np.ascontiguousarray(data[slice_index, :, :, np.tile(np.arange(columns.size), slices)])
    heads = _heads(lines.shape[0], channels=coils, samples=readout)
    heads["flags"] = mrd.bits(mrd.PARALLEL_CALIBRATION)
    heads["idx"]["kspace_encode_step_1"] = np.tile(columns, slices) + low
    heads["idx"]["slice"] = slice_index
    fov = float(kspace.header.get("encoded_fov_mm", [0, 0, 1])[2])
    heads["position"][:, 2] = slice_index * fov
    return _records(lines, heads)


def write_ismrmrd(
    path: str | Path,
    kspace: KSpace,
    *,
    noise: ComplexArray | None = None,
    reverse_alternate: bool = False,
) -> None:
    """Write the sampled lines of `kspace` as ISMRMRD acquisitions, slice by slice.

    ACS lines carry the calibration flags; a separate reference scan
    (`KSpace.calibration`) is written before the imaging lines as calibration-only
    acquisitions, and the imaging lines then carry no calibration flag; `noise` (coils x
    samples) is written first as noise scans of 256 samples; `reverse_alternate` stores every
    other line reversed and flagged ACQ_IS_REVERSE, as an EPI or bipolar readout would.
    """
    slices, coils, readout, _ = kspace.data.shape
    columns = np.flatnonzero(kspace.sampling.mask)
    slice_index = np.repeat(np.arange(slices), columns.size)
    column_index = np.tile(columns, slices)
    lines = np.ascontiguousarray(kspace.data[slice_index, :, :, column_index])
    heads = _heads(lines.shape[0], channels=coils, samples=readout)
    heads["flags"] = np.tile(_line_flags(kspace, columns), slices)
    low = int(kspace.header.get("pe_limits", [0])[0])
    heads["idx"]["kspace_encode_step_1"] = column_index + low
    heads["idx"]["slice"] = slice_index
    heads["position"][:, 2] = slice_index * float(kspace.header.get("encoded_fov_mm", [0, 0, 1])[2])
    if reverse_alternate:
        reverse = np.arange(lines.shape[0]) % 2 == 1
        heads["flags"][reverse] |= mrd.bits(mrd.REVERSE)
        lines[reverse] = lines[reverse, :, ::-1]
    records = np.concatenate((_reference_records(kspace, low=low), _records(lines, heads)))
    if noise is not None and noise.shape[1] >= NOISE_SAMPLES_PER_SCAN:
        records = np.concatenate((_noise_records(noise.astype(np.complex64)), records))
    header = {
        "pe_limits": [0, kspace.data.shape[-1] - 1, kspace.data.shape[-1] // 2],
        "encoded_matrix": [readout, kspace.data.shape[-1], 1],
        **kspace.header,
    }
    xml = format_header(header, coils=coils, slices=slices)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("dataset/xml", data=[xml.encode()], dtype=h5py.string_dtype())
        handle.create_dataset("dataset/data", data=records, maxshape=(None,), chunks=True)
