"""gzip datasets written and read chunk by chunk in threads are ordinary HDF5 datasets."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from voxelhub.recon import h5chunks

RNG = np.random.default_rng(5)
CASES = [
    ((3, 4, 33, 17), (1, 4, 33, 17), np.complex64),
    ((7, 50), (3, 16), np.int16),  # edge chunks on both axes
    ((1000,), (128,), np.float64),
    ((2, 3, 5), (2, 3, 5), np.uint8),
]


def values(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.complexfloating):
        return (RNG.normal(size=shape) + 1j * RNG.normal(size=shape)).astype(dtype)
    return (RNG.normal(size=shape) * 100).astype(dtype)


@pytest.mark.parametrize(("shape", "chunks", "dtype"), CASES)
def test_written_chunks_read_back_by_hdf5_and_here(
    tmp_path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: type
) -> None:
    data = values(shape, dtype)
    with h5py.File(tmp_path / "a.h5", "w") as handle:
        h5chunks.write_gzip(handle, "d", data, chunks=chunks, level=1, threads=3)
    with h5py.File(tmp_path / "a.h5") as handle:
        dataset = handle["d"]
        assert (dataset.compression, dataset.shuffle, dataset.chunks) == ("gzip", True, chunks)
        np.testing.assert_array_equal(dataset[()], data)  # HDF5's own filters read it
        np.testing.assert_array_equal(h5chunks.read(dataset, threads=3), data)


@pytest.mark.parametrize("shuffle", [True, False])
def test_hdf5_written_gzip_is_read_here(tmp_path: Path, shuffle: bool) -> None:
    data = values((4, 9, 10), np.complex64)
    with h5py.File(tmp_path / "b.h5", "w") as handle:
        handle.create_dataset(
            "d", data=data, chunks=(1, 9, 10), compression="gzip", shuffle=shuffle
        )
    with h5py.File(tmp_path / "b.h5") as handle:
        np.testing.assert_array_equal(h5chunks.read(handle["d"]), data)


def test_other_layouts_are_left_to_hdf5(tmp_path: Path) -> None:
    data = values((6, 20), np.float32)
    with h5py.File(tmp_path / "c.h5", "w") as handle:
        handle.create_dataset("lzf", data=data, chunks=(2, 20), compression="lzf")
        handle.create_dataset("plain", data=data)
        handle.create_dataset("checked", data=data, chunks=(2, 20), compression="gzip",
                              fletcher32=True)  # fmt: skip
        handle.create_dataset("big_endian", data=data.astype(">f4"), chunks=(2, 20),
                              compression="gzip")  # fmt: skip
        sparse = handle.create_dataset("sparse", shape=(6, 20), dtype=np.float32,
                                       chunks=(2, 20), compression="gzip", fillvalue=7)  # fmt: skip
        sparse[2:4] = data[2:4]
    with h5py.File(tmp_path / "c.h5") as handle:
        for name in ("lzf", "plain", "checked", "big_endian"):
            np.testing.assert_array_equal(h5chunks.read(handle[name]), data)
        expected = np.full((6, 20), 7, np.float32)
        expected[2:4] = data[2:4]
        np.testing.assert_array_equal(h5chunks.read(handle["sparse"]), expected)
