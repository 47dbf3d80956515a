"""gzip-compressed HDF5 datasets written and read chunk by chunk on every core.

HDF5 runs its filters on one thread. Here the byte shuffle and the deflate of each chunk run
in a thread pool (zlib and numpy's copies release the GIL) and the chunks go to and from the
file as they are stored (`write_direct_chunk`, `read_direct_chunk`). The files are ordinary
HDF5 with the shuffle and gzip filters, readable by any HDF5 tool; a dataset stored any other
way is read by HDF5 itself.

>>> import tempfile, pathlib, numpy as np, h5py
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.h5"
>>> data = (np.arange(5 * 6 * 7) * (1 + 2j)).astype(np.complex64).reshape(5, 6, 7)
>>> with h5py.File(path, "w") as f:
...     _ = write_gzip(f, "k", data, chunks=(2, 6, 7), level=1)
>>> with h5py.File(path) as f:
...     bool((f["k"][()] == data).all()), bool((read(f["k"]) == data).all())
(True, True)
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import h5py
import numpy as np
import numpy.typing as npt

_FAST_KINDS = "biufc"
_T = TypeVar("_T")
_U = TypeVar("_U")


def _threads() -> int:
    return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 1)


def _in_order(
    function: Callable[[_T], _U], items: Sequence[_T], threads: int
) -> Iterator[tuple[_T, _U]]:
    """(item, function(item)) in order, at most 2 x `threads` results held at a time."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ahead = 2 * threads
        pending = deque(pool.submit(function, item) for item in items[:ahead])
        for index, item in enumerate(items):
            result = pending.popleft().result()
            if index + ahead < len(items):
                pending.append(pool.submit(function, items[index + ahead]))
            yield item, result


def _regions(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(0, n, c) for n, c in zip(shape, chunks, strict=True))))


def _region(offset: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]) -> Any:
    return tuple(slice(o, min(o + c, n)) for o, c, n in zip(offset, chunks, shape, strict=True))


def write_gzip(
    group: h5py.Group,
    name: str,
    data: npt.NDArray[Any],
    *,
    chunks: tuple[int, ...],
    level: int,
    threads: int | None = None,
) -> h5py.Dataset:
    """`group[name]` = `data`, chunked, byte-shuffled and gzip-compressed at `level`, the
    chunks compressed on `threads` threads (None: every core)."""
    data = np.asarray(data)
    if data.dtype.kind not in _FAST_KINDS or not data.dtype.isnative:
        return group.create_dataset(
            name, data=data, chunks=chunks, compression="gzip", compression_opts=level,
            shuffle=True,
        )  # fmt: skip
    dataset = group.create_dataset(
        name, shape=data.shape, dtype=data.dtype, chunks=chunks, compression="gzip",
        compression_opts=level, shuffle=True,
    )  # fmt: skip
    itemsize = data.dtype.itemsize

    def encode(offset: tuple[int, ...]) -> bytes:
        block = data[_region(offset, chunks, data.shape)]
        if block.shape != chunks:  # an edge chunk is stored whole, padded
            padded = np.zeros(chunks, dtype=data.dtype)
            padded[tuple(slice(0, n) for n in block.shape)] = block
            block = padded
        raw = np.ascontiguousarray(block).view(np.uint8).reshape(-1, itemsize)
        return zlib.compress(np.ascontiguousarray(raw.T).tobytes(), level)

    for offset, blob in _in_order(encode, _regions(data.shape, chunks), threads or _threads()):
        dataset.id.write_direct_chunk(offset, blob)
    return dataset


def _filters(dataset: h5py.Dataset) -> list[int]:
    plist = dataset.id.get_create_plist()
    return [plist.get_filter(index)[0] for index in range(plist.get_nfilters())]


def read(dataset: h5py.Dataset, *, threads: int | None = None) -> npt.NDArray[Any]:
    """The whole of `dataset`: gzip-compressed chunks (byte-shuffled or not) decompressed on
    `threads` threads (None: every core), anything else by HDF5."""
    filters = _filters(dataset) if dataset.chunks is not None else []
    shuffled = filters == [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]
    if (
        not (shuffled or filters == [h5py.h5z.FILTER_DEFLATE])
        or dataset.dtype.kind not in _FAST_KINDS
        or not dataset.dtype.isnative
    ):
        return np.asarray(dataset[()])
    shape, chunks, dtype = dataset.shape, tuple(dataset.chunks), dataset.dtype
    stored = [dataset.id.get_chunk_info(i) for i in range(dataset.id.get_num_chunks())]
    everywhere = len(stored) == len(_regions(shape, chunks))
    out = np.empty(shape, dtype) if everywhere else np.full(shape, dataset.fillvalue, dtype)
    itemsize = dtype.itemsize

    def decode(offset: tuple[int, ...]) -> npt.NDArray[Any] | None:
        mask, blob = dataset.id.read_direct_chunk(offset)
        if mask != 0:  # a filter was skipped for this chunk: let HDF5 read it
            return None
        raw = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
        if shuffled:
            raw = np.ascontiguousarray(raw.reshape(itemsize, -1).T)
        block: npt.NDArray[Any] = raw.view(dtype).reshape(chunks)
        return block

    offsets = [tuple(info.chunk_offset) for info in stored]
    for offset, block in _in_order(decode, offsets, threads or _threads()):
        region = _region(offset, chunks, shape)
        if block is None:
            out[region] = dataset[region]
        else:
            out[region] = block[tuple(slice(0, s.stop - s.start) for s in region)]
    return out
