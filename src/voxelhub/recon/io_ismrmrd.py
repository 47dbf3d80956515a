"""ISMRMRD HDF5: read Cartesian acquisitions (`/dataset/xml`, `/dataset/data`); writing is
`voxelhub.recon.ismrmrd_write`.

Reading is in bulk: the whole compound dataset comes in with one h5py call and is sorted into
k-space with array indexing. Noise scans are set aside (and can prewhiten the data);
navigator, phase-correction, feedback, phase-stabilisation and dummy scans are ignored;
reversed lines are flipped; repeated lines (averages) are averaged. Calibration-only lines
(ACQ_IS_PARALLEL_CALIBRATION) where no imaging acquisition is complete an integrated ACS
block. When some of them hold lines that imaging acquisitions hold too, they are a separate
reference scan (maybe of another contrast): kept apart as `KSpace.calibration`, never put
into the image, whose k-space holds the imaging lines only. Each combination of set,
repetition, cardiac phase and contrast (echo) is an image of its own, never averaged with
the others: they are stacked along the slice axis, slices varying fastest, and
`KSpace.header["images"]` then names the counters of each; every image must hold the same
lines. Where several cardiac phases carry ECG time stamps, `KSpace.header["trigger_times_ms"]`
gives each image's trigger time (`ismrmrd_images.trigger_times`). One encoding space is read
at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from voxelhub.recon import ismrmrd_types as mrd
from voxelhub.recon.detect import check_kspace, detect_sampling
from voxelhub.recon.errors import ReconError
from voxelhub.recon.h5 import check_fits_memory, open_h5, read_string
from voxelhub.recon.header import parse_header, pe_offset
from voxelhub.recon.ismrmrd_images import (
    check_same_lines,
    geometry,
    grid,
    image_index,
    image_keys,
    trigger_times,
)
from voxelhub.recon.ismrmrd_write import write_ismrmrd
from voxelhub.recon.model import Calibration, ComplexArray, KSpace
from voxelhub.recon.noise import noise_covariance, prewhiten, prewhitening_matrix

__all__ = ["IsmrmrdData", "load_ismrmrd", "read_ismrmrd", "write_ismrmrd"]

logger = logging.getLogger(__name__)

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


def _read(path: str | Path, name: str) -> tuple[str, Records]:
    """The XML header and every acquisition of the file."""
    with open_h5(path) as handle:
        data, xml = handle.get("dataset/data"), handle.get("dataset/xml")
        if not isinstance(data, h5py.Dataset) or data.dtype.names is None:
            raise ReconError(f"{name} has no ISMRMRD acquisitions (/dataset/data) and no 'kspace'")
        if xml is None:
            raise ReconError(f"{name} has no ISMRMRD header (/dataset/xml)")
        text = read_string(xml, what=f"{name}: /dataset/xml")
        if "head" not in data.dtype.names or "data" not in data.dtype.names:
            raise ReconError(f"{name}: /dataset/data is not an ISMRMRD acquisition table")
        what = f"{name}: /dataset/data of {data.shape[0]} acquisitions"
        check_fits_memory(data.shape, data.dtype.itemsize, what=what)
        return text, np.asarray(data[()])


def _encoding_space(
    heads: Records, imaging: npt.NDArray[np.bool_], *, space: int | None, name: str
) -> tuple[npt.NDArray[np.bool_], int]:
    """The imaging acquisitions of one encoding space, and its number: `space`, or the only
    one the imaging acquisitions use."""
    spaces = heads["encoding_space_ref"].astype(np.intp)
    used, counts = np.unique(spaces[imaging], return_counts=True)
    if space is None and used.size > 1:
        listed = ", ".join(f"{s}: {c}" for s, c in zip(used.tolist(), counts.tolist(), strict=True))
        raise ReconError(
            f"{name}: the imaging acquisitions belong to {used.size} encoding spaces "
            f"(acquisitions per space {listed}); read one at a time with "
            "read_ismrmrd(..., encoding_space=N)"
        )
    chosen = int(used[0]) if space is None else int(space)
    if chosen not in used:
        raise ReconError(
            f"{name}: no imaging acquisition belongs to encoding space {chosen}; they use "
            f"{used.tolist()}"
        )
    return imaging & (spaces == chosen), chosen


def _parse(xml: str, *, space: int, name: str) -> dict[str, Any]:
    """The header of encoding space `space`, refused if its limits do not fit its matrix."""
    try:
        header = parse_header(xml, encoding=space)
        low, high = (int(v) for v in header["pe_limits"][:2])
        pe_offset(header, high - low + 1)
    except ReconError as err:
        raise ReconError(f"{name}: {err}") from err
    return header


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


def _reference_scan(heads: Records, keys: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """The calibration-only acquisitions (ACQ_IS_PARALLEL_CALIBRATION) when they are a
    separate reference scan, else none: some of them hold a line (image x phase-encode
    `keys`) that an imaging acquisition holds too. Such a scan, maybe of another contrast,
    is calibration data, not image lines. Calibration-only lines only where no imaging
    acquisition is are the integrated ACS block's lines off the imaging lattice."""
    flags = heads["flags"]
    only = _flagged(flags, mrd.PARALLEL_CALIBRATION) & ~_flagged(
        flags, mrd.PARALLEL_CALIBRATION_AND_IMAGING
    )
    if not (only & np.isin(keys, keys[~only])).any():
        return np.zeros(only.shape, dtype=bool)
    return np.asarray(only)


def _lines(header: dict[str, Any], records: Records, *, name: str) -> tuple[ComplexArray, int]:
    """The acquisitions' samples (acquisitions, channels, samples), discarded samples zeroed
    and reversed lines flipped, and where they start on the encoded readout."""
    heads = records["head"]
    lines = _stack(records, name)
    _drop_discarded(lines, heads, name=name)
    reverse = _flagged(heads["flags"], mrd.REVERSE)
    lines[reverse] = lines[reverse, :, ::-1]
    return lines, _readout_start(header, heads, samples=lines.shape[-1], name=name)


def _reference_images(
    found: npt.NDArray[np.intp], images: npt.NDArray[np.intp], *, name: str
) -> npt.NDArray[np.intp]:
    """For each image (counters `images`), the reference scan's image (counters `found`) with
    the same counters, else one of the same slice (a reference acquired once per slice)."""
    exact = {tuple(row): index for index, row in enumerate(found.tolist())}
    by_slice: dict[int, int] = {}
    for index, row in enumerate(found.tolist()):
        by_slice.setdefault(int(row[-1]), index)
    picks = []
    for row in images.tolist():
        pick = exact.get(tuple(row), by_slice.get(int(row[-1])))
        if pick is None:
            raise ReconError(
                f"{name}: the separate reference scan (ACQ_IS_PARALLEL_CALIBRATION) has no "
                f"lines for slice {row[-1]}; every slice needs its calibration lines"
            )
        picks.append(pick)
    return np.asarray(picks, dtype=np.intp)


def _reference(
    header: dict[str, Any],
    records: Records,
    *,
    images: npt.NDArray[np.intp],
    shape: tuple[int, int, int, int],
    name: str,
) -> Calibration:
    """The separate reference scan, one block per image, its lines in phase-encode order."""
    what = f"{name}: reference scan"
    heads = records["head"]
    columns = _columns(header, heads, name=name)
    slices, found = image_index(heads)
    low = int(header["pe_limits"][0])
    check_same_lines(slices, columns, found=found, low=low, width=shape[-1], name=what)
    lines, start = _lines(header, records, name=what)
    if lines.shape[1] != shape[1]:
        raise ReconError(
            f"{name}: the reference scan has {lines.shape[1]} channels, the imaging "
            f"acquisitions {shape[1]}; they must come from the same coils"
        )
    held = np.unique(columns)
    index = np.searchsorted(held, columns)
    blocks = grid(
        lines, slices, columns=index, shape=(len(found), *shape[1:3], held.size), start=start
    )
    data = np.ascontiguousarray(blocks[_reference_images(found, images, name=name)])
    if not np.isfinite(data).all():
        raise ReconError(f"{what} holds NaN or infinite samples; the file is damaged")
    return Calibration(data=data, lines=held)


def _imaging(
    header: dict[str, Any], records: Records, *, name: str
) -> tuple[ComplexArray, npt.NDArray[np.bool_], Calibration | None]:
    """The image k-space, its sampled lines, and the separate reference scan if there is one."""
    heads = records["head"]
    _check_cartesian(header, heads, name=name)
    low, high = (int(v) for v in header["pe_limits"][:2])
    width = high - low + 1
    columns = _columns(header, heads, name=name)
    slices, _ = image_index(heads)
    reference = _reference_scan(heads, slices * width + columns)
    imaging = records[~reference]
    heads = imaging["head"]
    columns = _columns(header, heads, name=name)
    slices, found = image_index(heads)
    check_same_lines(slices, columns, found=found, low=low, width=width, name=name)
    shape = (
        len(found),
        int(heads["active_channels"].max()),
        int(header["encoded_matrix"][0]),
        width,
    )
    check_fits_memory(shape, np.dtype(np.complex64).itemsize, what=f"{name}: k-space {shape}")
    lines, start = _lines(header, imaging, name=name)
    mask = np.zeros(shape[-1], dtype=bool)
    mask[columns] = True
    header.update(
        {**geometry(heads, slices), **image_keys(found), **trigger_times(heads, slices, found)}
    )
    calibration = None
    if reference.any():
        calibration = _reference(header, records[reference], images=found, shape=shape, name=name)
    return grid(lines, slices, columns=columns, shape=shape, start=start), mask, calibration


def _noise(records: Records, name: str) -> ComplexArray:
    """Noise samples (channels x samples) of the noise scans, which may differ in length;
    (0, 0) when there are none."""
    if not len(records):
        return np.zeros((0, 0), dtype=np.complex64)
    heads = records["head"]
    channels = _uniform(heads["active_channels"], what="active_channels", name=f"{name}: noise")
    expected = 2 * channels * heads["number_of_samples"].astype(np.intp)
    payloads = [np.asarray(payload, dtype=np.float32) for payload in records["data"]]
    if [payload.size for payload in payloads] != expected.tolist():
        raise ReconError(f"{name}: noise scan payloads do not match their headers' sizes")
    parts = [payload.view(np.complex64).reshape(channels, -1) for payload in payloads]
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _usable_noise(records: Records, *, required: bool, name: str) -> ComplexArray:
    """The noise samples; when they are not needed, damaged noise scans are left out."""
    try:
        return _noise(records, name)
    except ReconError:
        if required:
            raise
        logger.warning("%s: the noise scans are unusable and left out", name, exc_info=True)
        return np.zeros((0, 0), dtype=np.complex64)


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
    path: str | Path,
    *,
    prewhiten_noise: bool = False,
    require_acs: bool = True,
    encoding_space: int | None = None,
) -> IsmrmrdData:
    """k-space and noise of an ISMRMRD file; `prewhiten_noise` decorrelates the coils with
    the covariance of the file's noise scans (a warning if it has none); `require_acs`
    False accepts data without an ACS block (for methods that do not calibrate);
    `encoding_space` picks one where the acquisitions use several (None: the only one)."""
    name = Path(path).name
    xml, records = _read(path, name)
    flags = records["head"]["flags"]
    noisy = _flagged(flags, mrd.NOISE_MEASUREMENT)
    imaging = ~_flagged(flags, *mrd.NOT_IMAGING)
    if not imaging.any():
        raise ReconError(f"{name} holds no imaging acquisitions ({len(records)} in all)")
    imaging, space = _encoding_space(records["head"], imaging, space=encoding_space, name=name)
    header = _parse(xml, space=space, name=name)
    noise = _usable_noise(records[noisy], required=prewhiten_noise, name=name)
    data, mask, calibration = _imaging(header, records[imaging], name=name)
    check_kspace(data, source=name)
    if prewhiten_noise and noise.size and noise.shape[0] != data.shape[1]:
        raise ReconError(
            f"{name}: noise scans have {noise.shape[0]} channels, data {data.shape[1]}"
        )
    if prewhiten_noise and noise.size:
        whitening = _whitening(noise, name=name)
        data = prewhiten(data, whitening)
        if calibration is not None:
            calibration = replace(calibration, data=prewhiten(calibration.data, whitening))
    elif prewhiten_noise:
        logger.warning("%s: no noise scans, so the data are not prewhitened", name)
    limits = header["pe_limits"]
    sampling = detect_sampling(
        data,
        mask=mask,
        center=int(limits[2]) - int(limits[0]),
        source=name,
        require_acs=require_acs,
        reference=None if calibration is None else np.isin(np.arange(mask.size), calibration.lines),
    )
    header.update(
        {
            "format": "ismrmrd",
            "noise_scans": int(noisy.sum()),
            "prewhitened": bool(prewhiten_noise and noise.size),
        }
    )
    kspace = KSpace(
        data=data, sampling=sampling, header=header, source=str(path), calibration=calibration
    )
    return IsmrmrdData(kspace, noise)


def read_ismrmrd(
    path: str | Path,
    *,
    prewhiten_noise: bool = False,
    require_acs: bool = True,
    encoding_space: int | None = None,
) -> KSpace:
    """k-space of an ISMRMRD file (see `load_ismrmrd`)."""
    loaded = load_ismrmrd(
        path,
        prewhiten_noise=prewhiten_noise,
        require_acs=require_acs,
        encoding_space=encoding_space,
    )
    return loaded.kspace
