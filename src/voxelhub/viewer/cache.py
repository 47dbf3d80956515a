"""Decoded volumes kept in memory under a byte budget; the least recently used go first.

One cache lives in each web process (`voxelhub serve --web-processes N` has N of them).
A load decodes the slices of a series on a thread pool (the codecs release the GIL) into
one preallocated array; requests for a series that is loading share that one load.

>>> import numpy as np
>>> cache = VolumeCache(budget_bytes=1 << 20)
>>> source = VolumeSource((2, 4, 4), np.dtype(np.int16), lambda k: np.full((4, 4), k))
>>> cache.load("s", source).total, cache.wait("s", timeout=10)[1, 0, 0]
(2, np.int16(1))
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)
MB = 1024 * 1024


class LoadState(StrEnum):
    ABSENT = "absent"
    LOADING = "loading"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True)
class LoadStatus:
    state: LoadState
    loaded: int
    total: int
    message: str | None = None


@dataclass(frozen=True)
class VolumeSource:
    """What a load makes: an array of `shape` whose slice k is `read(k)`."""

    shape: tuple[int, int, int]
    dtype: np.dtype[Any]
    read: Callable[[int], npt.NDArray[Any]]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class CacheUsage:
    used_bytes: int
    budget_bytes: int
    entries: int
    ready: int
    loading: int


class VolumeNotReady(Exception):
    """The volume failed to load, is not in the cache, or is still loading after a wait."""

    def __init__(self, status: LoadStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Entry:
    def __init__(self, nbytes: int, total: int) -> None:
        self.nbytes, self.total = nbytes, total
        self.state = LoadState.LOADING
        self.loaded = 0
        self.message: str | None = None
        self.array: npt.NDArray[Any] | None = None
        self.done = threading.Event()
        self.started = time.monotonic()

    def status(self) -> LoadStatus:
        return LoadStatus(self.state, self.loaded, self.total, self.message)


class VolumeCache:
    """Volumes by key (e.g. series id and version), within `budget_bytes` at all times."""

    def __init__(self, budget_bytes: int, *, threads: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._pool = ThreadPoolExecutor(
            max_workers=threads or os.cpu_count() or 2, thread_name_prefix="viewer-decode"
        )

    def status(self, key: Hashable) -> LoadStatus:
        with self._lock:
            entry = self._entries.get(key)
            return entry.status() if entry else LoadStatus(LoadState.ABSENT, 0, 0)

    def get(self, key: Hashable) -> npt.NDArray[Any] | None:
        """The ready volume (marked as just used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.array is None:
                return None
            self._entries.move_to_end(key)
            return entry.array

    def load(self, key: Hashable, source: VolumeSource) -> LoadStatus:
        """Start loading `key` unless it is loading or ready; its status either way."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.state in (LoadState.LOADING, LoadState.READY):
                self._entries.move_to_end(key)
                return entry.status()
            entry = _Entry(source.nbytes, source.shape[0])
            self._entries[key] = entry
            problem = self._make_room(key, source.nbytes)
            if problem is not None:
                self._fail(entry, problem)
                return entry.status()
        threading.Thread(
            target=self._run, args=(entry, source), name="viewer-load", daemon=True
        ).start()
        return entry.status()

    def put(self, key: Hashable, array: npt.NDArray[Any]) -> bool:
        """Keep an array made elsewhere; False when it cannot fit in the budget."""
        with self._lock:
            entry = _Entry(array.nbytes, array.shape[0] if array.ndim else 1)
            self._entries.pop(key, None)
            self._entries[key] = entry
            problem = self._make_room(key, array.nbytes)
            if problem is not None:
                del self._entries[key]
                return False
            entry.array, entry.state, entry.loaded = array, LoadState.READY, entry.total
            entry.done.set()
            return True

    def wait(self, key: Hashable, *, timeout: float) -> npt.NDArray[Any]:
        """The volume once loaded; VolumeNotReady when absent, failed or still loading."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            raise VolumeNotReady(LoadStatus(LoadState.ABSENT, 0, 0), "the volume is not loaded")
        entry.done.wait(timeout)
        with self._lock:
            if entry.array is not None:
                return entry.array
            status = entry.status()
        if status.state is LoadState.LOADING:
            raise VolumeNotReady(status, f"still loading ({status.loaded}/{status.total})")
        raise VolumeNotReady(status, status.message or "the volume could not be loaded")

    def usage(self) -> CacheUsage:
        with self._lock:
            states = [e.state for e in self._entries.values()]
            return CacheUsage(
                used_bytes=self._used(),
                budget_bytes=self.budget_bytes,
                entries=len(states),
                ready=states.count(LoadState.READY),
                loading=states.count(LoadState.LOADING),
            )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _used(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.state is not LoadState.ERROR)

    def _make_room(self, key: Hashable, nbytes: int) -> str | None:
        """Evict least recently used ready volumes until `nbytes` more fit (lock held)."""
        if nbytes > self.budget_bytes:
            return (
                f"the volume needs {nbytes / MB:.0f} MB but the viewer cache holds "
                f"{self.budget_bytes / MB:.0f} MB; raise VOXELHUB_VIEWER_CACHE_MB"
            )
        for other in list(self._entries):
            if self._used() - self._entries[key].nbytes + nbytes <= self.budget_bytes:
                break
            if other != key and self._entries[other].state is not LoadState.LOADING:
                del self._entries[other]
        others = self._used() - self._entries[key].nbytes
        if others + nbytes > self.budget_bytes:
            return (
                "the viewer cache is full of series still loading; "
                "try again in a moment or raise VOXELHUB_VIEWER_CACHE_MB"
            )
        return None

    def _fail(self, entry: _Entry, message: str) -> None:
        entry.state, entry.message, entry.array = LoadState.ERROR, message, None
        entry.done.set()

    def _run(self, entry: _Entry, source: VolumeSource) -> None:
        try:
            array = np.empty(source.shape, dtype=source.dtype)

            def fill(k: int) -> None:
                array[k] = source.read(k)
                with self._lock:
                    entry.loaded += 1

            for _ in self._pool.map(fill, range(source.shape[0])):
                pass
        except Exception as err:  # any decoding or storage failure ends this load only
            logger.warning("a viewer volume failed to load", exc_info=True)
            with self._lock:
                self._fail(entry, f"the series could not be decoded: {err}")
            return
        with self._lock:
            entry.array, entry.state = array, LoadState.READY
            logger.info(
                "viewer volume of %d MB loaded in %.2f s",
                entry.nbytes // MB,
                time.monotonic() - entry.started,
            )
        entry.done.set()
