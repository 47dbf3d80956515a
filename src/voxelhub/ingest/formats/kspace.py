"""Raw MRI k-space in HDF5: fastMRI (`kspace` dataset) or ISMRMRD (`/dataset/data`)."""

from __future__ import annotations

from pathlib import Path

from voxelhub.ingest.formats.base import Format, Recognition

NAME = "kspace"
_MAGIC = b"\x89HDF\r\n\x1a\n"


def sniff(head: bytes) -> bool:
    return head.startswith(_MAGIC)


def inspect(path: Path, head: bytes) -> Recognition:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if "kspace" in h5:
                return _fastmri(h5["kspace"])
            group = h5.get("dataset")
            if isinstance(group, h5py.Group) and isinstance(group.get("data"), h5py.Dataset):
                return Recognition.good(
                    NAME, flavour="ismrmrd", acquisitions=int(group["data"].shape[0])
                )
    except OSError as err:
        return Recognition.bad(NAME, f"the HDF5 file cannot be read: {err}")
    return Recognition.bad(
        NAME,
        "an HDF5 file without MRI k-space (no 'kspace' dataset and no ISMRMRD '/dataset/data')",
    )


def _fastmri(kspace: object) -> Recognition:
    import h5py

    if not isinstance(kspace, h5py.Dataset):
        return Recognition.bad(NAME, "'kspace' is an HDF5 group; fastMRI k-space is one dataset")
    shape = tuple(int(n) for n in kspace.shape or ())
    if len(shape) not in (3, 4):
        return Recognition.bad(
            NAME,
            f"the fastMRI kspace has shape {shape}; expected slices x coils x readout x "
            "phase-encode (slices x readout x phase-encode for single-coil data)",
        )
    if kspace.dtype.kind != "c":
        return Recognition.bad(
            NAME,
            f"the fastMRI kspace holds {kspace.dtype} values; k-space must be complex "
            "(complex64), not magnitudes or real and imaginary parts",
        )
    return Recognition.good(NAME, flavour="fastmri", shape=list(shape))


FORMAT = Format(NAME, sniff, inspect)
