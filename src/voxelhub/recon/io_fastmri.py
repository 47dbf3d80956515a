"""fastMRI HDF5: read and write multi-coil k-space with its ISMRMRD header.

A file holds `kspace` (slices x coils x readout x phase-encode, complex64; single-coil files
have no coil axis), `ismrmrd_header` (XML), optionally `mask` (sampled phase-encode columns),
`reconstruction_rss` and the attributes `acceleration` and `num_low_frequency`. Phase-encode
columns outside the header's encoding limits are zero padding and are dropped on reading.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from voxelhub.recon import h5chunks
from voxelhub.recon.detect import check_kspace, detect_sampling
from voxelhub.recon.errors import ReconError
from voxelhub.recon.h5 import check_fits_memory, open_h5, read_string
from voxelhub.recon.header import format_header, parse_header, pe_offset
from voxelhub.recon.image import pad_phase_encode
from voxelhub.recon.model import FloatArray, KSpace

logger = logging.getLogger(__name__)

_HINTS = ("acceleration", "num_low_frequency")


def _header(handle: h5py.File, shape: tuple[int, ...], *, name: str) -> dict[str, Any]:
    if "ismrmrd_header" not in handle:
        return {"encoded_matrix": [shape[-2], shape[-1], 1]}
    text = read_string(handle["ismrmrd_header"], what=f"{name}: ismrmrd_header")
    try:
        header = parse_header(text)
    except ReconError as err:
        raise ReconError(f"{name}: {err}") from err
    if header["trajectory"] != "cartesian":
        raise ReconError(
            f"{name}: the trajectory is {header['trajectory']!r}; only Cartesian k-space "
            "can be reconstructed"
        )
    encoded = header["encoded_matrix"]
    if (shape[-2], shape[-1]) != (encoded[0], encoded[1]):
        raise ReconError(
            f"{name}: kspace is {shape[-2]} x {shape[-1]} (readout x phase-encode) but the "
            f"header's encoded matrix is {encoded[0]} x {encoded[1]}; header and data disagree"
        )
    return header


def _mask(
    handle: h5py.File, columns: slice, *, width: int, name: str
) -> npt.NDArray[np.bool_] | None:
    if "mask" not in handle:
        return None
    mask = np.asarray(handle["mask"][()]).reshape(-1)
    if mask.size != width:
        raise ReconError(f"{name}: mask has {mask.size} entries for {width} phase-encode columns")
    return mask[columns].astype(bool)


def _fix_hint(dataset: h5py.Dataset) -> str:
    """How to turn a common wrong layout into fastMRI's."""
    if dataset.shape is None:
        return "; it holds no data (an empty dataspace)"
    if dataset.dtype.names is not None and len(dataset.dtype.names) == 2:
        real, imag = dataset.dtype.names
        return (
            f"; the fields {real!r} and {imag!r} look like real and imaginary parts: store "
            f"kspace[{real!r}] + 1j * kspace[{imag!r}] as complex64"
        )
    if dataset.dtype.kind == "f" and dataset.ndim in (4, 5) and dataset.shape[-1] == 2:
        return (
            "; the last axis of 2 looks like real and imaginary parts: store "
            "kspace[..., 0] + 1j * kspace[..., 1] as complex64"
        )
    if dataset.dtype.kind in "fiu":
        return "; real values are magnitudes or one part only: store the complex64 samples"
    return ""


def _hints(attrs: h5py.AttributeManager, *, name: str) -> dict[str, int]:
    """The file's `acceleration` and `num_low_frequency`, where they are whole numbers; the
    data decide the sampling, so an unusable hint is logged and left out."""
    hints: dict[str, int] = {}
    for key in _HINTS:
        if key not in attrs:
            continue
        value = np.asarray(attrs[key])
        if value.size == 1 and value.dtype.kind in "iuf" and float(value.reshape(-1)[0]) >= 0:
            hints[key] = int(value.reshape(-1)[0])
        else:
            logger.warning("%s: ignoring the attribute %s=%r (not a number)", name, key, value)
    return hints


def read_fastmri(path: str | Path, *, require_acs: bool = True) -> KSpace:
    """k-space of a fastMRI file, padding columns removed, sampling detected.

    Refuses (ReconError) files without `kspace`, non-Cartesian or inconsistent headers,
    and NaNs; and, unless `require_acs` is False (methods that do not calibrate), files
    without an ACS block.
    """
    name = Path(path).name
    with open_h5(path) as handle:
        if not isinstance(handle.get("kspace"), h5py.Dataset):
            raise ReconError(
                f"{name} has no 'kspace' dataset; a fastMRI file holds k-space as slices x "
                "coils x readout x phase-encode"
            )
        dataset = handle["kspace"]
        if (
            dataset.shape is None
            or dataset.ndim not in (3, 4)
            or not np.issubdtype(dataset.dtype, np.complexfloating)
        ):
            raise ReconError(
                f"{name}: 'kspace' must be complex, (slices, [coils,] readout, phase-encode); "
                f"got {dataset.dtype} {dataset.shape}{_fix_hint(dataset)}"
            )
        # read as stored, then copied to complex64
        itemsize = dataset.dtype.itemsize + 8
        check_fits_memory(dataset.shape, itemsize, what=f"{name}: 'kspace' {dataset.shape}")
        header = _header(handle, dataset.shape, name=name)
        limits = header.get("pe_limits", [0, dataset.shape[-1] - 1, dataset.shape[-1] // 2])
        width = int(limits[1]) - int(limits[0]) + 1
        try:
            offset = pe_offset(header, width)
        except ReconError as err:
            raise ReconError(f"{name}: {err}") from err
        columns = slice(offset, offset + width)
        # Compressed (the raw-data tier's copy): decompressed on every core, then cut.
        chosen = (
            h5chunks.read(dataset)[..., columns] if dataset.compression else dataset[..., columns]
        )
        data = np.ascontiguousarray(chosen, dtype=np.complex64)
        mask = _mask(handle, columns, width=dataset.shape[-1], name=name)
        hints = _hints(handle.attrs, name=name)
    if data.ndim == 3:
        data = data[:, None]
    check_kspace(data, source=name)
    sampling = detect_sampling(
        data,
        mask=mask,
        center=int(limits[2]) - int(limits[0]),
        acceleration_hint=hints.get("acceleration"),
        source=name,
        require_acs=require_acs,
    )
    header.update({"format": "fastmri", **{f"{key}_hint": v for key, v in hints.items()}})
    return KSpace(data=data, sampling=sampling, header=header, source=str(path))


def read_reference(path: str | Path) -> FloatArray | None:
    """The file's `reconstruction_rss` (slices x rows x columns), if it has one."""
    with open_h5(path) as handle:
        if "reconstruction_rss" not in handle:
            return None
        return np.asarray(handle["reconstruction_rss"][()], dtype=np.float32)


def write_fastmri(path: str | Path, kspace: KSpace, *, reference: FloatArray | None = None) -> None:
    """Write `kspace` as a fastMRI file: padding from the header restored, sampling mask and
    hints written when undersampled, `reference` as `reconstruction_rss`.

    A separate reference scan (`kspace.calibration`) has no place in the format: such
    k-space is refused rather than written without the lines it is calibrated on."""
    if kspace.calibration is not None:
        raise ReconError(
            f"{Path(path).name}: this k-space has a separate reference scan, which a fastMRI "
            "file cannot hold; write it as ISMRMRD (write_ismrmrd) to keep it"
        )
    header = kspace.header
    width = kspace.data.shape[-1]
    encoded = header.get("encoded_matrix") or [kspace.data.shape[-2], width, 1]
    offset = pe_offset(header, width)
    full = pad_phase_encode(kspace.data, width=int(encoded[1]), offset=offset)
    xml = format_header(
        {**header, "encoded_matrix": encoded}, coils=kspace.coils, slices=kspace.slices
    )
    with h5py.File(path, "w") as handle:
        handle.create_dataset("kspace", data=full, chunks=(1, *full.shape[1:]))
        handle.create_dataset("ismrmrd_header", data=np.bytes_(xml.encode()))
        if kspace.sampling.acceleration > 1:
            mask = np.zeros(int(encoded[1]), dtype=bool)
            mask[offset : offset + width] = kspace.sampling.mask
            handle.create_dataset("mask", data=mask)
            handle.attrs["acceleration"] = kspace.sampling.acceleration
            handle.attrs["num_low_frequency"] = kspace.sampling.acs_lines
        if reference is not None:
            handle.create_dataset("reconstruction_rss", data=reference.astype(np.float32))
            handle.attrs["max"] = float(reference.max())
            handle.attrs["norm"] = float(np.linalg.norm(reference))
        handle.attrs["acquisition"] = str(header.get("protocol_name", ""))
