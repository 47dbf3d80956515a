"""Opening HDF5 files, reading their string datasets and refusing declared sizes that cannot
fit in memory, with errors that say what went wrong."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from voxelhub.recon.errors import ReconError


def physical_memory() -> int | None:
    """Bytes of memory this machine has, where the system says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_fits_memory(shape: tuple[int, ...], itemsize: int, *, what: str) -> None:
    """Refuse, before allocating it, an array larger than this machine's memory: a header or
    dataset can declare terabytes in a file of a few kilobytes.

    >>> check_fits_memory((100_000, 64, 640, 368), 8, what="scan.h5: kspace")
    Traceback (most recent call last):
    ...
    voxelhub.recon.errors.ReconError: scan.h5: kspace needs 11.0 TiB ...
    """
    needed = math.prod(int(n) for n in shape) * int(itemsize)
    memory = physical_memory()
    if memory is not None and needed > memory:
        raise ReconError(
            f"{what} needs {_size(needed)} of memory, more than this machine's "
            f"{_size(memory)}; the file is damaged, or must be read on a larger machine"
        )


def _size(count: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


@contextmanager
def open_h5(path: str | Path) -> Iterator[h5py.File]:
    """Open `path` read-only; a file that is not HDF5, or breaks while read, is a ReconError."""
    name = Path(path).name
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError as err:
        raise ReconError(f"{name}: no such file") from err
    except OSError as err:
        raise ReconError(
            f"{name} is not a readable HDF5 file (corrupt or truncated?): {err}"
        ) from err
    try:
        with handle:
            yield handle
    except (OSError, RuntimeError) as err:
        raise ReconError(f"{name}: the HDF5 file is damaged and could not be read: {err}") from err


def read_string(node: object, *, what: str) -> str:
    """The text of a scalar or one-element string dataset (fixed or variable length)."""
    if not isinstance(node, h5py.Dataset):
        raise ReconError(f"{what} is not a dataset")
    value = node[()]
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ReconError(f"{what} should hold one string, holds {value.size} values")
        value = value.reshape(-1)[0]
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
