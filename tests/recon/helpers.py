"""Small helpers for the reconstruction tests: files written from simulated acquisitions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from voxelhub.recon.header import with_padding
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.model import KSpace


def padded(kspace: KSpace, padding: int = 20) -> KSpace:
    """The same k-space, its header describing `padding` zero columns around it."""
    header = with_padding(kspace.header, width=kspace.data.shape[-1], padding=padding)
    return replace(kspace, header=header)


def fastmri_file(path: Path, kspace: KSpace) -> Path:
    write_fastmri(path, kspace)
    return path


def edit_header(path: Path, old: str, new: str, *, dataset: str = "ismrmrd_header") -> None:
    """Replace text in a file's XML header (fastMRI or, with `dataset`, ISMRMRD)."""
    with h5py.File(path, "r+") as handle:
        value = handle[dataset][()]
        text = (value[0] if isinstance(value, np.ndarray) else value).decode()
        assert old in text, f"{old!r} not in the header"
        del handle[dataset]
        handle.create_dataset(dataset, data=np.bytes_(text.replace(old, new).encode()))


def add_images(path: Path, counter: str, *, scales: list[float]) -> Path:
    """Append to an ISMRMRD file copies of its acquisitions with `counter` (contrast,
    repetition, phase or set) 1, 2, ..., their data times `scales` (a later echo or frame,
    another signal)."""
    with h5py.File(path, "r+") as handle:
        data = handle["dataset/data"]
        records = data[()]
        for number, scale in enumerate(scales, start=1):
            more = records.copy()
            more["head"]["idx"][counter] = number
            for index in range(len(more)):
                more[index]["data"] = more[index]["data"] * scale
            data.resize((len(data) + len(more),))
            data[len(data) - len(more) :] = more
    return path
