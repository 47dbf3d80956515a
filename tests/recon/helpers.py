"""Small helpers for the reconstruction tests: files written from simulated acquisitions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from voxelhub.recon.header import with_padding
from voxelhub.recon.image import fft2c, ifft2c, kspace_to_images
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.model import Calibration, FloatArray, KSpace, Sampling
from voxelhub.recon.phantom import PhantomAcquisition


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


@dataclass(frozen=True)
class SeparateReference:
    """An acquisition whose calibration is a separate reference scan of another contrast."""

    kspace: KSpace  # imaging lines only (R everywhere), the reference in `calibration`
    imaging_reference: FloatArray  # the fully sampled image of the imaging contrast
    calibration_reference: FloatArray  # the fully sampled image of the reference's contrast
    mixed: KSpace  # how it was read before: reference lines in the image's gaps at the centre


def separate_reference(
    acq: PhantomAcquisition, *, acceleration: int = 3, lines: int = 24
) -> SeparateReference:
    """Imaging lines every `acceleration` lines everywhere (no fully sampled centre) and a
    separate `lines`-line central reference scan whose contrast is the object times a smooth
    weight (brighter on one side, darker on the other); the coil sensitivities are the same."""
    full = acq.fully_sampled
    width = full.shape[-1]
    rows, columns = np.meshgrid(
        np.linspace(-1, 1, full.shape[2]), np.linspace(-1, 1, width), indexing="ij"
    )
    weight = 1.0 + 0.5 * rows - 0.3 * columns
    other = fft2c(ifft2c(full) * weight)
    lattice = np.zeros(width, bool)
    lattice[(width // 2) % acceleration :: acceleration] = True
    start = width // 2 - lines // 2
    block = np.arange(start, start + lines)
    calibration = Calibration(np.ascontiguousarray(other[..., block]), block)
    sampling = Sampling(lattice, (start, start + lines), acceleration)
    kspace = replace(acq.kspace, data=full * lattice, sampling=sampling, calibration=calibration)
    gaps = np.zeros(width, bool)
    gaps[block] = ~lattice[block]
    mixed_data = np.where(gaps, other, full * lattice).astype(np.complex64)
    mixed = replace(acq.kspace, data=mixed_data, sampling=replace(sampling, mask=lattice | gaps))
    header = acq.kspace.header
    return SeparateReference(kspace, acq.reference, kspace_to_images(other, header), mixed)
