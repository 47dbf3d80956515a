"""ISMRMRD HDF5: read and write Cartesian acquisitions (`/dataset/xml`, `/dataset/data`).

Reading is in bulk: the whole compound dataset comes in with one h5py call and is sorted into
k-space with array indexing. Noise scans are set aside (and can prewhiten the data);
navigator, phase-correction and dummy scans are ignored; reversed lines are flipped; repeated
lines (averages, calibration lines also acquired for imaging) are averaged. Each combination
of set, repetition, cardiac phase and contrast (echo) is an image of its own, never averaged
with the others: they are stacked along the slice axis, slices varying fastest, and
`KSpace.header["images"]` then names the counters of each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from voxelhub.recon import ismrmrd_types as mrd
from voxelhub.recon.detect import check_kspace, detect_sampling
from voxelhub.recon.errors import ReconError
from voxelhub.recon.h5 import open_h5, read_string
from voxelhub.recon.header import format_header, parse_header
from voxelhub.recon.model import ComplexArray, KSpace
from voxelhub.recon.noise import noise_covariance, prewhiten, prewhitening_matrix

logger = logging.getLogger(__name__)

NOISE_SAMPLES_PER_SCAN = 256
Records = npt.NDArray[np.void]


@dataclass(frozen=True)
class IsmrmrdData:
    """The k-space of a file and its noise samples (coils x samples; empty if none)."""

    kspace: KSpace
    noise: ComplexArray


def _flagged(flags: npt.NDArray[np.uint64], *numbers: int) -> npt.NDArray[np.bool_]:
    return np.asarray((flags & mrd.bits(*numbers)) != 0)


def _uniform(values: npt.NDArray[Any], *, what: str, name: str) -> int:
    unique = np.unique(values)
    if unique.size != 1:
        raise ReconError(
            f"{name}: acquisitions differ in {what} ({unique.tolist()}); cannot stack them"
        )
    return int(unique[0])


def _stack(records: Records, name: str) -> ComplexArray:
    """(acquisitions, channels, samples) complex64 from interleaved float32 payloads."""
    heads = records["head"]
    channels = _uniform(heads["active_channels"], what="active_channels", name=name)
    samples = _uniform(heads["number_of_samples"], what="number_of_samples", name=name)
    flat = np.concatenate(records["data"]) if len(records) else np.zeros(0, np.float32)
    if flat.size != len(records) * channels * samples * 2:
        raise ReconError(f"{name}: acquisition payloads do not match their headers' sizes")
    return flat.astype(np.float32).view(np.complex64).reshape(len(records), channels, samples)


def _drop_discarded(lines: ComplexArray, heads: Records, *, name: str) -> None:
    """Zero, in place, the `discard_pre` first and `discard_post` last samples of each
    acquisition (asymmetric echo, filter settling): they are not data, so they are left
    unacquired as in Gadgetron's BucketToBuffer. The kept samples stay where they are on the
    readout (`center_sample` counts every stored sample); the counts refer to the samples
    as stored, before a reversed line is flipped.

    >>> heads = np.zeros(2, dtype=mrd.ACQUISITION_HEADER)
    >>> heads["discard_pre"], heads["discard_post"] = (1, 0), (0, 2)
    >>> lines = np.ones((2, 1, 4), np.complex64)
    >>> _drop_discarded(lines, heads, name="meas.h5")
    >>> lines.real.astype(int).tolist()
    [[[0, 1, 1, 1]], [[1, 1, 0, 0]]]
    """
    pre = heads["discard_pre"].astype(np.intp)
    post = heads["discard_post"].astype(np.intp)
    if not (pre.any() or post.any()):
        return
    samples = lines.shape[-1]
    over = np.flatnonzero(pre + post >= samples)
    if over.size:
        first = int(over[0])
        raise ReconError(
            f"{name}: acquisition {int(heads['scan_counter'][first])} discards every sample "
            f"(discard_pre {pre[first]} and discard_post {post[first]} of {samples}); the "
            "headers are damaged"
        )
    index = np.arange(samples)
    dropped = (index < pre[:, None]) | (index >= samples - post[:, None])
    lines[np.broadcast_to(dropped[:, None, :], lines.shape)] = 0


def _read(path: str | Path, name: str) -> tuple[dict[str, Any], Records]:
    with open_h5(path) as handle:
        data, xml = handle.get("dataset/data"), handle.get("dataset/xml")
        if not isinstance(data, h5py.Dataset) or data.dtype.names is None:
            raise ReconError(f"{name} has no ISMRMRD acquisitions (/dataset/data) and no 'kspace'")
        if xml is None:
            raise ReconError(f"{name} has no ISMRMRD header (/dataset/xml)")
        try:
            header = parse_header(read_string(xml, what=f"{name}: /dataset/xml"))
        except ReconError as err:
            raise ReconError(f"{name}: {err}") from err
        if "head" not in data.dtype.names or "data" not in data.dtype.names:
            raise ReconError(f"{name}: /dataset/data is not an ISMRMRD acquisition table")
        return header, np.asarray(data[()])


def _check_cartesian(header: dict[str, Any], heads: Records, *, name: str) -> None:
    if header["trajectory"] != "cartesian" or np.any(heads["trajectory_dimensions"] > 0):
        raise ReconError(
            f"{name}: the trajectory is {header['trajectory']!r} (or acquisitions carry "
            "trajectories); only Cartesian k-space can be reconstructed"
        )
    if np.any(heads["idx"]["kspace_encode_step_2"] > 0):
        raise ReconError(f"{name}: 3-D encoding (kspace_encode_step_2 > 0) is not supported")


def _columns(header: dict[str, Any], heads: Records, *, name: str) -> npt.NDArray[np.intp]:
    low, high = (int(v) for v in header["pe_limits"][:2])
    step = heads["idx"]["kspace_encode_step_1"].astype(np.intp)
    if step.size and (step.min() < low or step.max() > high):
        raise ReconError(
            f"{name}: lines {step.min()}-{step.max()} lie outside the header's encoding limits "
            f"{low}-{high}; header and data disagree"
        )
    return step - low


def _readout_start(header: dict[str, Any], heads: Records, *, samples: int, name: str) -> int:
    readout = int(header["encoded_matrix"][0])
    if samples == readout:
        return 0
    center = _uniform(heads["center_sample"], what="center_sample", name=name)
    start = readout // 2 - center if center else (readout - samples) // 2
    if samples > readout or not 0 <= start <= readout - samples:
        raise ReconError(
            f"{name}: {samples} samples per line (centre {center}) do not fit the encoded "
            f"readout of {readout}; header and data disagree"
        )
    return start


def _grid(
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


_IMAGE_COUNTERS = ("set", "repetition", "phase", "contrast", "slice")


def _image_index(heads: Records) -> tuple[npt.NDArray[np.intp], dict[str, Any]]:
    """Which image (slice, contrast, phase, repetition, set) each acquisition belongs to, and
    the header keys that say so when more than the slice varies."""
    counters = np.stack(
        [heads["idx"][name].astype(np.intp) for name in _IMAGE_COUNTERS], axis=1
    ).reshape(len(heads), len(_IMAGE_COUNTERS))
    found, inverse = np.unique(counters, axis=0, return_inverse=True)
    if len(np.unique(found[:, :-1], axis=0)) <= 1:
        return inverse.reshape(-1), {}
    images = [dict(zip(_IMAGE_COUNTERS, map(int, row), strict=True)) for row in found]
    return inverse.reshape(-1), {"images": images}


def _geometry(heads: Records, slices: npt.NDArray[np.intp]) -> dict[str, Any]:
    _, first = np.unique(slices, return_index=True)
    directions = {key: heads[key][0].tolist() for key in ("read_dir", "phase_dir", "slice_dir")}
    return {"slice_positions_mm": heads["position"][first].tolist(), **directions}


def _imaging(header: dict[str, Any], records: Records, *, name: str) -> tuple[ComplexArray, Any]:
    heads = records["head"]
    _check_cartesian(header, heads, name=name)
    columns = _columns(header, heads, name=name)
    lines = _stack(records, name)
    _drop_discarded(lines, heads, name=name)
    reverse = _flagged(heads["flags"], mrd.REVERSE)
    lines[reverse] = lines[reverse, :, ::-1]
    slices, images = _image_index(heads)
    low, high = (int(v) for v in header["pe_limits"][:2])
    shape = (
        int(slices.max()) + 1,
        lines.shape[1],
        int(header["encoded_matrix"][0]),
        high - low + 1,
    )
    start = _readout_start(header, heads, samples=lines.shape[-1], name=name)
    mask = np.zeros(shape[-1], dtype=bool)
    mask[columns] = True
    header.update({**_geometry(heads, slices), **images})
    return _grid(lines, slices, columns=columns, shape=shape, start=start), mask


def _noise(records: Records, name: str) -> ComplexArray:
    """Noise samples (channels x samples) of the noise scans; (0, 0) when there are none."""
    if not len(records):
        return np.zeros((0, 0), dtype=np.complex64)
    lines = _stack(records, name)
    return np.ascontiguousarray(lines.transpose(1, 0, 2).reshape(lines.shape[1], -1))


def _whitening(noise: ComplexArray, *, name: str) -> npt.NDArray[np.complex128]:
    """The prewhitening matrix of the file's noise scans, or why they cannot give one."""
    if not np.isfinite(noise).all():
        bad = int(np.count_nonzero(~np.isfinite(noise)))
        raise ReconError(
            f"{name}: the noise scans hold {bad} NaN or infinite samples; they are damaged: "
            "reconstruct without prewhitening"
        )
    try:
        return prewhitening_matrix(noise_covariance(noise))
    except ReconError as err:
        raise ReconError(
            f"{name}: {err} (is a channel dead or disconnected?); reconstruct without prewhitening"
        ) from err


def load_ismrmrd(
    path: str | Path, *, prewhiten_noise: bool = False, require_acs: bool = True
) -> IsmrmrdData:
    """k-space and noise of an ISMRMRD file; `prewhiten_noise` decorrelates the coils with
    the covariance of the file's noise scans (a warning if it has none); `require_acs`
    False accepts data without an ACS block (for methods that do not calibrate)."""
    name = Path(path).name
    header, records = _read(path, name)
    flags = records["head"]["flags"]
    noisy = _flagged(flags, mrd.NOISE_MEASUREMENT)
    imaging = ~_flagged(flags, *mrd.NOT_IMAGING)
    if not imaging.any():
        raise ReconError(f"{name} holds no imaging acquisitions ({len(records)} in all)")
    noise = _noise(records[noisy], name)
    data, mask = _imaging(header, records[imaging], name=name)
    check_kspace(data, source=name)
    if prewhiten_noise and noise.size and noise.shape[0] != data.shape[1]:
        raise ReconError(
            f"{name}: noise scans have {noise.shape[0]} channels, data {data.shape[1]}"
        )
    if prewhiten_noise and noise.size:
        data = prewhiten(data, _whitening(noise, name=name))
    elif prewhiten_noise:
        logger.warning("%s: no noise scans, so the data are not prewhitened", name)
    limits = header["pe_limits"]
    sampling = detect_sampling(
        data,
        mask=mask,
        center=int(limits[2]) - int(limits[0]),
        source=name,
        require_acs=require_acs,
    )
    header.update(
        {
            "format": "ismrmrd",
            "noise_scans": int(noisy.sum()),
            "prewhitened": bool(prewhiten_noise and noise.size),
        }
    )
    return IsmrmrdData(KSpace(data=data, sampling=sampling, header=header, source=str(path)), noise)


def read_ismrmrd(
    path: str | Path, *, prewhiten_noise: bool = False, require_acs: bool = True
) -> KSpace:
    """k-space of an ISMRMRD file (see `load_ismrmrd`)."""
    return load_ismrmrd(path, prewhiten_noise=prewhiten_noise, require_acs=require_acs).kspace


def _line_flags(kspace: KSpace, columns: npt.NDArray[np.intp]) -> npt.NDArray[np.uint64]:
    sampling = kspace.sampling
    in_acs = (columns >= sampling.acs[0]) & (columns < sampling.acs[1])
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


def write_ismrmrd(
    path: str | Path,
    kspace: KSpace,
    *,
    noise: ComplexArray | None = None,
    reverse_alternate: bool = False,
) -> None:
    """Write the sampled lines of `kspace` as ISMRMRD acquisitions, slice by slice.

    ACS lines carry the calibration flags; `noise` (coils x samples) is written first as
    noise scans of 256 samples; `reverse_alternate` stores every other line reversed and
    flagged ACQ_IS_REVERSE, as an EPI or bipolar readout would.
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
    records = _records(lines, heads)
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
